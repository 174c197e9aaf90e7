"""CUB-200-2011's per-image attribute labels, as ``image_id -> [attribute names]`` for an attribute vocabulary.

The dataset's own files (its README, "ATTRIBUTE LABELS"), under the ``CUB_200_2011`` folder::

    images.txt                              <image_id> <image_name>    e.g. 1 001.Black_footed_Albatross/x.jpg
    attributes/image_attribute_labels.txt   <image_id> <attribute_id> <is_present> <certainty_id> <time>
    attributes.txt                          <attribute_id> <attribute_name>   e.g. 1 has_bill_shape::dagger

The README places ``attributes.txt`` in ``attributes/``; the distributed archive has it beside the
``CUB_200_2011`` folder. Both places (and the folder itself) are looked in. Certainty ids are
1 not visible, 2 guessing, 3 probably, 4 definitely: an attribute counts as present in an image when
a line marks it present with a certainty of at least ``min_certainty``. Public readers of the labels
file keep only its first four fields and skip longer lines; here a line needs at least the first
four, and any extra trailing fields are ignored.

Images are keyed ``<class folder>/<file stem>``, the ``image_id`` the text_c10 reader gives the
same image (:mod:`timam.sources.text_c10`), so the labels join the caption table directly.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from timam.sources.caption_table import BadInputError
from timam.sources.text_c10 import read_utf8

__all__ = ["CERTAINTIES", "LABELS_FILE", "cub_labels_present", "read_cub_attributes"]

CERTAINTIES = {1: "not visible", 2: "guessing", 3: "probably", 4: "definitely"}
LABELS_FILE = PurePosixPath("attributes", "image_attribute_labels.txt")


def cub_labels_present(cub_root: str | Path) -> bool:
    """Whether ``cub_root`` holds the per-image attribute labels (the text_c10 download has none)."""
    return (Path(cub_root) / LABELS_FILE).is_file()


def _rows(path: Path, fields: int) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` of each non-blank line, each with at least ``fields`` fields."""
    if not path.is_file():
        raise BadInputError(f"{path} does not exist; point cub_root at the CUB_200_2011 folder of the dataset.")
    rows = []
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        parts = line.split(maxsplit=1) if fields == 2 else line.split()
        if not parts:
            continue
        if len(parts) < fields:
            raise BadInputError(f"{path} line {number} has {len(parts)} field(s), needs {fields}: {line!r}")
        rows.append((number, parts))
    return rows


def _integer(path: Path, number: int, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise BadInputError(f"{path} line {number}: {value!r} is not an integer id") from None


def _id_table(path: Path) -> dict[int, str]:
    """``<id> <name>`` lines (names may hold spaces after the first); repeated ids are an error."""
    table: dict[int, str] = {}
    for number, (key, name) in _rows(path, 2):
        identifier = _integer(path, number, key)
        if identifier in table:
            raise BadInputError(f"{path} line {number} repeats id {identifier}; keep one line per id.")
        table[identifier] = name.strip()
    return table


def _attribute_names(cub_root: Path) -> dict[int, str]:
    places = [
        cub_root / "attributes" / "attributes.txt",
        cub_root / "attributes.txt",
        cub_root.parent / "attributes.txt",
    ]
    for path in places:
        if path.is_file():
            return _id_table(path)
    raise BadInputError(
        f"attributes.txt not found in {[str(path) for path in places]}; copy it from the CUB-200-2011 archive there."
    )


def _image_keys(cub_root: Path) -> dict[int, str]:
    """``image_id -> <class folder>/<stem>`` from images.txt."""
    return {
        image: str(PurePosixPath(name).with_suffix("")) for image, name in _id_table(cub_root / "images.txt").items()
    }


def read_cub_attributes(cub_root: str | Path, *, min_certainty: int = 1) -> dict[str, list[str]]:
    """Every image of ``images.txt`` with its present attributes' names, in attribute-id order."""
    if min_certainty not in CERTAINTIES:
        raise ValueError(f"min_certainty must be one of {sorted(CERTAINTIES)} ({CERTAINTIES}), got {min_certainty!r}")
    cub_root = Path(cub_root)
    images, names = _image_keys(cub_root), _attribute_names(cub_root)
    path = cub_root / LABELS_FILE
    present: dict[int, set[int]] = {image: set() for image in images}
    for number, parts in _rows(path, 4):
        image, attribute, is_present, certainty = (_integer(path, number, value) for value in parts[:4])
        if image not in images:
            raise BadInputError(f"{path} line {number}: image id {image} is not in images.txt")
        if attribute not in names:
            raise BadInputError(f"{path} line {number}: attribute id {attribute} is not in attributes.txt")
        if is_present not in (0, 1) or certainty not in CERTAINTIES:
            raise BadInputError(
                f"{path} line {number}: is_present must be 0 or 1 and certainty_id one of {sorted(CERTAINTIES)}, "
                f"got {is_present} and {certainty}"
            )
        if is_present and certainty >= min_certainty:
            present[image].add(attribute)
    return {images[image]: [names[attribute] for attribute in sorted(ids)] for image, ids in present.items()}
