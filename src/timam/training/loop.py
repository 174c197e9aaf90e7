"""Train TIMAM on cached frozen features; keep the checkpoint that scores best on validation.

With the image backbone and the transformer frozen and the images not augmented, their outputs do
not change between epochs, so they are computed once (pooled image features, token states) and the
heads (FC projections, BiLSTM, classifiers, discriminator) train on the cache. This is what makes
CPU training practical: an epoch costs a BiLSTM pass, not a backbone pass.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from timam.models.checkpoint import Checkpoint
from timam.models.config import ModelConfig
from timam.models.timam import TimamModel
from timam.retrieval.ranking import ranking_metrics
from timam.retrieval.relevance import relevance_labels
from timam.training.batches import identity_batches, random_batches
from timam.training.config import OptimizerConfig, TrainingConfig
from timam.inference.split_data import SplitData
from timam.inference.device import model_to, pick_device, to_device_images
from timam.training.distributed import (
    DistributedContext,
    average_gradients,
    barrier,
    broadcast_from_main,
    check_batch_divides,
    context_from_environment,
    data_parallel,
    gather_with_grad,
    global_batch,
    local_share,
    rank_device,
)
from timam.inference.embedding import default_workers, distinct_captions, image_outputs, text_outputs
from timam.training.feature_cache import cached_tensor, image_feature_key, token_state_key
from timam.inference.images import load_rgb, train_transform
from timam.training.objective import TimamObjective
from timam.training.pair_encoder import PairEncoder
from timam.training.resume import load_state, restore_rng, rng_state, run_fingerprint, save_state

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return the generator that orders batches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class CachedSplit:
    """One split with its frozen outputs, computed on first use and then reused every epoch:
    pooled image features and float16 token states trimmed to the longest caption. With a
    ``cache_dir`` they are also kept on disk for later runs over the same data and encoders.
    ``per_view`` (the training split of a model with several ``image_views``) keeps every view's
    features, ``(views, images, features)``, so that each step can draw one; otherwise their mean."""

    def __init__(
        self,
        model: TimamModel,
        data: SplitData,
        *,
        batch_size: int,
        device: torch.device,
        show_progress: bool = True,
        cache_dir: str | Path | None = None,
        per_view: bool = False,
    ) -> None:
        self.model, self.data, self.batch_size, self.device = model, data, batch_size, device
        self.show_progress, self.cache_dir = show_progress, cache_dir
        self.per_view = per_view and model.config.image_views > 1
        longest = int(data.attention_mask.sum(dim=1).max())
        self.input_ids = data.input_ids[:, :longest]
        self.attention_mask = data.attention_mask[:, :longest]

    @cached_property
    def image_features(self) -> torch.Tensor:
        key = image_feature_key(self.model.config, self.data.image_paths, self.device, per_view=self.per_view)
        return cached_tensor(self.cache_dir, key, lambda: image_outputs(
            self.model, self.data.image_paths, project=False, batch_size=self.batch_size, device=self.device,
            desc=f"{self.data.split} image features", show_progress=self.show_progress, per_view=self.per_view,
        ))

    def draw_views(self, count: int) -> torch.Tensor | None:
        """One random view index for each of ``count`` captions (torch's global generator, which
        the resume state saves); None without ``per_view``. Drawn for a whole global batch, the
        same on every rank, so that each rank takes its share as it does of the captions."""
        if not self.per_view:
            return None
        return torch.randint(self.image_features.shape[0], (count,))

    def image_features_of(self, captions: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        """The cached features of these captions' images, in the given views when ``per_view``."""
        images = self.data.caption_image[captions]
        if not self.per_view:
            return self.image_features[images]
        if views is None or len(views) != len(images):
            raise ValueError("a per-view feature cache needs one view index per caption (draw_views)")
        return self.image_features[views, images]

    @cached_property
    def token_states(self) -> torch.Tensor:
        key = token_state_key(self.model.config, self.input_ids, self.attention_mask, self.device)
        return cached_tensor(self.cache_dir, key, lambda: text_outputs(
            self.model, self.input_ids, self.attention_mask, project=False, batch_size=self.batch_size,
            device=self.device, desc=f"{self.data.split} token states", show_progress=self.show_progress,
        ))


