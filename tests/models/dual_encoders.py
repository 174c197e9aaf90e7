"""Tiny CLIP-family checkpoints in their libraries' own formats, with random weights and a fixed seed.

- open_clip: a custom architecture registered through open_clip's own API (a JSON model config),
  saved as open_clip's checkpoint file ``{"state_dict": ...}`` (the format RemoteCLIP ships);
- transformers: a ``CLIPModel`` and a ``SiglipModel`` built from small configs, saved with
  ``save_pretrained`` together with an image processor and a tokenizer (the offline MiniLM one, as
  no CLIP vocabulary ships offline), the directory layout of a hub checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

OPEN_CLIP_NAME = "timam-tiny-clip"
OPEN_CLIP_ARCHITECTURE = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}


def open_clip_checkpoint(folder: Path) -> tuple[Path, Path]:
    """(model config file, checkpoint file) of a tiny random open_clip model."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / f"{OPEN_CLIP_NAME}.json"
    config_file.write_text(json.dumps(OPEN_CLIP_ARCHITECTURE))
    open_clip.add_model_config(config_file)
    torch.manual_seed(0)
    model = open_clip.create_model(OPEN_CLIP_NAME, pretrained=None)
    checkpoint = folder / "tiny_clip.pt"
    torch.save({"state_dict": model.state_dict()}, checkpoint)
    return config_file, checkpoint


def transformers_checkpoint(folder: Path, kind: str) -> Path:
    """A tiny random ``CLIPModel`` (kind "clip") or ``SiglipModel`` ("siglip") saved with its processor."""
    from transformers import (
        AutoTokenizer,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )

    from timam.models.text_encoder import resolve_text_model

    text = {**_TOWER, "vocab_size": 30522, "max_position_embeddings": 32, "pad_token_id": 0}
    vision = {**_TOWER, "image_size": 32, "patch_size": 8}
    torch.manual_seed(1)
    if kind == "clip":
        config = CLIPConfig(
            text_config={**text, "bos_token_id": 101, "eos_token_id": 102}, vision_config=vision, projection_dim=16
        )
        model, processor = CLIPModel(config), CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32)
    else:
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
        processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    directory = folder / kind
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    AutoTokenizer.from_pretrained(resolve_text_model("offline:minilm")).save_pretrained(directory)
    return directory
