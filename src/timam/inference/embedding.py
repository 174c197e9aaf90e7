"""Batched, progress-reported forward passes over images and captions (no gradients)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from timam.inference.device import autocast, to_device_images
from timam.inference.images import ImageFileDataset, eval_pixels
from timam.models.dual_encoder import DualEncoderModel
from timam.models.families import AnyModel, EmbeddingModel, PairScoreModel
from timam.models.preprocessing import ImagePreprocessing


def default_workers(ranks: int | None = None) -> int:
    """Decoding workers of one process: its share of the cores less one for itself, at most 8.

    ``ranks``: the processes sharing this machine (default: torchrun's ``LOCAL_WORLD_SIZE``, else 1),
    so 8 ranks on 16 cores get one worker each instead of 8 x 8 workers competing for 16 cores.
    One process on 2 cores still gets one worker: measured there (benchmarks/data_loading.py), one
    worker decoded 4-5x faster than the main process, whose torch threads compete with the decoder.

    What the counts mean: the training transform at 384x128 (decode, resize, flip, padded crop,
    to uint8) costs about 1.4 ms per image per core, so a worker feeds about 700 images/s. One GPU
    at the target 1,200 pairs/s (one image per pair) needs about 1.7 workers; the 8 of one rank on
    16 cores (about 5,700 images/s) leave it 4x headroom. Several GPUs on 16 cores do not get
    enough: 2 ranks get 7 workers each (about 5,000/s, enough), 4 ranks 3 each (about 2,100/s,
    enough), but 8 ranks 1 each (about 700/s, less than the 1,200 each GPU could train): there the
    loader, not the GPU, sets the pace; cache the backbone's features while it is frozen, or
    decode on more cores.
    """
    if ranks is None:
        ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores < 2:
        return 0
    return max(1, min(8, cores // max(1, ranks) - 1))


def image_loader(
    paths: Sequence[str], preprocessing: ImagePreprocessing, *, batch_size: int, device: torch.device
) -> DataLoader:
    """Resized uint8 images (normalised on the device by ``to_device_images``), in order.

    Built per call: it reads each image once, so persistent workers would only outlive it.
    """
    workers = default_workers()
    return DataLoader(
        ImageFileDataset(paths, eval_pixels(preprocessing)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        # Its own seed source: drawing from the global RNG would make a run that loads cached
        # features (no loader) diverge from one that computes them.
        generator=torch.Generator().manual_seed(0),
    )


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside, and every submodule's own mode restored after: a cache built in the middle
    of an epoch must leave trainable parts training and frozen parts in eval mode."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@torch.no_grad()
def image_outputs(
    model: EmbeddingModel,
    paths: Sequence[str],
    *,
    project: bool,
    batch_size: int,
    device: torch.device,
    desc: str,
    show_progress: bool = True,
    per_view: bool = False,
    precision: str,
) -> torch.Tensor:
    """Backbone features (``project=False``) or embeddings of ``paths``, float32 on the CPU, in order.

    ``per_view`` (features only): every view's features, ``(views, images, features)``, instead of
    their mean (``model.image_views``). The backbone runs in ``precision`` (see
    :func:`~timam.inference.device.autocast`); the projection always in float32.
    """
    if per_view and project:
        raise ValueError("per_view gives backbone features of every view; it cannot be combined with project")
    encoder = model.image_encoder
    outputs = []
    loader = image_loader(paths, model.config.preprocessing, batch_size=batch_size, device=device)
    with evaluation_mode(model):
        for images, _ in tqdm(loader, desc=desc, disable=not show_progress):
            images = to_device_images(images, device)
            with autocast(device, precision):
                result = encoder.view_features(images) if per_view else encoder.features(images)
            if project:
                result = encoder.projection(result.float())
            outputs.append(result.float().cpu())
    if per_view:
        return torch.cat(outputs, dim=1) if outputs else torch.empty(len(encoder.views), 0, encoder.feature_dim)
    return (
        torch.cat(outputs)
        if outputs
        else torch.empty(0, encoder.projection.out_features if project else encoder.feature_dim)
    )


def distinct_captions(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(first, inverse)``: the first row of each distinct token sequence, and each row's entry in ``first``.

    Why: identical captions must get bit-identical embeddings, or the tie-aware metrics miss their
    ties. Embedded in different batches (other lengths, other batch sizes) they came out up to
    5e-7 apart (8 of the 220 repeated strings of the UCM-Captions test split), so every distinct
    caption is embedded once and copied to its repeats -- which is also less work.
    """
    rows = torch.cat([input_ids, attention_mask.to(input_ids.dtype)], dim=1)
    _, inverse = torch.unique(rows, dim=0, return_inverse=True)
    positions = torch.arange(len(rows), device=rows.device)
    first = torch.full((int(inverse.max()) + 1 if len(rows) else 0,), len(rows), dtype=torch.long, device=rows.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    order = torch.argsort(first)  # distinct captions in order of first appearance
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    return first[order], rank[inverse]


@torch.no_grad()
def text_outputs(
    model: AnyModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    project: bool,
    batch_size: int,
    device: torch.device,
    desc: str,
    show_progress: bool = True,
    precision: str,
) -> torch.Tensor:
    """Token states (``project=False``, float16 to halve the cache) or caption embeddings, in order.

    Each distinct caption is run once and copied to its repeats (:func:`distinct_captions`), so
    repeated captions get identical outputs. Captions are batched by length and each batch cut to
    its longest caption (tokens are padded on the right), so the transformer never runs over
    padding: on CPU that doubled caption throughput (benchmarks/embedding_speed.py). Token states
    are padded back with zeros to the input length; the BiLSTM reads only the real tokens, so the
    padding's value never matters. An interaction model gives token states only (it has no
    caption embedding); a dual encoder's pooled text embedding stands for its token states.
    """
    if isinstance(model, PairScoreModel):
        if project:
            raise ValueError("a pair-score model has no caption embedding: call text_outputs with project=False")
        word_states, state_dim = model.word_states, model.transformer.config.hidden_size
    else:
        encoder = model.text_encoder
        word_states, state_dim = encoder.word_states, encoder.state_dim
    first, inverse = distinct_captions(input_ids, attention_mask)
    input_ids, attention_mask = input_ids[first], attention_mask[first]
    lengths = attention_mask.sum(dim=1).clamp(min=1)
    order = torch.argsort(lengths, stable=True)
    outputs: torch.Tensor | None = None
    with evaluation_mode(model):
        for start in tqdm(range(0, len(input_ids), batch_size), desc=desc, disable=not show_progress):
            rows = order[start : start + batch_size]
            longest = int(lengths[rows].max())
            ids = input_ids[rows, :longest].to(device)
            mask = attention_mask[rows, :longest].to(device)
            with autocast(device, precision):
                states = word_states(ids, mask)
            if project:
                result = encoder.encode_states(states, mask).float().cpu()
            elif states.dim() == 3:  # per token: padded back to the input length
                result = F.pad(states.to(torch.float16), (0, 0, 0, input_ids.shape[1] - longest)).cpu()
            else:  # a dual encoder's pooled text embedding stands for its token states
                result = states.to(torch.float16).cpu()
            if outputs is None:
                outputs = result.new_empty((len(input_ids), *result.shape[1:]))
            outputs[rows] = result
    if outputs is None:
        per_token = not isinstance(model, DualEncoderModel)
        shape = (encoder.projection.out_features,) if project else (input_ids.shape[1], state_dim)[1 - per_token :]
        return torch.empty(0, *shape)
    # All distinct (first is then every row in order): no second copy of what may be gigabytes.
    return outputs if len(first) == len(inverse) else outputs[inverse]
