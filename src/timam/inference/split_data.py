"""One split of the caption table as index arrays: unique images, captions, and who matches whom."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from timam.formats.tensor_bundle import TensorBundle


@dataclass
class SplitData:
    """Captions of one split, their tokens, and the unique-image gallery they point into.

    ``caption_image`` indexes ``image_paths``; ``*_identity`` are integer codes shared by images and
    captions of this split (identity-based relevance); ``caption_labels`` are training labels.
    """

    split: str
    caption_ids: list[str]
    image_ids: list[str]
    image_paths: list[str]
    caption_image: torch.Tensor
    caption_identity: torch.Tensor
    image_identity: torch.Tensor
    caption_labels: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def num_captions(self) -> int:
        return len(self.caption_ids)


def split_data(captions: pd.DataFrame, caption_tokens: TensorBundle, split: str) -> SplitData:
    """Select ``split`` from the caption table and the matching token rows (checked, not assumed)."""
    token_ids = caption_tokens.metadata["caption_ids"]
    if token_ids != captions["caption_id"].tolist():
        raise ValueError(
            "caption_tokens do not match the captions table (different caption ids or order); "
            "re-run the tokenize node: kedro run --pipelines train"
        )
    mask = (captions["split"] == split).to_numpy()
    rows = captions[mask]
    if rows.empty:
        raise ValueError(f"The captions table has no {split!r} rows")
    images = rows.drop_duplicates("image_id")
    image_index = {image_id: position for position, image_id in enumerate(images["image_id"])}
    identity_codes, identities = pd.factorize(rows["identity"], sort=True)
    identity_index = {identity: code for code, identity in enumerate(identities)}
    selector = torch.from_numpy(mask.copy())
    return SplitData(
        split=split,
        caption_ids=rows["caption_id"].tolist(),
        image_ids=images["image_id"].tolist(),
        image_paths=images["image_path"].tolist(),
        caption_image=torch.tensor([image_index[i] for i in rows["image_id"]], dtype=torch.long),
        caption_identity=torch.tensor(identity_codes, dtype=torch.long),
        image_identity=torch.tensor([identity_index[i] for i in images["identity"]], dtype=torch.long),
        caption_labels=torch.tensor(rows["label"].to_numpy(), dtype=torch.long),
        input_ids=caption_tokens.tensors["input_ids"][selector],
        attention_mask=caption_tokens.tensors["attention_mask"][selector],
    )
