"""Training the interaction (SCAN-style) model: its two projections on cached frozen regions and words.

SCAN trains on fixed detector features with the hardest-negative triplet loss on its pair
scores; here the regions are a frozen backbone's feature-map cells and the words a frozen
transformer's token states, both computed once per split (and kept on disk with a
``training.feature_cache_dir``, under the same keys rules as TIMAM's caches). ``loss_weights``
may also weight CMPM, computed on the pair-score matrix (``training.score_temperature``), so the
family can share TIMAM's matching objective. The checkpoint is chosen on validation text->image
R@1 only, ranked by the same tie-aware code as every other model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import cached_property

import pandas as pd
import torch
from tqdm.auto import tqdm

from timam.inference.device import model_to, pick_device, to_device
from timam.inference.embedding import text_outputs
from timam.inference.interaction import pair_scores, region_outputs
from timam.inference.split_data import SplitData
from timam.losses import cmpm_loss_from_scores, hardest_negative_triplet_from_scores
from timam.models.checkpoint import Checkpoint
from timam.models.interaction import InteractionConfig, InteractionModel
from timam.retrieval.ranking import score_ranking_metrics
from timam.retrieval.relevance import relevance_labels
from timam.tracking.log import log_epoch
from timam.training.batches import identity_batches, random_batches
from timam.training.config import TrainingConfig
from timam.training.feature_cache import cached_tensor, image_feature_key, token_state_key
from timam.training.loop import SCORE, BestEpoch, best_checkpoint, seed_everything
from timam.training.optimizers import make_optimizer

logger = logging.getLogger(__name__)

# Loss terms that need embeddings (classifiers, the modality discriminator): none exist here.
_EMBEDDING_TERMS = ("identification", "cmpc", "adversarial")


def check_interaction_training(config: TrainingConfig) -> None:
    """Refuse the settings an interaction run cannot honour, naming the parameter to change.

    Not honoured either, by design of a minutes-long heads-only run: ``state_path`` (no resume
    state; the families rows set it null), ``cache_device`` (regions stay in host memory and each
    batch is copied), and torchrun (one process trains).
    """
    weights = config.loss_weights
    used = [name for name in _EMBEDDING_TERMS if getattr(weights, name)]
    if used:
        raise ValueError(
            f"training.loss_weights {used} need embeddings, which an interaction model has not; set them to 0 "
            "(it trains with triplet and/or cmpm on its pair scores)"
        )
    if not (weights.triplet or weights.cmpm):
        raise ValueError("an interaction model needs training.loss_weights.triplet or .cmpm above 0")
    if config.freeze.image_backbone_epochs is not None or config.freeze.text_model_epochs is not None:
        raise ValueError("an interaction model keeps its backbone and transformer frozen: set training.freeze.* null")
    if config.augmentation.active:
        raise ValueError("an interaction model trains on cached regions: switch training.augmentation off")


@dataclass
class InteractionSplit:
    """A split's frozen regions (every view in ``views``) and token states, computed once."""

    model: InteractionModel
    data: SplitData
    views: tuple[int, ...]
    config: TrainingConfig
    device: torch.device
    show_progress: bool = True

    def __post_init__(self) -> None:
        longest = int(self.data.attention_mask.sum(dim=1).max())
        self.input_ids = self.data.input_ids[:, :longest]
        self.attention_mask = self.data.attention_mask[:, :longest]

    @cached_property
    def regions(self) -> torch.Tensor:
        """``(views, images, cells, channels)`` float16."""
        config, precision = self.model.config, self.config.precision
        key = image_feature_key(
            config, self.data.image_paths, self.device, precision=precision, region_views=self.views
        )
        regions = cached_tensor(
            self.config.feature_cache_dir,
            key,
            lambda: region_outputs(
                self.model,
                self.data.image_paths,
                views=self.views,
                batch_size=self.config.embed_batch_size,
                device=self.device,
                desc=f"{self.data.split} regions",
                show_progress=self.show_progress,
                precision=precision,
            ),
        )
        logger.info("%s regions: %.2f GB (%s, float16)", self.data.split, regions.nbytes / 1e9, tuple(regions.shape))
        return regions

    @cached_property
    def token_states(self) -> torch.Tensor:
        precision = self.config.precision
        key = token_state_key(self.model.config, self.input_ids, self.attention_mask, self.device, precision)
        return cached_tensor(
            self.config.feature_cache_dir,
            key,
            lambda: text_outputs(
                self.model,
                self.input_ids,
                self.attention_mask,
                project=False,
                batch_size=self.config.embed_batch_size,
                device=self.device,
                desc=f"{self.data.split} token states",
                show_progress=self.show_progress,
                precision=precision,
            ),
        )

    def validation_r1(self) -> float:
        """Text->image R@1 (expected over ties) under ``training.validation_relevance``."""
        scores = pair_scores(self.model, self.regions[0], self.token_states, self.attention_mask, device=self.device)
        image_labels, text_labels = relevance_labels(
            image_identity=self.data.image_identity,
            caption_identity=self.data.caption_identity,
            caption_image=self.data.caption_image,
            relevance=self.config.validation_relevance,
        )
        metrics = score_ranking_metrics(scores, text_labels, image_labels, ks=(1,), metrics=("R@K",))
        return metrics["expected"]["R@1"]


