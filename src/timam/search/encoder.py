"""Queries into the joint space: texts through the checkpoint's tokenizer, images in memory.

Embeddings come out L2-normalised float32 numpy rows, the form the index stores (inner product =
cosine). Images are embedded in the calling process, not through a DataLoader: a server query is
one image, and forking decoding workers per request would cost more than the forward pass. The
steps are those of :func:`timam.inference.embedding.image_outputs` (eval transform, channels_last,
autocast around the backbone in the index's ``precision``, float32 projection), so an indexed image
searched for itself scores 1.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from timam.inference.device import autocast, model_to, pick_device, to_device_images
from timam.inference.embedding import evaluation_mode, text_outputs
from timam.inference.images import eval_transform
from timam.models.checkpoint import Checkpoint
from timam.models.config import OFFLINE_TEXT_MODEL, ModelConfig
from timam.tokenization import load_tokenizer
from timam.training.model_setup import check_tokenizer


def normalised(vectors: torch.Tensor) -> np.ndarray:
    """Rows scaled to unit length, as contiguous float32 numpy (what FAISS takes)."""
    return np.ascontiguousarray(F.normalize(vectors.float(), dim=1).cpu().numpy(), dtype=np.float32)


class QueryEncoder:
    """Embeds query texts and images with one checkpoint; text embeddings are cached (LRU).

    ``tokenizer``: the one the checkpoint was trained with. A transformer text encoder names its
    own (``config.text_model``) and any other is refused; FC-Embed checkpoints do not record theirs,
    so it defaults to the project's (``offline:minilm``) and ids beyond the vocabulary are refused.
    ``max_length`` and ``precision`` are those the gallery was embedded with (an index's manifest).
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        tokenizer: str | None,
        max_length: int,
        precision: str,
        device: str,
        cache_size: int = 4096,
    ) -> None:
        config = checkpoint.embedding_model.config
        self.tokenizer_name = tokenizer or (config.text_model if config.text_encoder == "transformer" else None)
        self.tokenizer_name = self.tokenizer_name or OFFLINE_TEXT_MODEL
        check_tokenizer(
            config,
            self.tokenizer_name,
            tokens="tokenizer",
            model=f"checkpoint {checkpoint.version} has text model",
            fix="pass the tokenizer the checkpoint was trained with (or none: its own is used)",
        )
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.checkpoint = checkpoint
        self.max_length = max_length
        self.precision = precision
        self.device = pick_device(device)
        self.model = model_to(checkpoint.embedding_model, self.device)
        self._tokenizer = load_tokenizer(self.tokenizer_name)
        self._transform = eval_transform(config.preprocessing)
        self._texts: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()  # one forward pass at a time: a server calls from many threads
        self.text_forward_passes = 0  # texts actually embedded (the rest came from the cache)

    @property
    def dim(self) -> int:
        return int(self.model.image_encoder.projection.out_features)

    def _embed_new_texts(self, texts: list[str]) -> np.ndarray:
        tokens = self._tokenizer(
            texts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        config = self.model.config
        if (
            isinstance(config, ModelConfig)
            and config.text_encoder == "fc_embed"
            and int(tokens["input_ids"].max()) >= config.vocab_size
        ):
            raise ValueError(
                f"tokenizer {self.tokenizer_name!r} gives ids beyond the checkpoint's vocabulary "
                f"({config.vocab_size}); pass the tokenizer the checkpoint was trained with"
            )
        embedded = text_outputs(
            self.model,
            tokens["input_ids"].to(torch.int32),
            tokens["attention_mask"].to(torch.int8),
            project=True,
            batch_size=64,
            device=self.device,
            desc="embedding queries",
            show_progress=False,
            precision=self.precision,
        )
        self.text_forward_passes += len(texts)
        return normalised(embedded)

    def texts(self, texts: Sequence[str], *, cache: bool = True) -> np.ndarray:
        """``(len(texts), dim)`` unit rows. Each distinct text is embedded once; with ``cache`` the
        embeddings are kept (LRU) so a repeated query costs no forward pass."""
        texts = list(texts)
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        with self._lock:
            if not cache:
                distinct = list(dict.fromkeys(texts))
                position = {text: i for i, text in enumerate(distinct)}
                return self._embed_new_texts(distinct)[[position[text] for text in texts]]
            new = list(dict.fromkeys(text for text in texts if text not in self._texts))
            if new:
                for text, vector in zip(new, self._embed_new_texts(new), strict=True):
                    vector.setflags(write=False)
                    self._texts[text] = vector
            rows = []
            for text in texts:
                self._texts.move_to_end(text)
                rows.append(self._texts[text])
            while len(self._texts) > self._cache_size:
                self._texts.popitem(last=False)
        return np.stack(rows)

    @torch.no_grad()
    def images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``(len(images), dim)`` unit rows of decoded RGB images."""
        if not images:
            return np.empty((0, self.dim), dtype=np.float32)
        batch = torch.stack([self._transform(image.convert("RGB")) for image in images])
        encoder = self.model.image_encoder
        with self._lock, evaluation_mode(self.model):
            batch = to_device_images(batch, self.device)
            with autocast(self.device, self.precision):
                features = encoder.features(batch)
            return normalised(encoder.projection(features.float()))