@dataclass
class EpochProgress:
    """How far an epoch got: its batches, the steps done and the loss sums so far.

    Saved inside the training state every ``save_every_steps`` steps, so a resumed run skips the
    steps already taken instead of repeating the epoch.
    """

    epoch: int
    batches: list[torch.Tensor]
    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)

    def add(self, terms: dict[str, torch.Tensor], total: torch.Tensor) -> None:
        for name, value in {**terms, "total": total}.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value.detach())
        self.step += 1

    def mean_losses(self) -> dict[str, float]:
        return {f"loss_{name}": value / max(1, len(self.batches)) for name, value in self.sums.items()}

    def to_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches": self.batches, "step": self.step, "sums": dict(self.sums)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EpochProgress:
        return cls(epoch=state["epoch"], batches=list(state["batches"]), step=state["step"], sums=dict(state["sums"]))


class CaptionImageDataset(Dataset):
    """The image of each caption, transformed; the caption index comes back with it."""

    def __init__(self, data: SplitData, transform) -> None:
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return self.data.num_captions

    def __getitem__(self, caption: int) -> tuple[torch.Tensor, int]:
        path = self.data.image_paths[int(self.data.caption_image[caption])]
        return self.transform(load_rgb(path)), caption


def pretrained_parts(model: TimamModel) -> dict[str, nn.Module]:
    """The parts that start from pretrained weights and may be frozen (and then cached)."""
    parts = {"image": model.image_encoder.backbone}
    if model.config.text_encoder == "transformer":
        parts["text"] = model.text_encoder.transformer
    return parts


def is_trainable(part: nn.Module) -> bool:
    return any(parameter.requires_grad for parameter in part.parameters())


def freeze_pretrained(model: TimamModel) -> None:
    """Freeze the image backbone and the transformer; the heads stay trainable."""
    for part in pretrained_parts(model).values():
        part.requires_grad_(False)


def changing_state(model: TimamModel, config: TrainingConfig) -> dict[str, torch.Tensor]:
    """Every tensor training can change: all but the pretrained parts frozen for the whole run.

    Parts that unfreeze at some epoch are included with their buffers (BatchNorm statistics), so a
    restored best model or a resumed run never mixes tensors from different epochs.
    """
    frozen_throughout = []
    if config.freeze.image_backbone_epochs is None:
        frozen_throughout.append("image_encoder.backbone.")
    if config.freeze.text_model_epochs is None and model.config.text_encoder == "transformer":
        frozen_throughout.append("text_encoder.transformer.")
    return {
        name: tensor.detach().cpu().clone()
        for name, tensor in model.state_dict().items()
        if not name.startswith(tuple(frozen_throughout))
    }


def make_optimizer(parameters: list[nn.Parameter], config: OptimizerConfig) -> torch.optim.Optimizer:
    if config.name == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)


def trainable(module: nn.Module) -> list[nn.Parameter]:
    return [parameter for parameter in module.parameters() if parameter.requires_grad]


