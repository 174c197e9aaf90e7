"""Training the AgNet-style attribute-hashing heads on cached frozen features, on the shared epoch loop.

The backbone's pooled image features and the transformer's token states are computed once per
split (:class:`~timam.training.cached_split.CachedSplit`, the same cache and keys as TIMAM's, so a
families run that trained TIMAM on these encoders loads them from disk); the attribute predictors
and hashing networks train on them with the three terms of :mod:`timam.losses.hashing`, weighted by
``training.loss_weights``:

- ``attribute_prediction``: L_a of the image logits against each image's targets plus L_a of the
  caption logits against each caption's (the attribute vocabulary's, :class:`AttributeTargets`);
- ``similarity_preserving``: L_s over the batch's images (one per caption) x captions, a pair similar
  when it matches under ``training.matching`` (identity: same person or class; instance: a caption
  and its own image);
- ``quantization``: L_q of the image codes plus L_q of the caption codes.

The checkpoint is chosen on validation text->image R@1 of Hamming ranking of the packed codes (the
expected value over ties: Hamming distances tie constantly), ranked by the same code as every
other model. Batches, steps, schedulers, resume state and the checkpoint choice are the shared
loop's (:mod:`timam.training.epoch`, :func:`timam.training.loop.fit`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields

import pandas as pd
import torch
from torch import Tensor

from timam.inference.device import model_to, pick_device, to_device
from timam.inference.embedding import distinct_captions
from timam.inference.split_data import SplitData
from timam.losses.hashing import (
    attribute_prediction_loss,
    identity_similarity,
    quantization_loss,
    similarity_preserving_loss,
)
from timam.models.attribute_family import AttributeHashingModel
from timam.models.attribute_hashing import AttributeHashingConfig, AttributeOutputs
from timam.models.checkpoint import Checkpoint
from timam.retrieval.hamming import hamming_scores, pack_codes
from timam.retrieval.ranking import score_ranking_metrics
from timam.retrieval.relevance import relevance_labels
from timam.training.cached_split import CachedSplit, train_and_val_splits
from timam.training.config import HASHING_TERMS, TrainingConfig
from timam.training.determinism import kernel_settings
from timam.training.epoch import SCORE, EpochTrainer
from timam.training.loop import fit, outcome_parameters, seed_everything
from timam.training.optimizers import make_optimizer, plateau_schedulers
from timam.training.resume import run_fingerprint

logger = logging.getLogger(__name__)

# Rows of features or captions the heads take at once outside training (memory, not results: each
# distinct caption is computed once, so its repeats are bit-identical whatever the blocks).
OUTPUT_BLOCK = 1024


@dataclass(frozen=True)
class AttributeTargets:
    """The training split's multi-hot targets over the attribute vocabulary: ``images`` ``(images, V)``
    in the split's image order, ``captions`` ``(captions, V)`` in its caption order."""

    images: Tensor
    captions: Tensor

    def digest(self) -> str:
        """A short hash of the targets, so a resume state of other targets is never resumed."""
        digest = hashlib.sha256()
        for tensor in (self.images, self.captions):
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.to(torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


def check_hashing_training(config: TrainingConfig) -> None:
    """Refuse the settings an attribute-hashing run cannot honour, naming the parameter to change."""
    weights = config.loss_weights
    others = [name for name in type(weights).model_fields if name not in HASHING_TERMS and getattr(weights, name)]
    if others:
        raise ValueError(
            f"training.loss_weights {others} train other models; an attribute-hashing run trains with "
            f"{list(HASHING_TERMS)} only: set the others to 0"
        )
    if not any(getattr(weights, name) for name in HASHING_TERMS):
        raise ValueError(f"an attribute-hashing run needs one of training.loss_weights {list(HASHING_TERMS)} above 0")
    if config.freeze.image_backbone_epochs is not None or config.freeze.text_model_epochs is not None:
        raise ValueError("an attribute-hashing model keeps its encoders frozen: set training.freeze.* null")
    if config.augmentation.active:
        raise ValueError("an attribute-hashing model trains on cached features: switch training.augmentation off")


@torch.no_grad()
def split_outputs(
    model: AttributeHashingModel, split: CachedSplit, device: torch.device
) -> tuple[AttributeOutputs, AttributeOutputs]:
    """The image and caption outputs of a whole split (no gradients), on the CPU.

    Images from their cached features (the mean over the views); each distinct caption once, copied
    to its repeats, so identical captions get identical codes and attribute vectors.
    """
    features = split.image_features
    images = [model.image_outputs(to_device(features[i : i + OUTPUT_BLOCK], device)) for i in _blocks(len(features))]
    first, inverse = distinct_captions(split.input_ids, split.attention_mask)
    states, mask = split.token_states[first], split.attention_mask[first]
    texts = [
        model.text_outputs(
            to_device(states[i : i + OUTPUT_BLOCK], device), to_device(mask[i : i + OUTPUT_BLOCK], device)
        )
        for i in _blocks(len(first))
    ]
    return _joined(images), _joined(texts, inverse)


def _blocks(count: int) -> range:
    return range(0, count, OUTPUT_BLOCK)


def _joined(parts: list[AttributeOutputs], rows: Tensor | None = None) -> AttributeOutputs:
    joined = [
        torch.cat([getattr(part, field.name).float().cpu() for part in parts]) for field in fields(AttributeOutputs)
    ]
    return AttributeOutputs(*(tensor if rows is None else tensor[rows] for tensor in joined))


def hamming_ranking_scores(image: AttributeOutputs, text: AttributeOutputs) -> Tensor:
    """``(captions, images)`` scores ``-Hamming distance`` of the packed sign codes."""
    return hamming_scores(pack_codes(text.relaxed), pack_codes(image.relaxed))


class HashingTrainer(EpochTrainer):
    """The AgNet-style heads on the shared epoch loop: one optimiser per branch ("image": its
    attribute predictor and hashing network -- the shared one when ``shared_hash_network``; "text":
    its predictor and its own hashing network, if any), each with its plateau scheduler."""

    model: AttributeHashingModel
    train: CachedSplit
    val: CachedSplit

    def __init__(
        self,
        model: AttributeHashingModel,
        train: CachedSplit,
        val: CachedSplit,
        targets: AttributeTargets,
        config: TrainingConfig,
        device: torch.device,
    ) -> None:
        super().__init__(model, train, val, config, device)
        expected = (len(train.data.image_paths), train.data.num_captions)
        if (len(targets.images), len(targets.captions)) != expected:
            raise ValueError(
                f"attribute targets cover {len(targets.images)} images and {len(targets.captions)} captions, "
                f"the training split has {expected[0]} and {expected[1]}"
            )
        self.targets = targets
        heads = model.heads
        text_hash = [] if heads.text_hash is None else list(heads.text_hash.parameters())
        self.optimizers = {
            "image": make_optimizer(
                [*heads.image_predictor.parameters(), *heads.image_hash.parameters()], config.image_optimizer
            ),
            "text": make_optimizer([*heads.text_predictor.parameters(), *text_hash], config.text_optimizer),
        }
        self.schedulers = plateau_schedulers(self.optimizers, config.schedule)

    def named_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.optimizers

    def changing_state(self) -> dict[str, Tensor]:
        """The heads (the frozen encoders keep their pretrained weights)."""
        return {
            name: t.detach().cpu().clone() for name, t in self.model.state_dict().items() if name.startswith("heads.")
        }

    def set_train_mode(self) -> None:
        """The heads train; the frozen backbone and transformer stay in eval mode."""
        self.model.train()
        self.model.image_encoder.backbone.eval()
        self.model.text_encoder.transformer.eval()

    def batch_inputs(self, shares: list[Tensor], generator: torch.Generator) -> Iterator[Tensor | None]:
        """One random view of each caption's image (with several views cached), as each step comes."""
        for captions in shares:
            yield self.train.draw_views(len(captions))

    def loss_terms(self, batch: Tensor, inputs: Tensor | None, epoch: int) -> dict[str, Tensor]:
        """The terms of one batch: its captions and their own images (in the views ``inputs``)."""
        data, device, weights = self.train.data, self.device, self.config.loss_weights
        images = data.caption_image[batch]
        image = self.model.image_outputs(to_device(self.train.image_features_of(batch, inputs), device))
        text = self.model.text_outputs(
            to_device(self.train.token_states[batch], device), to_device(self.train.attention_mask[batch], device)
        )
        terms: dict[str, Tensor] = {}
        if weights.attribute_prediction:
            terms["attribute_prediction"] = attribute_prediction_loss(
                image.logits, to_device(self.targets.images[images], device)
            ) + attribute_prediction_loss(text.logits, to_device(self.targets.captions[batch], device))
        if weights.similarity_preserving:
            match_ids = images if self.config.matching == "instance" else data.caption_labels[batch]
            similar = to_device(identity_similarity(match_ids, match_ids), device)
            terms["similarity_preserving"] = similarity_preserving_loss(image.relaxed, text.relaxed, similar)
        if weights.quantization:
            terms["quantization"] = quantization_loss(image.relaxed) + quantization_loss(text.relaxed)
        return terms

    def validate(self) -> dict[str, float]:
        """Text->image R@1 of Hamming ranking (expected over ties) under ``training.validation_relevance``."""
        self.model.eval()  # the codes' batch normalisation at its running statistics, as at test time
        image, text = split_outputs(self.model, self.val, self.device)
        data = self.val.data
        image_labels, text_labels = relevance_labels(
            image_identity=data.image_identity,
            caption_identity=data.caption_identity,
            caption_image=data.caption_image,
            relevance=self.config.validation_relevance,
        )
        scores = hamming_ranking_scores(image, text)
        metrics = score_ranking_metrics(scores, text_labels, image_labels, ks=(1,), metrics=("R@K",))
        return {SCORE: metrics["expected"]["R@1"]}


def train_attribute_hashing(
    train: SplitData,
    val: SplitData,
    model_config: AttributeHashingConfig,
    config: TrainingConfig,
    targets: AttributeTargets,
) -> tuple[Checkpoint, pd.DataFrame]:
    """Train the heads on ``train``'s ``targets`` and return the best-on-validation checkpoint and the
    history; with ``training.state_path`` the run saves and resumes as every family does."""
    check_hashing_training(config)
    if model_config.num_attributes != targets.images.shape[1]:
        raise ValueError(
            f"params model.num_attributes is {model_config.num_attributes} but the targets have "
            f"{targets.images.shape[1]} attributes; it follows the attribute vocabulary"
        )
    started = time.perf_counter()
    with kernel_settings(config.deterministic):
        generator = seed_everything(config.seed)
        device = pick_device(config.device)
        logger.info("Training the attribute-hashing heads on %s: %d train captions", device, train.num_captions)
        model = model_to(AttributeHashingModel(model_config), device)
        cached_train, cached_val = train_and_val_splits(
            model,
            train,
            val,
            batch_size=config.embed_batch_size,
            device=device,
            cache_dir=config.feature_cache_dir,
            precision=config.precision,
        )
        trainer = HashingTrainer(model, cached_train, cached_val, targets, config, device)
        fingerprint = run_fingerprint(
            {**model_config.to_dict(), "targets": targets.digest()},
            outcome_parameters(config),
            train.caption_ids,
            val.caption_ids,
        )
        return fit(trainer, generator, fingerprint, state_path=config.state_path, keep_state=False, started=started)
