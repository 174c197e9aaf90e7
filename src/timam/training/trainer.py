"""The TIMAM trainer: one embedding model, its objective and optimisers, on the shared epoch loop.

Its own file because it is the one piece that both training (``timam.training.loop``) and tuning
(``timam.tuning.objective``) drive epoch by epoch. The loop itself (batches, step, sums, schedulers)
is ``timam.training.epoch``'s; what this family adds lives here or beside it: embedding a batch
(from caches while parts are frozen), the objective's terms, the modality discriminator's steps,
the freeze schedule (``freeze``), the optimisers (``optimizers``), the cached splits
(``cached_split``). It trains the heads on cached frozen outputs while the pretrained parts are
frozen, and the whole model (images decoded every step) once they train.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from timam.inference.device import to_device, to_device_images
from timam.inference.embedding import distinct_captions, image_outputs
from timam.inference.images import train_pixels
from timam.models.dual_encoder import DualEncoderConfig, DualEncoderModel
from timam.models.families import ObjectiveModel
from timam.retrieval.ranking import ranking_metrics
from timam.retrieval.relevance import relevance_labels
from timam.training.cached_split import (
    CachedSplit,
    CaptionImageDataset,
    EpochBatches,
    augmentation_seed,
    cache_device_for,
    caption_image_loader,
)
from timam.training.config import TrainingConfig
from timam.training.distributed import (
    DistributedContext,
    average_gradients,
    barrier,
    broadcast_from_main,
    data_parallel,
    gather_with_grad,
    local_share,
    sync_batchnorm,
    wants_sync_batchnorm,
)
from timam.training.epoch import EpochTrainer
from timam.training.freeze import FreezeSchedule, changing_state, is_trainable, pretrained_parts
from timam.training.objective import TimamObjective
from timam.training.optimizers import Optimizers, plateau_schedulers
from timam.training.pair_encoder import PairEncoder
from timam.training.progress import EpochProgress

logger = logging.getLogger(__name__)


def checkpoint_temperatures(model: ObjectiveModel) -> dict[str, float]:
    """A CLIP-family checkpoint's learned temperature (and SigLIP's bias): the contrastive terms
    continue from them; other models start from the papers' initial values."""
    config = model.config
    if not isinstance(config, DualEncoderConfig):
        return {}
    if config.logit_bias is None:
        return {"logit_scale": config.logit_scale}
    return {"siglip_scale": config.logit_scale, "siglip_bias": config.logit_bias}