class TimamTrainer:
    """Holds the model, objective, optimisers and caches; one method per stage of an epoch.

    Frozen parts sit in the optimisers from the start with no gradient (optimisers skip them), so
    unfreezing is only ``requires_grad_(True)`` and the optimiser and scheduler states stay valid.
    Under torchrun each rank embeds its share of every global batch and the loss sees them all
    (see ``timam.training.distributed``); every rank validates, so schedulers agree without messages.
    """

    def __init__(
        self,
        model: TimamModel,
        train: CachedSplit,
        val: CachedSplit,
        config: TrainingConfig,
        device: torch.device,
        context: DistributedContext = DistributedContext(),
    ) -> None:
        self.model, self.train, self.val, self.config, self.device = model, train, val, config, device
        self.context = context
        self.pair_encoder = PairEncoder(model, device)
        self.forward_encoders: nn.Module = self.pair_encoder
        self.wrapped_for: tuple[bool, ...] | None = None
        self.epoch = 0
        # After which epoch each pretrained part trains (None: not yet); "plateau" parts get theirs
        # from watch_plateau.
        schedule = {"image": config.freeze.image_backbone_epochs, "text": config.freeze.text_model_epochs}
        self.unfreeze_after = {name: None if value == "plateau" else value for name, value in schedule.items()}
        self.plateau_parts = sorted(name for name, value in schedule.items() if value == "plateau"
                                    and name in pretrained_parts(model))
        self.plateau = {"best": float("-inf"), "stale": 0}
        self.objective = TimamObjective(model.config.embedding_dim, model.config.num_classes, config).to(device)
        # Image branch and discriminator: the paper's SGD; text branch and classifiers: Adam.
        self.encoder_optimizers = [
            make_optimizer(list(model.image_encoder.parameters()), config.image_optimizer),
            make_optimizer(
                list(model.text_encoder.parameters()) + list(self.objective.identification.parameters()),
                config.text_optimizer,
            ),
        ]
        self.discriminator_optimizer = make_optimizer(
            list(self.objective.discriminator.parameters()), config.discriminator_optimizer
        )
        self.schedulers = [
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=config.schedule.factor, patience=config.schedule.patience,
                min_lr=config.schedule.min_lr,
            )
            for optimizer in (*self.encoder_optimizers, self.discriminator_optimizer)
        ]
        self.train_transform = train_transform(
            model.config.image_size, flip=config.augmentation.flip,
            crop_padding=config.augmentation.crop_padding, colour_jitter=config.augmentation.colour_jitter,
        )

    def set_epoch(self, epoch: int) -> None:
        """Freeze the pretrained parts before their unfreeze epoch, and let them train after it."""
        self.epoch = epoch
        for name, part in pretrained_parts(self.model).items():
            frozen_until = self.unfreeze_after[name]
            trainable_now = frozen_until is not None and epoch > frozen_until
            if trainable_now and not is_trainable(part) and self.context.is_main:
                logger.info("Epoch %d: %s encoder unfrozen", epoch, name)
            part.requires_grad_(trainable_now)
        trainable_parts = tuple(is_trainable(part) for part in pretrained_parts(self.model).values())
        if trainable_parts != self.wrapped_for:  # DDP must know every parameter that now trains
            self.forward_encoders = data_parallel(self.pair_encoder, self.device, self.context)
            self.wrapped_for = trainable_parts

    @property
    def image_cached(self) -> bool:
        return not is_trainable(self.model.image_encoder.backbone) and not self.config.augmentation.active

    @property
    def text_cached(self) -> bool:
        parts = pretrained_parts(self.model)
        return "text" in parts and not is_trainable(parts["text"])

    def embed_batch(
        self, split: CachedSplit, captions: torch.Tensor, images: torch.Tensor | None = None,
        views: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of a batch of captions and their images, from the caches where frozen
        (``views``: the view of each caption's image in a per-view cache)."""
        if images is not None:
            image_input = to_device_images(images, self.device)
        else:
            image_input = split.image_features_of(captions, views).to(self.device)
        return self.forward_encoders(
            image_input, self.text_input(split, captions), split.attention_mask[captions].to(self.device),
            image_features_given=images is None, token_states_given=self.text_cached,
        )

    def embed_texts(self, split: CachedSplit, captions: torch.Tensor) -> torch.Tensor:
        """Caption embeddings, from cached token states while the transformer is frozen."""
        mask = split.attention_mask[captions].to(self.device)
        return self.pair_encoder.texts(self.text_input(split, captions), mask, token_states_given=self.text_cached)

    def text_input(self, split: CachedSplit, captions: torch.Tensor) -> torch.Tensor:
        """Cached token states while the transformer is frozen, token ids otherwise."""
        source = split.token_states if self.text_cached else split.input_ids
        return source[captions].to(self.device)

    def batches(self, generator: torch.Generator) -> list[torch.Tensor]:
        """The epoch's global batches, the same on every rank (same generator), trimmed to equal shares."""
        labels = self.train.data.caption_labels
        if self.config.sampler == "identity":
            batches = identity_batches(labels, self.config.batch_size, self.config.samples_per_identity, generator)
        else:
            batches = random_batches(len(labels), self.config.batch_size, generator)
        batches = [global_batch(batch, self.context) for batch in batches]
        return [batch for batch in batches if len(batch) >= 2]

    def image_stream(self, shares: list[torch.Tensor]) -> Iterator[torch.Tensor | None]:
        """The transformed images of each share of captions; None while cached features stand in."""
        if self.image_cached:
            yield from (None for _ in shares)
            return
        # Its own generator (seed, epoch, rank): workers of different ranks draw different
        # augmentations, and the global RNG is left alone.
        seeds = torch.Generator().manual_seed(self.config.seed * 1_000_000 + self.epoch * 1_000 + self.context.rank)
        loader = DataLoader(
            CaptionImageDataset(self.train.data, self.train_transform), batch_sampler=[s.tolist() for s in shares],
            num_workers=default_workers(), pin_memory=self.device.type == "cuda", generator=seeds,
        )
        yield from (images for images, _ in loader)

    def prepare_caches(self) -> None:
        """Compute (or load) the frozen outputs this run uses. Under torchrun with a feature cache
        directory, rank 0 computes and saves them while the other ranks wait, then they load them."""
        rank_0_first = self.context.active and self.train.cache_dir is not None
        if rank_0_first and not self.context.is_main:
            barrier(self.context)
        for split in (self.train, self.val):
            if self.image_cached:
                split.image_features  # noqa: B018  (computes the cached property)
            if self.text_cached:
                split.token_states  # noqa: B018
        if rank_0_first and self.context.is_main:
            barrier(self.context)

    def set_train_mode(self) -> None:
        """Heads train; frozen pretrained parts stay in eval mode (no BatchNorm drift, no dropout)."""
        self.model.train()
        for part in pretrained_parts(self.model).values():
            if not is_trainable(part):
                part.eval()

    def batch_terms(
        self, batch: torch.Tensor, images: torch.Tensor | None, *, adversarial_on: bool
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Loss terms of one global batch, and its gathered image and text embeddings.

        This rank embeds its share (``images`` are that share's, or None when cached) and gathers
        the others' with gradient, so every term sees the whole global batch.
        """
        views = self.train.draw_views(len(batch)) if images is None else None
        share_views = None if views is None else local_share(views, self.context)
        image_emb, text_emb = self.embed_batch(self.train, local_share(batch, self.context), images, share_views)
        image_emb, text_emb = gather_with_grad(image_emb, self.context), gather_with_grad(text_emb, self.context)
        labels = self.train.data.caption_labels[batch].to(self.device)
        match_ids = self.train.data.caption_image[batch].to(self.device) if self.config.matching == "instance" else labels
        terms = self.objective.terms(image_emb, text_emb, labels, adversarial_on=adversarial_on, match_ids=match_ids)
        return terms, image_emb, text_emb

    def backward(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted total's gradients, equal on every rank to one process's on the global batch."""
        total = self.objective.total(terms)
        for optimizer in self.encoder_optimizers:
            optimizer.zero_grad(set_to_none=True)
        total.backward()
        average_gradients(list(self.objective.identification.parameters()), self.context)
        return total

    def train_epoch(
        self,
        epoch: int,
        generator: torch.Generator,
        progress: EpochProgress | None = None,
        after_step: Callable[[EpochProgress], None] | None = None,
    ) -> dict[str, float]:
        """Train on the epoch's batches from ``progress`` (a resumed epoch) or from the start.

        ``after_step`` sees the progress after every step (the mid-epoch saves).
        """
        self.set_train_mode()
        adversarial_on = epoch > self.config.adversarial.warmup_epochs
        progress = progress or EpochProgress(epoch=epoch, batches=self.batches(generator))
        remaining = progress.batches[progress.step :]
        shares = [local_share(batch, self.context) for batch in remaining]
        for batch, images in zip(remaining, self.image_stream(shares), strict=True):
            terms, image_emb, text_emb = self.batch_terms(batch, images, adversarial_on=adversarial_on)
            for name, value in terms.items():
                if not torch.isfinite(value):
                    raise FloatingPointError(f"Loss term {name!r} is {value.item()} at epoch {epoch}, step {progress.step}")
            total = self.backward(terms)
            if self.config.grad_clip > 0:
                encoder_parameters = [p for o in self.encoder_optimizers for g in o.param_groups for p in g["params"]]
                nn.utils.clip_grad_norm_([p for p in encoder_parameters if p.grad is not None], self.config.grad_clip)
            for optimizer in self.encoder_optimizers:
                optimizer.step()
            if self.config.loss_weights.adversarial:
                terms["discriminator"] = self.discriminator_steps(image_emb.detach(), text_emb.detach())
                if not torch.isfinite(terms["discriminator"]):
                    raise FloatingPointError(f"Loss term 'discriminator' is not finite at epoch {epoch}, step {progress.step}")
            progress.add(terms, total)
            if after_step is not None:
                after_step(progress)
        return progress.mean_losses()

    def discriminator_steps(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        for _ in range(self.config.adversarial.discriminator_steps):
            loss = self.objective.discriminator_term(image_emb, text_emb)
            self.discriminator_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(list(self.objective.discriminator.parameters()), self.context)
            self.discriminator_optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def validation_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Validation images and captions embedded with the current weights (caches where frozen)."""
        self.model.eval()
        data, batch_size = self.val.data, self.config.embed_batch_size
        if self.image_cached:
            image_emb = self.model.image_encoder.projection(self.val.image_features.to(self.device))
        else:
            image_emb = image_outputs(self.model, data.image_paths, project=True, batch_size=batch_size,
                                      device=self.device, desc="val images",
                                      show_progress=self.context.is_main).to(self.device)
        # One pass per distinct caption: repeats must tie exactly (see distinct_captions).
        first, inverse = distinct_captions(self.val.input_ids, self.val.attention_mask)
        text_emb = torch.cat([self.embed_texts(self.val, chunk).float() for chunk in first.split(256)])
        return image_emb.float(), text_emb[inverse.to(text_emb.device)]

    def validate(self) -> dict[str, float]:
        """Text->image and image->text R@1 on the validation split (expected value under random ties)."""
        image_emb, text_emb = self.validation_embeddings()
        data = self.val.data
        image_labels, text_labels = relevance_labels(
            image_identity=data.image_identity, caption_identity=data.caption_identity,
            caption_image=data.caption_image, relevance=self.config.validation_relevance,
        )
        image_labels, text_labels = image_labels.to(self.device), text_labels.to(self.device)
        t2i = ranking_metrics(text_emb, image_emb, text_labels, image_labels, ks=(1,))
        i2t = ranking_metrics(image_emb, text_emb, image_labels, text_labels, ks=(1,))
        scores = {"val_t2i_R@1": t2i["expected"]["R@1"], "val_i2t_R@1": i2t["expected"]["R@1"]}
        return broadcast_from_main(scores, self.context)  # schedulers and best epoch agree on every rank

    def run_epoch(
        self,
        epoch: int,
        generator: torch.Generator,
        progress: EpochProgress | None = None,
        after_step: Callable[[EpochProgress], None] | None = None,
    ) -> dict[str, Any]:
        """One epoch: apply the freeze schedule, train, validate, step the plateau schedulers.

        Returns the history row (epoch, lr, loss terms, validation R@1, seconds).
        """
        self.set_epoch(epoch)
        started = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch, "lr": self.learning_rate()}
        row.update(self.train_epoch(epoch, generator, progress, after_step))
        row.update(self.validate())
        row["seconds"] = time.perf_counter() - started
        for scheduler in self.schedulers:
            scheduler.step(row["val_t2i_R@1"])
        self.watch_plateau(epoch, row["val_t2i_R@1"])
        return row

    def watch_plateau(self, epoch: int, score: float) -> None:
        """Schedule the "plateau" parts to train from the next epoch once validation R@1 has stalled."""
        waiting = [name for name in self.plateau_parts if self.unfreeze_after[name] is None]
        if score > self.plateau["best"]:
            self.plateau.update(best=score, stale=0)
            return
        self.plateau["stale"] += 1
        if waiting and self.plateau["stale"] >= self.config.freeze.plateau_patience:
            for name in waiting:
                self.unfreeze_after[name] = epoch
            self.plateau["stale"] = 0
            if self.context.is_main:
                logger.info("Validation R@1 flat for %d epochs: %s encoder(s) train from epoch %d",
                            self.config.freeze.plateau_patience, " and ".join(waiting), epoch + 1)

    def learning_rate(self) -> float:
        return self.encoder_optimizers[1].param_groups[0]["lr"]


def _state_dict(
    trainer: TimamTrainer,
    run_progress: dict[str, Any],
    generator: torch.Generator,
    partial_epoch: EpochProgress | None = None,
) -> dict[str, Any]:
    return {
        **run_progress,
        "partial_epoch": partial_epoch.to_state() if partial_epoch is not None else None,
        "model": changing_state(trainer.model, trainer.config),
        "objective": {k: v.detach().cpu() for k, v in trainer.objective.state_dict().items()},
        "optimizers": [o.state_dict() for o in (*trainer.encoder_optimizers, trainer.discriminator_optimizer)],
        "schedulers": [s.state_dict() for s in trainer.schedulers],
        "rng": rng_state(generator),
        "freeze": {"unfreeze_after": dict(trainer.unfreeze_after), "plateau": dict(trainer.plateau)},
    }


def _restore(trainer: TimamTrainer, state: dict[str, Any], generator: torch.Generator) -> None:
    trainer.model.load_state_dict(state["model"], strict=False)
    trainer.objective.load_state_dict(state["objective"])
    for optimizer, saved in zip((*trainer.encoder_optimizers, trainer.discriminator_optimizer), state["optimizers"], strict=True):
        optimizer.load_state_dict(saved)
    for scheduler, saved in zip(trainer.schedulers, state["schedulers"], strict=True):
        scheduler.load_state_dict(saved)
    restore_rng(state["rng"], generator)
    trainer.unfreeze_after.update(state["freeze"]["unfreeze_after"])
    trainer.plateau.update(state["freeze"]["plateau"])


def train_timam(
    train: SplitData,
    val: SplitData,
    model_config: ModelConfig,
    config: TrainingConfig,
    *,
    state_path: str | Path | None = None,
    context: DistributedContext | None = None,
) -> tuple[Checkpoint, pd.DataFrame]:
    """Train with frozen pretrained encoders and return the best-on-validation checkpoint and history.

    With ``state_path``, the full training state is saved there after every epoch; a rerun with the
    same inputs resumes from it, and it is deleted once training completes. Under torchrun (or with
    ``context``) the ranks share each global batch; only rank 0 logs and writes the state.
    """
    context = context_from_environment() if context is None else context
    check_batch_divides(config.batch_size, config.samples_per_identity if config.sampler == "identity" else 1, context)
    generator = seed_everything(config.seed)
    device = rank_device(pick_device(config.device), context)
    if context.is_main:
        logger.info(
            "Training on %s x %d: %d train captions, %d val captions",
            device, context.world_size, train.num_captions, val.num_captions,
        )
    model = model_to(TimamModel(model_config), device)
    cached_train, cached_val = (
        CachedSplit(model, split, batch_size=config.embed_batch_size, device=device, show_progress=context.is_main,
                    cache_dir=config.feature_cache_dir, per_view=per_view)
        for split, per_view in ((train, True), (val, False))
    )
    trainer = TimamTrainer(model, cached_train, cached_val, config, device, context)
    trainer.set_epoch(1)
    # Where and how often the run saves does not change what it computes: a state saved with other
    # such settings resumes.
    run_only = {"state_path", "save_every_steps", "feature_cache_dir"}
    outcome_config = {key: value for key, value in asdict(config).items() if key not in run_only}
    fingerprint = run_fingerprint(model_config.to_dict(), outcome_config, train.caption_ids, val.caption_ids)
    run_progress: dict[str, Any] = {
        "fingerprint": fingerprint, "epoch": 0, "best_score": -1.0, "best_epoch": 0, "history": [],
        "best_model": changing_state(model, config),
    }
    # Rank 0 reads the state and hands it to the others, so all ranks resume from the same point.
    saved = broadcast_from_main(load_state(state_path, fingerprint) if state_path and context.is_main else None, context)
    partial = None
    if saved is not None:
        _restore(trainer, saved, generator)
        trainer.set_epoch(saved["epoch"])
        run_progress = {key: saved[key] for key in run_progress}
        if saved.get("partial_epoch"):
            partial = EpochProgress.from_state(saved["partial_epoch"])
            partial.batches = [global_batch(batch, context) for batch in partial.batches]  # another world size
    trainer.prepare_caches()

    def save_mid_epoch(epoch_progress: EpochProgress) -> None:
        every = config.save_every_steps
        last = epoch_progress.step == len(epoch_progress.batches)  # the epoch-end save follows
        if state_path and context.is_main and every and epoch_progress.step % every == 0 and not last:
            save_state(state_path, _state_dict(trainer, run_progress, generator, epoch_progress))

    bar = tqdm(
        range(run_progress["epoch"] + 1, config.epochs + 1), desc="training epochs", initial=run_progress["epoch"],
        total=config.epochs, disable=not context.is_main,
    )
    for epoch in bar:
        row = trainer.run_epoch(epoch, generator, partial if partial and partial.epoch == epoch else None, save_mid_epoch)
        run_progress["history"].append(row)
        score = row["val_t2i_R@1"]
        if score > run_progress["best_score"]:
            run_progress.update(best_score=score, best_epoch=epoch, best_model=changing_state(model, config))
        run_progress["epoch"] = epoch
        if state_path and context.is_main:
            save_state(state_path, _state_dict(trainer, run_progress, generator))
        if not context.is_main:
            continue
        bar.set_postfix(loss=f"{row['loss_total']:.3f}", val_r1=f"{score:.1f}", best=f"{run_progress['best_score']:.1f}")
        logger.info(
            "epoch %d: loss %.4f, val t2i R@1 %.2f (best %.2f at epoch %d)",
            epoch, row["loss_total"], score, run_progress["best_score"], run_progress["best_epoch"],
        )
    model = model.cpu()
    model.load_state_dict(run_progress["best_model"], strict=False)
    model.eval()
    metadata = {
        "best_epoch": run_progress["best_epoch"],
        "val_t2i_R@1": run_progress["best_score"],
        "training": asdict(config),
        "train_captions": train.num_captions,
        "train_images": len(train.image_paths),
    }
    if state_path and context.is_main:
        Path(state_path).unlink(missing_ok=True)
    return Checkpoint(model=model, metadata=metadata), pd.DataFrame(run_progress["history"])
