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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from timam.models.checkpoint import Checkpoint
from timam.models.config import ModelConfig
from timam.models.timam import TimamModel
from timam.retrieval.ranking import ranking_metrics
from timam.training.batches import identity_batches, random_batches
from timam.training.config import OptimizerConfig, TrainingConfig
from timam.training.data import SplitData
from timam.training.device import pick_device
from timam.training.embedding import image_outputs, text_outputs
from timam.training.objective import TimamObjective
from timam.training.resume import load_state, restore_rng, rng_state, run_fingerprint, save_state, trainable_state

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return the generator that orders batches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class CachedSplit:
    """Frozen outputs for one split: pooled image features and trimmed float16 token states."""

    def __init__(self, model: TimamModel, data: SplitData, *, batch_size: int, device: torch.device) -> None:
        self.data = data
        self.image_features = image_outputs(
            model, data.image_paths, project=False, batch_size=batch_size, device=device,
            desc=f"{data.split} image features",
        )
        longest = int(data.attention_mask.sum(dim=1).max())
        self.attention_mask = data.attention_mask[:, :longest]
        self.token_states = text_outputs(
            model, data.input_ids[:, :longest], self.attention_mask, project=False, batch_size=batch_size,
            device=device, desc=f"{data.split} token states",
        )


def freeze_pretrained(model: TimamModel) -> None:
    """Freeze the image backbone and the transformer (cached); the heads stay trainable."""
    for parameter in model.image_encoder.backbone.parameters():
        parameter.requires_grad_(False)
    if model.config.text_encoder == "transformer":
        for parameter in model.text_encoder.transformer.parameters():
            parameter.requires_grad_(False)


def make_optimizer(parameters: list[nn.Parameter], config: OptimizerConfig) -> torch.optim.Optimizer:
    if config.name == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)


def trainable(module: nn.Module) -> list[nn.Parameter]:
    return [parameter for parameter in module.parameters() if parameter.requires_grad]