class InteractionTrainer:
    """The heads, one optimiser per branch (regions: ``image_optimizer``; words: ``text_optimizer``)
    with their plateau schedulers, and one method per stage of an epoch."""

    def __init__(self, model: InteractionModel, train: InteractionSplit, val: InteractionSplit) -> None:
        self.model, self.train, self.val, self.config = model, train, val, train.config
        self.optimizers = [
            make_optimizer(list(model.region_projection.parameters()), self.config.image_optimizer),
            make_optimizer(list(model.word_projection.parameters()), self.config.text_optimizer),
        ]
        schedule = self.config.schedule
        self.schedulers = [
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=schedule.factor, patience=schedule.patience, min_lr=schedule.min_lr
            )
            for optimizer in self.optimizers
        ]

    def batches(self, generator: torch.Generator) -> list[torch.Tensor]:
        labels = self.train.data.caption_labels
        if self.config.sampler == "identity":
            return identity_batches(labels, self.config.batch_size, self.config.samples_per_identity, generator)
        return random_batches(len(labels), self.config.batch_size, generator)

    def loss_terms(self, captions: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The weighted terms of one batch: its captions against their own images (one view each)."""
        data, device = self.train.data, self.train.device
        images = data.caption_image[captions]
        views = torch.randint(len(self.train.views), (len(captions),), generator=generator)
        regions = to_device(self.train.regions[views, images], device)
        scores = self.model.scores(
            regions,
            to_device(self.train.token_states[captions], device),
            to_device(self.train.attention_mask[captions], device),
        ).t()  # (images, captions): row i is the image of caption i
        match_ids = images if self.config.matching == "instance" else data.caption_labels[captions]
        match_ids = to_device(match_ids, device)
        weights, terms = self.config.loss_weights, {}
        if weights.triplet:
            terms["triplet"] = hardest_negative_triplet_from_scores(
                scores, identities=match_ids, margin=self.config.triplet_margin
            )
        if weights.cmpm:
            matches = match_ids[:, None] == match_ids[None, :]
            image_to_text, text_to_image = cmpm_loss_from_scores(
                scores, matches, temperature=self.config.score_temperature
            )
            terms["cmpm"] = image_to_text + text_to_image
        return terms

    def run_epoch(self, epoch: int, generator: torch.Generator) -> dict[str, float]:
        """Train one epoch, validate, step the schedulers; the epoch's history row."""
        started = time.perf_counter()
        self.model.train()
        self.model.backbone.eval()
        self.model.transformer.eval()
        weights = self.config.loss_weights
        sums: dict[str, float] = {}
        batches = self.batches(generator)
        for captions in batches:
            terms = self.loss_terms(captions, generator)
            total = sum(getattr(weights, name) * value for name, value in terms.items())
            for optimizer in self.optimizers:
                optimizer.zero_grad(set_to_none=True)
            total.backward()
            if self.config.grad_clip:
                parameters = [p for head in self.model.heads() for p in head.parameters()]
                torch.nn.utils.clip_grad_norm_(parameters, self.config.grad_clip)
            for optimizer in self.optimizers:
                optimizer.step()
            for name, value in {**terms, "total": total}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
        row = {f"loss_{name}": value / max(1, len(batches)) for name, value in sums.items()}
        score = self.val.validation_r1()
        for scheduler in self.schedulers:
            scheduler.step(score)
        return {"epoch": epoch, **row, SCORE: score, "seconds": time.perf_counter() - started}


def head_state(model: InteractionModel) -> dict[str, torch.Tensor]:
    """What training changes: the projections (the frozen parts are the pretrained weights)."""
    prefixes = ("region_projection.", "word_projection.")
    return {name: t.detach().cpu().clone() for name, t in model.state_dict().items() if name.startswith(prefixes)}


def train_interaction(
    train: SplitData, val: SplitData, model_config: InteractionConfig, config: TrainingConfig
) -> tuple[Checkpoint, pd.DataFrame]:
    """Train the projections and return the best-on-validation checkpoint and the history."""
    check_interaction_training(config)
    started = time.perf_counter()
    generator = seed_everything(config.seed)
    device = pick_device(config.device)
    logger.info("Training the interaction model on %s: %d train captions", device, train.num_captions)
    model = model_to(InteractionModel(model_config), device)
    trainer = InteractionTrainer(
        model,
        InteractionSplit(model, train, model.views, config, device),
        InteractionSplit(model, val, (0,), config, device),
    )
    best = BestEpoch(model=head_state(model))
    history = []
    bar = tqdm(range(1, config.epochs + 1), desc="training epochs (interaction)")
    for epoch in bar:
        row = trainer.run_epoch(epoch, generator)
        best.offer(epoch, row[SCORE], lambda: head_state(model))
        history.append(row)
        log_epoch(row, epoch=epoch)
        bar.set_postfix(loss=f"{row['loss_total']:.3f}", val_r1=f"{row[SCORE]:.1f}", best=f"{best.score:.1f}")
        logger.info("epoch %d: loss %.4f, val t2i R@1 %.2f (best %.2f at epoch %d)", epoch, row["loss_total"],
                    row[SCORE], best.score, best.epoch)  # fmt: skip
    return best_checkpoint(model, best, config, train, started), pd.DataFrame(history)
