"""Reader for the CUB-200 / Oxford-102 caption layout of Reed et al. (2016), "text_c10".

Layout under ``root``::

    images/<class>/<image>.jpg
    text_c10/<class>/<image>.txt     one caption per line (10 lines), UTF-8
    trainvalclasses.txt              class folder names, one per line
    testclasses.txt

Rows (see ``caption_table``; ``label`` is added by ``finalise_caption_table``):

* ``identity`` = the class folder name; ``image_id`` = ``<class>/<image>``;
* ``caption_id`` = ``<class>/<image>#<line>`` (line counted from 0);
* ``split`` = ``train`` for trainval classes and ``test`` for test classes (zero-shot: test classes
  are unseen).  ``val_classes=N`` moves the last N trainval classes in sorted order to ``val``,
  so the choice is deterministic.

Blank lines at the end of a caption file are ignored; a blank line between captions becomes an empty
caption, which the row checks report.  A text file that is not valid UTF-8 raises
:class:`BadInputError` naming the file.  An image under ``images/<class>/`` without a text file (or
with an empty one) is an image without captions (``images_without_captions``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from timam.sources.caption_table import BadInputError
from timam.sources.encoding import decode_problem
from timam.sources.image_checks import READER_COLUMNS, report_images_without_captions
from timam.sources.paths import path_under_root

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_ROOT = "params source.data_root"


def read_utf8(path: Path) -> str:
    """Text of ``path``; invalid UTF-8 raises :class:`BadInputError` naming the file and the byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BadInputError(
            f"{path} is not valid UTF-8 ({decode_problem(data, 'utf-8-sig')}). "
            "Re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)."
        ) from error


def _class_list(path: Path) -> list[str]:
    if not path.is_file():
        raise BadInputError(
            f"Class list {path} does not exist; data_root must be the folder holding images/, text_c10/, "
            "trainvalclasses.txt and testclasses.txt."
        )
    names = []
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        if line.strip():  # a class folder under text_c10/ and images/: it may not leave them
            where = f"Class list {path} line {number}"
            path_under_root(path.parent / "text_c10", line.strip(), where=where, setting=_ROOT, absolute_allowed=False)
            names.append(line.strip())
    if not names:
        raise BadInputError(f"Class list {path} is empty; it must name one class folder per line.")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise BadInputError(f"Class list {path} names {repeated} more than once; keep one line per class.")
    return names


def _captions(path: Path) -> list[str]:
    lines = read_utf8(path).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def read_text_c10(root: str | Path, *, val_classes: int = 0, images_without_captions: str = "error") -> pd.DataFrame:
    """Caption rows of a text_c10 dataset at ``root``; one identity per class."""
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"Data root {root} does not exist; set the data_root parameter to the dataset folder.")
    for folder in ("images", "text_c10"):
        if not (root / folder).is_dir():
            raise BadInputError(
                f"{root / folder} does not exist; data_root must be the folder holding images/ and text_c10/."
            )
    trainval = _class_list(root / "trainvalclasses.txt")
    test = _class_list(root / "testclasses.txt")
    shared = sorted(set(trainval) & set(test))
    if shared:
        raise BadInputError(
            f"Classes {shared} are in both trainvalclasses.txt and testclasses.txt; the zero-shot protocol "
            "needs disjoint class lists. Fix the class lists."
        )
    if not 0 <= val_classes < len(trainval):
        raise BadInputError(
            f"val_classes={val_classes} but there are {len(trainval)} trainval classes; choose 0 <= val_classes "
            f"< {len(trainval)} so that training classes remain."
        )
    ordered = sorted(trainval)
    split_of = {name: "train" for name in ordered[: len(ordered) - val_classes]}
    split_of.update({name: "val" for name in ordered[len(ordered) - val_classes :]})
    split_of.update({name: "test" for name in test})

    listed = set(split_of)
    unlisted = sorted(p.name for p in (root / "text_c10").iterdir() if p.is_dir() and p.name not in listed)
    if unlisted:
        logger.warning("%s: text_c10 class folders not in either class list are ignored: %s", root, unlisted)

    rows: list[dict[str, Any]] = []
    without_captions: list[str] = []
    for name in sorted(split_of):
        text_dir = root / "text_c10" / name
        if not text_dir.is_dir():
            raise BadInputError(
                f"{text_dir} does not exist but class {name!r} is listed in the class lists; restore the "
                "folder or remove the class from the lists."
            )
        image_dir = root / "images" / name
        images = (
            {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
            if image_dir.is_dir()
            else {}
        )
        texts = {p.stem: p for p in sorted(text_dir.glob("*.txt"))}
        without_captions += [f"{name}/{stem}" for stem in sorted(set(images) - set(texts))]
        for stem, text_path in texts.items():
            image_id = f"{name}/{stem}"
            captions = _captions(text_path)
            if not captions:
                without_captions.append(image_id)
                continue
            image_path = images.get(stem, image_dir / f"{stem}.jpg")
            for line, caption in enumerate(captions):
                rows.append(
                    {
                        "caption_id": f"{image_id}#{line}",
                        "image_id": image_id,
                        "image_path": str(image_path),
                        "caption": caption,
                        "identity": name,
                        "split": split_of[name],
                    }
                )
    report_images_without_captions(
        without_captions,
        source=f"text_c10 data at {root}",
        policy=images_without_captions,
        fix="Restore their text_c10/<class>/<image>.txt files",
    )
    return pd.DataFrame(rows, columns=READER_COLUMNS)