class TimamTrainer:
    """Holds the model, objective, optimisers and caches; one method per stage of an epoch."""

    def __init__(
        self, model: TimamModel, train: CachedSplit, val: CachedSplit, config: TrainingConfig, device: torch.device
    ) -> None:
        self.model, self.train, self.val, self.config, self.device = model, train, val, config, device
        self.objective = TimamObjective(model.config.embedding_dim, model.config.num_classes, config).to(device)
        # Image branch and discriminator: the paper's SGD; text branch and classifiers: Adam.
        self.encoder_optimizers = [
            make_optimizer(trainable(model.image_encoder), config.image_optimizer),
            make_optimizer(trainable(model.text_encoder) + trainable(self.objective.identification), config.text_optimizer),
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

    def embed_batch(self, split: CachedSplit, captions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = split.image_features[split.data.caption_image[captions]].to(self.device)
        image_emb = self.model.image_encoder.projection(images)
        states = split.token_states[captions].to(self.device)
        mask = split.attention_mask[captions].to(self.device)
        return image_emb, self.model.text_encoder.encode_states(states, mask)

    def batches(self, generator: torch.Generator) -> list[torch.Tensor]:
        labels = self.train.data.caption_labels
        if self.config.sampler == "identity":
            return identity_batches(labels, self.config.batch_size, self.config.samples_per_identity, generator)
        return random_batches(len(labels), self.config.batch_size, generator)

    def train_epoch(self, epoch: int, generator: torch.Generator) -> dict[str, float]:
        self.model.train()
        adversarial_on = epoch > self.config.adversarial.warmup_epochs
        sums: dict[str, float] = {}
        batches = self.batches(generator)
        for step, captions in enumerate(batches):
            image_emb, text_emb = self.embed_batch(self.train, captions)
            labels = self.train.data.caption_labels[captions].to(self.device)
            terms = self.objective.terms(image_emb, text_emb, labels, adversarial_on=adversarial_on)
            for name, value in terms.items():
                if not torch.isfinite(value):
                    raise FloatingPointError(f"Loss term {name!r} is {value.item()} at epoch {epoch}, step {step}")
            total = self.objective.total(terms)
            for optimizer in self.encoder_optimizers:
                optimizer.zero_grad(set_to_none=True)
            total.backward()
            if self.config.grad_clip > 0:
                nn.utils.clip_grad_norm_(trainable(self.model) + trainable(self.objective), self.config.grad_clip)
            for optimizer in self.encoder_optimizers:
                optimizer.step()
            if self.config.loss_weights.adversarial:
                terms["discriminator"] = self.discriminator_steps(image_emb.detach(), text_emb.detach())
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            sums["total"] = sums.get("total", 0.0) + float(total.detach())
        return {f"loss_{name}": value / max(1, len(batches)) for name, value in sums.items()}

    def discriminator_steps(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        for _ in range(self.config.adversarial.discriminator_steps):
            loss = self.objective.discriminator_term(image_emb, text_emb)
            self.discriminator_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.discriminator_optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Text->image and image->text R@1 on the validation split (identity relevance, expected ties)."""
        self.model.eval()
        data = self.val.data
        image_emb = self.model.image_encoder.projection(self.val.image_features.to(self.device))
        text_emb = torch.cat(
            [self.embed_batch(self.val, chunk)[1] for chunk in torch.arange(data.num_captions).split(256)]
        )
        t2i = ranking_metrics(text_emb, image_emb, data.caption_identity.to(self.device), data.image_identity.to(self.device), ks=(1,))
        i2t = ranking_metrics(image_emb, text_emb, data.image_identity.to(self.device), data.caption_identity.to(self.device), ks=(1,))
        return {"val_t2i_R@1": t2i["expected"]["R@1"], "val_i2t_R@1": i2t["expected"]["R@1"]}

    def learning_rate(self) -> float:
        return self.encoder_optimizers[1].param_groups[0]["lr"]


def _state_dict(trainer: TimamTrainer, progress: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
    return {
        **progress,
        "model": trainable_state(trainer.model),
        "objective": {k: v.detach().cpu() for k, v in trainer.objective.state_dict().items()},
        "optimizers": [o.state_dict() for o in (*trainer.encoder_optimizers, trainer.discriminator_optimizer)],
        "schedulers": [s.state_dict() for s in trainer.schedulers],
        "rng": rng_state(generator),
    }


def _restore(trainer: TimamTrainer, state: dict[str, Any], generator: torch.Generator) -> None:
    trainer.model.load_state_dict(state["model"], strict=False)
    trainer.objective.load_state_dict(state["objective"])
    for optimizer, saved in zip((*trainer.encoder_optimizers, trainer.discriminator_optimizer), state["optimizers"], strict=True):
        optimizer.load_state_dict(saved)
    for scheduler, saved in zip(trainer.schedulers, state["schedulers"], strict=True):
        scheduler.load_state_dict(saved)
    restore_rng(state["rng"], generator)


def train_timam(
    train: SplitData,
    val: SplitData,
    model_config: ModelConfig,
    config: TrainingConfig,
    *,
    state_path: str | Path | None = None,
) -> tuple[Checkpoint, pd.DataFrame]:
    """Train with frozen pretrained encoders and return the best-on-validation checkpoint and history.

    With ``state_path``, the full training state is saved there after every epoch; a rerun with the
    same inputs resumes from it, and it is deleted once training completes.
    """
    generator = seed_everything(config.seed)
    device = pick_device(config.device)
    logger.info("Training on %s: %d train captions, %d val captions", device, train.num_captions, val.num_captions)
    model = TimamModel(model_config).to(device)
    freeze_pretrained(model)
    cached_train = CachedSplit(model, train, batch_size=config.embed_batch_size, device=device)
    cached_val = CachedSplit(model, val, batch_size=config.embed_batch_size, device=device)
    trainer = TimamTrainer(model, cached_train, cached_val, config, device)
    fingerprint = run_fingerprint(model_config.to_dict(), asdict(config), train.caption_ids, val.caption_ids)
    progress: dict[str, Any] = {
        "fingerprint": fingerprint, "epoch": 0, "best_score": -1.0, "best_epoch": 0, "history": [],
        "best_model": trainable_state(model),
    }
    saved = load_state(state_path, fingerprint) if state_path else None
    if saved is not None:
        _restore(trainer, saved, generator)
        progress = {key: saved[key] for key in progress}
    bar = tqdm(range(progress["epoch"] + 1, config.epochs + 1), desc="training epochs", initial=progress["epoch"], total=config.epochs)
    for epoch in bar:
        started = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch, "lr": trainer.learning_rate()}
        row.update(trainer.train_epoch(epoch, generator))
        row.update(trainer.validate())
        row["seconds"] = time.perf_counter() - started
        progress["history"].append(row)
        score = row["val_t2i_R@1"]
        for scheduler in trainer.schedulers:
            scheduler.step(score)
        if score > progress["best_score"]:
            progress.update(best_score=score, best_epoch=epoch, best_model=trainable_state(model))
        progress["epoch"] = epoch
        if state_path:
            save_state(state_path, _state_dict(trainer, progress, generator))
        bar.set_postfix(loss=f"{row['loss_total']:.3f}", val_r1=f"{score:.1f}", best=f"{progress['best_score']:.1f}")
        logger.info(
            "epoch %d: loss %.4f, val t2i R@1 %.2f (best %.2f at epoch %d)",
            epoch, row["loss_total"], score, progress["best_score"], progress["best_epoch"],
        )
    model = model.cpu()
    model.load_state_dict(progress["best_model"], strict=False)
    model.eval()
    metadata = {
        "best_epoch": progress["best_epoch"],
        "val_t2i_R@1": progress["best_score"],
        "training": asdict(config),
        "train_captions": train.num_captions,
        "train_images": len(train.image_paths),
    }
    if state_path:
        Path(state_path).unlink(missing_ok=True)
    return Checkpoint(model=model, metadata=metadata), pd.DataFrame(progress["history"])
