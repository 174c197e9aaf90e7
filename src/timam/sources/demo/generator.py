"""Built-in demo data shaped like CUHK-PEDES, so the project runs with no data and no network.

CUHK-PEDES needs a manual, licence-gated download.  This module writes a small synthetic
stand-in with the same on-disk layout, so ``kedro run``, the tests and CI work offline:

* ``root/imgs/<split>/<identity:04d>_<n>.jpg`` -- portrait pedestrian crops (default 80x160);
* ``root/reid_raw.json`` -- a list of records ``{"split", "captions", "file_path" (relative
  to ``root/imgs``), "processed_tokens" (lower-cased word tokens per caption), "id"}``,
  the keys of CUHK-PEDES' ``reid_raw.json``, plus ``"attributes"``: the person's true attributes
  as ``group=value`` labels (:meth:`DemoPerson.attributes`), the ground truth for attribute
  learning. The CUHK-PEDES reader ignores keys it does not know, so the caption table is unchanged;
  ``timam.sources.attributes.demo_image_attributes`` reads them;
* several images per identity, several captions per image, and train/val/test splits that
  are disjoint by identity, as in the CUHK-PEDES protocol.

Each identity is a unique combination of attributes (presentation, hair, upper and lower
garment kind and colour, shoes, optional bag, hat and glasses).  Every image draws the
person as a simple Pillow figure with its own pose, scale, position, background, lighting
and noise, so matching a caption to an image needs the attributes rather than the pixels;
captions come from varied templates with synonyms, attribute order and omitted minor details.
Everything is drawn from ``random.Random`` seeded by ``seed``: a given seed gives
byte-identical files (for a given Pillow version).  The JSON is written last and atomically,
so an interrupted generation never looks complete.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from timam.formats.atomic import atomic_path
from timam.sources.demo.drawing import render_person
from timam.sources.demo.people import DemoPerson, sample_people

SPLITS = ("train", "val", "test")
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


# ---------------------------------------------------------------- captions
_SUBJECTS = {
    True: ("A man", "The man", "This man", "A guy", "This guy", "The male", "A young man", "The gentleman"),
    False: ("A woman", "The woman", "This woman", "A lady", "The lady", "The female", "A young woman", "This girl"),
}
_WORDS = {
    "t-shirt": ("t-shirt", "tee", "short-sleeved t-shirt"),
    "jacket": ("jacket", "zip-up jacket"),
    "coat": ("coat", "long coat", "overcoat"),
    "hoodie": ("hoodie", "hooded sweatshirt"),
    "shirt": ("shirt", "long-sleeved shirt", "button-up shirt"),
    "sweater": ("sweater", "jumper", "pullover"),
    "jeans": ("jeans",),
    "trousers": ("trousers", "pants", "slacks"),
    "shorts": ("shorts",),
    "skirt": ("skirt",),
    "backpack": ("backpack", "rucksack"),
    "handbag": ("handbag", "purse"),
    "shoulder bag": ("shoulder bag", "messenger bag"),
    "cap": ("cap", "baseball cap"),
    "hat": ("hat", "wide-brimmed hat"),
    "shoes": ("shoes", "sneakers", "trainers"),
}
_PLURAL = {"jeans", "trousers", "pants", "slacks", "shorts", "shoes", "sneakers", "trainers"}
_SPELLINGS = {"grey": ("grey", "gray"), "blonde": ("blonde", "blond")}
_BAG_PLACE = {
    "backpack": "on {his} back",
    "handbag": "in {his} {side} hand",
    "shoulder bag": "over {his} {side} shoulder",
}


def _word(rng: random.Random, colour: str) -> str:
    return rng.choice(_SPELLINGS.get(colour, (colour,)))


def _item(rng: random.Random, colour: str, kind: str) -> str:
    word, col = rng.choice(_WORDS[kind]), _word(rng, colour)
    if word in _PLURAL:
        return f"a pair of {col} {word}" if rng.random() < 0.3 else f"{col} {word}"
    return f"{'an' if col[0] in 'aeiou' else 'a'} {col} {word}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _caption(person: DemoPerson, rng: random.Random) -> str:
    he, his = ("he", "his") if person.male else ("she", "her")
    subj = rng.choice(_SUBJECTS[person.male])
    worn = [_item(rng, person.upper_colour, person.upper), _item(rng, person.lower_colour, person.lower)]
    if rng.random() < 0.3:
        worn.reverse()
    if rng.random() < 0.75:  # minor attributes are sometimes left out
        worn.append(_item(rng, person.shoes_colour, "shoes"))
    if person.hat and rng.random() < 0.85:
        worn.insert(rng.choice((0, len(worn))), _item(rng, person.hat_colour, person.hat))
    length, colour = ("long" if person.long_hair else "short"), _word(rng, person.hair_colour)
    glasses = (
        rng.choice(("glasses", "a pair of glasses", "spectacles")) if person.glasses and rng.random() < 0.8 else None
    )
    looks = [f"{length} {colour} hair"] + ([glasses] if glasses else [])
    bag = None
    if person.bag and rng.random() < 0.9:
        bag = _item(rng, person.bag_colour, person.bag)
        if rng.random() < 0.7:
            bag += " " + _BAG_PLACE[person.bag].format(his=his, side=person.bag_side)
    holding = person.bag != "backpack"
    wear = rng.choice(("is wearing", "wears", "is dressed in", "has on"))
    carry = rng.choice(("is carrying", "carries", "has") + (("is holding",) if holding else ()))
    carrying = rng.choice(("carrying", "with") + (("holding",) if holding else ()))
    t = rng.randrange(5)
    if t == 0:
        parts = [f"{subj} with {_join(looks)} {wear} {_join(worn)}"] + ([f"{he} {carry} {bag}"] if bag else [])
    elif t == 1:
        dressed = rng.choice(("wearing", "dressed in", "in"))
        parts = [f"{subj} {dressed} {_join(worn)}" + (f", {carrying} {bag}" if bag else ""), f"{he} has {_join(looks)}"]
    elif t == 2:
        parts = [
            (f"{subj} {carrying} {bag}" if bag else subj) + f" {wear} {_join(worn)}",
            f"{his} hair is {length} and {colour}",
        ] + ([f"{he} also wears {glasses}"] if glasses else [])
    elif t == 3:
        rest = f"{he} is also wearing {_join(worn[1:])}" + (f" and {carrying} {bag}" if bag else "")
        parts = [f"{subj} has {_join(looks)} and {wear} {worn[0]}", rest]
    else:
        walking = f"{subj} is walking in {_join(worn)}" + (f" {carrying} {bag}" if bag else "")
        parts = [walking, f"{he} has {_join(looks)}"]
    return ". ".join(x[0].upper() + x[1:] for x in parts) + "."


def _new_caption(person: DemoPerson, rng: random.Random, used: set[str]) -> str:
    """A caption not yet used for this identity, when one turns up within a few tries."""
    for _ in range(30):
        caption = _caption(person, rng)
        if caption not in used:
            break
    used.add(caption)
    return caption


# ---------------------------------------------------------------- public API
def _write_json_atomic(path: Path, records: list[dict]) -> None:
    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8") as handle:
        json.dump(records, handle)


def generate_demo_dataset(
    root: str | Path,
    *,
    num_identities: int = 190,
    images_per_identity: int = 4,
    captions_per_image: int = 2,
    split_identities: tuple[int, int, int] = (120, 30, 40),
    image_size: tuple[int, int] = (80, 160),
    seed: int = 0,
) -> Path:
    """Write a CUHK-PEDES-shaped demo dataset under ``root``; return the path of ``reid_raw.json``.

    ``image_size`` is ``(width, height)``.  Identities are split, after a seeded shuffle, into
    ``split_identities`` = (train, val, test) counts, which must sum to ``num_identities``.
    """
    for name, value in (
        ("num_identities", num_identities),
        ("images_per_identity", images_per_identity),
        ("captions_per_image", captions_per_image),
    ):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if len(split_identities) != 3 or any(n <= 0 for n in split_identities):
        raise ValueError(f"split_identities must be three positive counts, got {split_identities}")
    if sum(split_identities) != num_identities:
        raise ValueError(f"split_identities {split_identities} must sum to num_identities={num_identities}")
    if len(image_size) != 2 or any(n <= 0 for n in image_size):
        raise ValueError(f"image_size must be a positive (width, height), got {image_size}")
    root = Path(root)
    out = root / "reid_raw.json"
    root.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)  # a stale JSON must not make a half-rewritten dataset look complete

    rng = random.Random(f"timam-demo/{seed}")
    people = sample_people(rng, num_identities)
    order = list(range(1, num_identities + 1))
    rng.shuffle(order)
    n_train, n_val, _ = split_identities
    split_of = {pid: SPLITS[(k >= n_train) + (k >= n_train + n_val)] for k, pid in enumerate(order)}

    records = []
    for pid, person in enumerate(people, start=1):
        split = split_of[pid]
        (root / "imgs" / split).mkdir(parents=True, exist_ok=True)
        used: set[str] = set()
        for n in range(1, images_per_identity + 1):
            image_rng = random.Random(f"timam-demo/{seed}/{pid}/{n}")
            file_path = f"{split}/{pid:04d}_{n}.jpg"
            render_person(person, image_rng, (image_size[0], image_size[1])).save(
                root / "imgs" / file_path, "JPEG", quality=90
            )
            captions = [_new_caption(person, image_rng, used) for _ in range(captions_per_image)]
            records.append(
                {
                    "split": split,
                    "captions": captions,
                    "file_path": file_path,
                    "processed_tokens": [_TOKEN_RE.findall(c.lower()) for c in captions],
                    "id": pid,
                    "attributes": person.attributes(),
                }
            )
    _write_json_atomic(out, records)
    return out
