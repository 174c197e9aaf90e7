"""The demo's people: their attributes and colours, sampled so that each identity is describable."""

from __future__ import annotations

import random
from dataclasses import dataclass

Colour = tuple[int, int, int]

COLOURS: dict[str, Colour] = {
    "black": (28, 28, 30),
    "white": (238, 238, 232),
    "grey": (128, 128, 128),
    "red": (200, 30, 35),
    "blue": (35, 75, 200),
    "green": (40, 145, 60),
    "yellow": (240, 205, 40),
    "pink": (245, 150, 190),
    "purple": (120, 55, 160),
    "orange": (245, 130, 25),
}
HAIR_COLOURS: dict[str, Colour] = {
    "black": (25, 22, 22),
    "brown": (105, 65, 30),
    "blonde": (225, 195, 115),
    "grey": (170, 170, 165),
    "red": (170, 60, 25),
}
SKIN_TONES: tuple[Colour, ...] = ((245, 215, 190), (230, 190, 160), (200, 150, 115), (160, 110, 80), (110, 75, 55))
UPPER_KINDS = ("t-shirt", "jacket", "coat", "hoodie", "shirt", "sweater")
LOWER_KINDS = ("jeans", "trousers", "shorts", "skirt")
BAG_KINDS = ("backpack", "handbag", "shoulder bag")
HAT_KINDS = ("cap", "hat")
JEANS_COLOURS = ("blue", "black", "grey", "white")


@dataclass(frozen=True)
class DemoPerson:
    """One demo identity: the attributes every image draws and every caption describes."""

    male: bool
    skin: Colour
    hair_colour: str
    long_hair: bool
    upper: str
    upper_colour: str
    lower: str
    lower_colour: str
    shoes_colour: str
    bag: str | None
    bag_colour: str
    bag_side: str  # the person's side; in this frontal view their left is the image's right
    hat: str | None
    hat_colour: str
    glasses: bool

    def key(self) -> tuple:
        """The salient attributes; kept unique per identity so every identity is describable."""
        return (self.male, self.hair_colour, self.upper, self.upper_colour, self.lower, self.lower_colour)

    def attributes(self) -> list[str]:
        """The person's attributes as ``group=value`` labels, the ground truth of attribute prediction.

        Every group has exactly one value per person (``bag=none``, ``glasses=no``), so each group is a
        categorical attribute whose per-group accuracy can be measured; a colour group is left out when
        its item is absent (no ``bag_colour`` without a bag). Skin tone is drawn but never described,
        so it is no attribute. The bag side is described only in some captions, but it is drawn.
        """
        labels = [
            f"gender={'male' if self.male else 'female'}",
            f"hair_colour={self.hair_colour}",
            f"hair_length={'long' if self.long_hair else 'short'}",
            f"upper={self.upper}",
            f"upper_colour={self.upper_colour}",
            f"lower={self.lower}",
            f"lower_colour={self.lower_colour}",
            f"shoes_colour={self.shoes_colour}",
            f"bag={self.bag or 'none'}",
        ]
        if self.bag:
            labels += [f"bag_colour={self.bag_colour}", f"bag_side={self.bag_side}"]
        labels.append(f"hat={self.hat or 'none'}")
        if self.hat:
            labels.append(f"hat_colour={self.hat_colour}")
        labels.append(f"glasses={'yes' if self.glasses else 'no'}")
        return labels


def sample_person(rng: random.Random) -> DemoPerson:
    """Random attributes, with the combinations a real photo would not show left out."""
    male = rng.random() < 0.5
    names = list(COLOURS)
    upper = rng.choice(UPPER_KINDS)
    # a coat would hide shorts or a skirt, and skirts are kept for women
    lower = rng.choice(LOWER_KINDS[:2] if upper == "coat" else LOWER_KINDS[:3] if male else LOWER_KINDS)
    return DemoPerson(
        male=male,
        skin=rng.choice(SKIN_TONES),
        hair_colour=rng.choice(list(HAIR_COLOURS)),
        long_hair=rng.random() < (0.15 if male else 0.75),
        upper=upper,
        upper_colour=rng.choice(names),
        lower=lower,
        lower_colour=rng.choice(JEANS_COLOURS if lower == "jeans" else names),
        shoes_colour=rng.choice(names),
        bag=rng.choice(BAG_KINDS) if rng.random() < 0.55 else None,
        bag_colour=rng.choice(names),
        bag_side=rng.choice(("left", "right")),
        hat=rng.choice(HAT_KINDS) if rng.random() < 0.3 else None,
        hat_colour=rng.choice(names),
        glasses=rng.random() < 0.25,
    )


def sample_people(rng: random.Random, n: int) -> list[DemoPerson]:
    """``n`` people whose salient attributes differ, so every identity can be told apart by its captions."""
    people: dict[tuple, DemoPerson] = {}
    for _ in range(1000 * n):
        if len(people) == n:
            return list(people.values())
        person = sample_person(rng)
        people.setdefault(person.key(), person)  # a collision is dropped and resampled
    raise ValueError(f"cannot sample {n} identities with distinct attributes")
