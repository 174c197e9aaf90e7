"""Reader for CUHK-PEDES ``reid_raw.json`` (list of {id, file_path, captions, split}) + ``imgs/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from timam.sources.caption_table import BadInputError
from timam.sources.paths import path_under_root

_REQUIRED_KEYS = ("id", "file_path", "captions", "split")


def read_cuhk_pedes(records: list[dict[str, Any]], image_root: str | Path) -> pd.DataFrame:
    """One row per caption; ``image_root`` is the folder that ``file_path`` entries are relative to."""
    image_root = Path(image_root)
    if not image_root.is_dir():
        raise BadInputError(f"Image folder {image_root} does not exist; set params source.image_root to it.")
    rows = []
    for position, record in enumerate(records):
        missing = [key for key in _REQUIRED_KEYS if key not in record]
        if missing:
            raise BadInputError(f"reid_raw.json record {position} lacks {missing}; it holds {sorted(record)}")
        image_path = path_under_root(
            image_root,
            str(record["file_path"]),
            where=f"reid_raw.json record {position}",
            setting="params source.image_root",
        )
        for index, caption in enumerate(record["captions"]):
            rows.append(
                {
                    "caption_id": f"{record['file_path']}#{index}",
                    "image_id": record["file_path"],
                    "image_path": str(image_path),
                    "caption": caption,
                    "identity": str(record["id"]),
                    "split": record["split"],
                }
            )
    return pd.DataFrame(rows)