class TimamTrainer(EpochTrainer):
    """Holds the model, objective, optimisers and caches; one method per stage of an epoch.

    The freeze schedule (``self.freeze``) decides in which epochs the pretrained parts train;
    frozen parts stay in the optimisers with no gradient (see ``timam.training.optimizers``).
    Under torchrun each rank embeds its share of every global batch and the loss sees them all
    (see ``timam.training.distributed``); every rank validates, so schedulers agree without messages.
    """

    model: ObjectiveModel
    train: CachedSplit
    val: CachedSplit

    def __init__(
        self,
        model: ObjectiveModel,
        train: CachedSplit,
        val: CachedSplit,
        config: TrainingConfig,
        device: torch.device,
        context: DistributedContext | None = None,
    ) -> None:
        super().__init__(model, train, val, config, device, context)
        self.freeze = FreezeSchedule(config.freeze, pretrained_parts(model))
        backbone_trains = "image" not in self.freeze.frozen_throughout
        if wants_sync_batchnorm(config.sync_batchnorm, self.context, device, backbone_trains=backbone_trains):
            # Before DDP wraps it and before the optimisers: the same parameters, in new layers.
            model.image_encoder.backbone = sync_batchnorm(model.image_encoder.backbone)
        self.pair_encoder = PairEncoder(model, device, config.precision)
        self.forward_encoders: nn.Module = self.pair_encoder
        self.wrapped_for: tuple[bool, ...] | None = None
        self.objective = TimamObjective(
            model.config.embedding_dim, model.config.num_classes, config, **checkpoint_temperatures(model)
        ).to(device)
        # Each branch's optimiser is configurable; the paper uses SGD for the image branch.
        self.optimizers = Optimizers.build(model, self.objective, config)
        self.schedulers = plateau_schedulers(self.optimizers.named(), config.schedule)
        # uint8 out of the workers, normalised on the device (to_device_images)
        self.train_transform = train_pixels(
            model.config.preprocessing,
            flip=config.augmentation.flip,
            crop_padding=config.augmentation.crop_padding,
            colour_jitter=config.augmentation.colour_jitter,
        )
        self.epoch_batches = EpochBatches()
        self._image_loader: DataLoader | None = None
        # The last batch's gathered embeddings, detached: what the discriminator trains on after the
        # encoders' backward pass (after_backward).
        self.step_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None

    def named_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.optimizers.named()

    def stepped_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """The encoders' optimisers; the discriminator steps on its own loss (after_backward)."""
        return self.optimizers.encoders

    def changing_state(self) -> dict[str, torch.Tensor]:
        """The whole model but the pretrained parts frozen throughout (see ``freeze.changing_state``)."""
        return changing_state(self.model, self.freeze.frozen_throughout)

    def state(self) -> dict[str, Any]:
        """The shared state plus the objective (classifiers, discriminator) and the freeze schedule."""
        return {
            **super().state(),
            "objective": {k: v.detach().cpu() for k, v in self.objective.state_dict().items()},
            "freeze": self.freeze.to_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.objective.load_state_dict(state["objective"])
        self.freeze.load_state(state["freeze"])

    def set_epoch(self, epoch: int) -> None:
        """Freeze the pretrained parts before their unfreeze epoch, and let them train after it."""
        self.epoch = epoch
        for name, part in pretrained_parts(self.model).items():
            trainable_now = self.freeze.trains(name, epoch)
            if trainable_now and not is_trainable(part) and self.context.is_main:
                logger.info("Epoch %d: %s encoder unfrozen", epoch, name)
            part.requires_grad_(trainable_now)
            if trainable_now and isinstance(self.model, DualEncoderModel):
                self.model.lock(name)  # open_clip's partial tower lock, where the config sets one
        trainable_parts = tuple(is_trainable(part) for part in pretrained_parts(self.model).values())
        if trainable_parts != self.wrapped_for:  # DDP must know every parameter that now trains
            self.forward_encoders = data_parallel(self.pair_encoder, self.device, self.context)
            self.wrapped_for = trainable_parts
        for name in {"image_features", "token_states"} - set(self.cached_parts()):
            for split in (self.train, self.val):
                split.back_to_host(name)  # its GPU memory goes to the part that now trains

    @property
    def image_cached(self) -> bool:
        return not is_trainable(self.model.image_encoder.backbone) and not self.config.augmentation.active

    @property
    def text_cached(self) -> bool:
        parts = pretrained_parts(self.model)
        return "text" in parts and not is_trainable(parts["text"])

    def embed_batch(
        self,
        split: CachedSplit,
        captions: torch.Tensor,
        images: torch.Tensor | None = None,
        views: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of a batch of captions and their images, from the caches where frozen
        (``views``: the view of each caption's image in a per-view cache). The captions' lengths
        come from the mask on the host, before it is copied (the BiLSTM packs on the host)."""
        if images is not None:
            image_input = to_device_images(images, self.device)
        else:
            image_input = to_device(split.image_features_of(captions, views), self.device)
        return self.forward_encoders(
            image_input,
            self.text_input(split, captions),
            to_device(split.attention_mask[captions], self.device),
            image_features_given=images is None,
            token_states_given=self.text_cached,
            lengths=split.lengths_of(captions),
        )

    def embed_texts(self, split: CachedSplit, captions: torch.Tensor) -> torch.Tensor:
        """Caption embeddings, from cached token states while the transformer is frozen."""
        mask = to_device(split.attention_mask[captions], self.device)
        return self.pair_encoder.texts(
            self.text_input(split, captions),
            mask,
            token_states_given=self.text_cached,
            lengths=split.lengths_of(captions),
        )

    def cached_parts(self) -> tuple[str, ...]:
        """The caches the current epoch reads."""
        return ("image_features",) * self.image_cached + ("token_states",) * self.text_cached

    def text_input(self, split: CachedSplit, captions: torch.Tensor) -> torch.Tensor:
        """Cached token states while the transformer is frozen, token ids otherwise, gathered
        where they live (a cache on the GPU gets only the row indices)."""
        source = split.token_states if self.text_cached else split.input_ids
        return to_device(source[to_device(captions, source.device)], self.device)

    def batch_inputs(self, shares: list[torch.Tensor], generator: torch.Generator) -> Iterator[torch.Tensor | None]:
        return self.image_stream(shares)

    def image_stream(self, shares: list[torch.Tensor]) -> Iterator[torch.Tensor | None]:
        """The images of each share of captions, uint8 (None while cached features stand in).

        Each image's augmentation is drawn from its own seed (run seed, epoch, caption: see
        ``augmentation_seed``), so it is the same with any number of workers, ranks or resumes.
        """
        if self.image_cached:
            yield from (None for _ in shares)
            return
        seed, epoch = self.config.seed, self.epoch
        self.epoch_batches.batches = [
            [(caption, augmentation_seed(seed, epoch, caption)) for caption in share.tolist()] for share in shares
        ]
        yield from (images for images, _ in self.image_loader)

    @property
    def image_loader(self) -> DataLoader:
        """The run's one training image loader, built on first use (see ``caption_image_loader``)."""
        if self._image_loader is None:
            self._image_loader = caption_image_loader(
                CaptionImageDataset(self.train.data, self.train_transform),
                self.epoch_batches,
                device=self.device,
                seed=self.config.seed,
            )
        return self._image_loader

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
        self.place_caches()

    def place_caches(self) -> torch.device:
        """Keep the caches in use on the training GPU where ``training.cache_device`` says so (see
        ``cache_device_for``), so that each step gathers its rows there; return where they are."""
        names = self.cached_parts()
        nbytes = sum(getattr(split, name).nbytes for split in (self.train, self.val) for name in names)
        free = torch.cuda.mem_get_info(self.device)[0] if self.device.type == "cuda" else 0
        target = cache_device_for(self.config.cache_device, self.device, nbytes, free)
        for split in (self.train, self.val):
            split.keep_on(target, names)
        if names and self.context.is_main:
            logger.info("Frozen-output caches (%.2f GB) kept on %s", nbytes / 1e9, target)
        return target

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
        labels = to_device(self.train.data.caption_labels[batch], self.device)
        instance = self.config.matching == "instance"
        match_ids = to_device(self.train.data.caption_image[batch], self.device) if instance else labels
        terms = self.objective.terms(image_emb, text_emb, labels, adversarial_on=adversarial_on, match_ids=match_ids)
        return terms, image_emb, text_emb

    def loss_terms(self, batch: torch.Tensor, inputs: torch.Tensor | None, epoch: int) -> dict[str, torch.Tensor]:
        """The objective's terms (the adversarial one after its warm-up epochs); keeps the detached
        embeddings for the discriminator's steps."""
        adversarial_on = epoch > self.config.adversarial.warmup_epochs
        terms, image_emb, text_emb = self.batch_terms(batch, inputs, adversarial_on=adversarial_on)
        self.step_embeddings = image_emb.detach(), text_emb.detach()
        return terms

    def backward(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted total's gradients, equal on every rank to one process's on the global batch."""
        total = super().backward(terms)
        average_gradients([*self.objective.identification.parameters(), *self.objective.temperatures()], self.context)
        return total

    def clip_and_step(self) -> None:
        super().clip_and_step()
        self.objective.after_step()

    def after_backward(self, terms: dict[str, torch.Tensor]) -> None:
        """The discriminator trains on the detached embeddings, apart from the encoders' update:
        stepping it before them lets one check of every term precede the encoders' step."""
        if self.config.loss_weights.adversarial and self.step_embeddings is not None:
            terms["discriminator"] = self.discriminator_steps(*self.step_embeddings)
        self.step_embeddings = None

    def discriminator_steps(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        for _ in range(self.config.adversarial.discriminator_steps):
            loss = self.objective.discriminator_term(image_emb, text_emb)
            self.optimizers.discriminator.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(list(self.objective.discriminator.parameters()), self.context)
            self.optimizers.discriminator.step()
        return loss.detach()

    @torch.no_grad()
    def validation_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Validation images and captions embedded with the current weights (caches where frozen)."""
        self.model.eval()
        data, batch_size = self.val.data, self.config.embed_batch_size
        if self.image_cached:
            image_emb = self.model.image_encoder.projection(self.val.image_features.to(self.device))
        else:
            image_emb = image_outputs(
                self.model,
                data.image_paths,
                project=True,
                batch_size=batch_size,
                device=self.device,
                desc="val images",
                show_progress=self.context.is_main,
                precision=self.config.precision,
            ).to(self.device)
        # One pass per distinct caption: repeats must tie exactly (see distinct_captions).
        first, inverse = distinct_captions(self.val.input_ids, self.val.attention_mask)
        text_emb = torch.cat([self.embed_texts(self.val, chunk) for chunk in first.split(256)])
        return image_emb, text_emb[inverse.to(text_emb.device)]  # float32: projected outside autocast

    def validate(self) -> dict[str, float]:
        """Text->image and image->text R@1 on the validation split (expected value under random ties).

        Only R@K is asked of the ranking: mAP and mINP would need every relevant item's rank.
        """
        image_emb, text_emb = self.validation_embeddings()
        data = self.val.data
        image_labels, text_labels = relevance_labels(
            image_identity=data.image_identity,
            caption_identity=data.caption_identity,
            caption_image=data.caption_image,
            relevance=self.config.validation_relevance,
        )
        image_labels, text_labels = image_labels.to(self.device), text_labels.to(self.device)
        t2i = ranking_metrics(text_emb, image_emb, text_labels, image_labels, ks=(1,), metrics=("R@K",))
        i2t = ranking_metrics(image_emb, text_emb, image_labels, text_labels, ks=(1,), metrics=("R@K",))
        scores = {"val_t2i_R@1": t2i["expected"]["R@1"], "val_i2t_R@1": i2t["expected"]["R@1"]}
        return broadcast_from_main(scores, self.context)  # schedulers and best epoch agree on every rank

    def run_epoch(
        self,
        epoch: int,
        generator: torch.Generator,
        progress: EpochProgress | None = None,
        after_step: Callable[[EpochProgress], None] | None = None,
    ) -> dict[str, Any]:
        """One epoch (see :meth:`EpochTrainer.run_epoch`), then the freeze schedule's plateau rule."""
        row = super().run_epoch(epoch, generator, progress, after_step)
        scheduled = self.freeze.observe(epoch, row["val_t2i_R@1"])
        if scheduled and self.context.is_main:
            logger.info(
                "Validation R@1 flat for %d epochs: %s encoder(s) train from epoch %d",
                self.freeze.patience,
                " and ".join(scheduled),
                epoch + 1,
            )
        return row
