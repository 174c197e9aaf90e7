"""Training the pair-score models: SCAN-style projections, or the ACMM-style aligned memory, on cached
frozen regions and words.

SCAN trains on fixed detector features with the hardest-negative triplet loss on its pair
scores; here the regions are a frozen backbone's feature-map cells and the words a frozen
transformer's token states, both computed once per split (and kept on disk with a
``training.feature_cache_dir``, under the same keys rules as TIMAM's caches). ``loss_weights``
may also weight CMPM, computed on the pair-score matrix (``training.score_temperature``), so the
family can share TIMAM's matching objective. The checkpoint is chosen on validation text->image
R@1 only, ranked by the same tie-aware code as every other model. Only the pair scores and their
loss terms are this family's own: the batches, step, schedulers, resume state and checkpoint
choice are the shared loop's (``timam.training.epoch``, ``timam.training.loop.fit``), and the
token states the shared cache's (``timam.training.cached_split.CachedCaptions``).

The ACMM-style model of the attribute family (:class:`~timam.models.attribute_family.AlignedMemoryModel`)
trains on the same path with the same terms: its regions, words and pair scores take the places of
SCAN's, and its image branch also trains the memory items both modalities read and update.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from functools import cached_property

import pandas as pd
import torch

from timam.inference.device import model_to, pick_device, to_device
from timam.inference.interaction import pair_scores, region_outputs
from timam.inference.split_data import SplitData
from timam.losses import cmpm_loss_from_scores, hardest_negative_triplet_from_scores
from timam.models.aligned_memory import AlignedMemoryConfig
from timam.models.attribute_family import AlignedMemoryModel
from timam.models.checkpoint import Checkpoint
from timam.models.families import PairScoreModel
from timam.models.interaction import InteractionConfig, InteractionModel
from timam.retrieval.ranking import score_ranking_metrics
from timam.retrieval.relevance import relevance_labels
from timam.training.cached_split import CachedCaptions
from timam.training.config import HASHING_TERMS, TrainingConfig
from timam.training.determinism import kernel_settings
from timam.training.epoch import SCORE, EpochTrainer
from timam.training.feature_cache import cached_tensor, image_feature_key
from timam.training.loop import fit, outcome_parameters, seed_everything
from timam.training.optimizers import make_optimizer, plateau_schedulers
from timam.training.resume import run_fingerprint

logger = logging.getLogger(__name__)

# Loss terms that need embeddings (classifiers, the modality discriminator) or attribute-hashing
# heads: none exist here.
_EMBEDDING_TERMS = ("identification", "cmpc", "adversarial", *HASHING_TERMS)


def check_interaction_training(config: TrainingConfig) -> None:
    """Refuse the settings an interaction run cannot honour, naming the parameter to change.

    Not honoured either, by design of a minutes-long heads-only run: ``cache_device`` (regions stay
    in host memory and each batch is copied) and torchrun (one process trains).
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


class InteractionSplit(CachedCaptions):
    """A split's frozen regions (every view in ``views``) and token states, computed once (and kept
    on disk with a ``training.feature_cache_dir``)."""

    model: PairScoreModel

    def __init__(
        self,
        model: PairScoreModel,
        data: SplitData,
        views: tuple[int, ...],
        config: TrainingConfig,
        device: torch.device,
        show_progress: bool = True,
    ) -> None:
        super().__init__(
            model,
            data,
            batch_size=config.embed_batch_size,
            device=device,
            show_progress=show_progress,
            cache_dir=config.feature_cache_dir,
            precision=config.precision,
        )
        self.views, self.config = views, config

    @cached_property
    def regions(self) -> torch.Tensor:
        """``(views, images, cells, channels)`` float16."""
        key = image_feature_key(
            self.model.config, self.data.image_paths, self.device, precision=self.precision, region_views=self.views
        )
        regions = cached_tensor(
            self.cache_dir,
            key,
            lambda: region_outputs(
                self.model,
                self.data.image_paths,
                views=self.views,
                batch_size=self.batch_size,
                device=self.device,
                desc=f"{self.data.split} regions",
                show_progress=self.show_progress,
                precision=self.precision,
            ),
        )
        logger.info("%s regions: %.2f GB (%s, float16)", self.data.split, regions.nbytes / 1e9, tuple(regions.shape))
        return regions


class InteractionTrainer(EpochTrainer):
    """The heads on the shared epoch loop: one optimiser per branch (regions: "image", words:
    "text") with its plateau scheduler; a batch's terms come from its pair scores, validation ranks
    the pair scores of the validation split."""

    model: PairScoreModel
    train: InteractionSplit
    val: InteractionSplit

    def __init__(self, model: PairScoreModel, train: InteractionSplit, val: InteractionSplit) -> None:
        super().__init__(model, train, val, train.config, train.device)
        image, text = branch_parameters(model)
        self.optimizers = {
            "image": make_optimizer(image, self.config.image_optimizer),
            "text": make_optimizer(text, self.config.text_optimizer),
        }
        self.schedulers = plateau_schedulers(self.optimizers, self.config.schedule)

    def named_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.optimizers

    def changing_state(self) -> dict[str, torch.Tensor]:
        return head_state(self.model)

    def set_train_mode(self) -> None:
        """The projections train; the frozen backbone and transformer stay in eval mode."""
        self.model.train()
        self.model.backbone.eval()
        self.model.transformer.eval()

    def batch_inputs(self, shares: list[torch.Tensor], generator: torch.Generator) -> Iterator[torch.Tensor]:
        """One random view of each caption's image, drawn from the batch generator as each step comes."""
        for captions in shares:
            yield torch.randint(len(self.train.views), (len(captions),), generator=generator)

    def loss_terms(self, batch: torch.Tensor, inputs: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        """The terms of one batch: its captions against their own images (in the views ``inputs``)."""
        data, device = self.train.data, self.device
        images = data.caption_image[batch]
        regions = to_device(self.train.regions[inputs, images], device)
        scores = self.model.scores(
            regions,
            to_device(self.train.token_states[batch], device),
            to_device(self.train.attention_mask[batch], device),
        ).t()  # (images, captions): row i is the image of caption i
        match_ids = images if self.config.matching == "instance" else data.caption_labels[batch]
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

    def validate(self) -> dict[str, float]:
        """Text->image R@1 (expected over ties) under ``training.validation_relevance``."""
        val = self.val
        scores = pair_scores(self.model, val.regions[0], val.token_states, val.attention_mask, device=self.device)
        image_labels, text_labels = relevance_labels(
            image_identity=val.data.image_identity,
            caption_identity=val.data.caption_identity,
            caption_image=val.data.caption_image,
            relevance=self.config.validation_relevance,
        )
        metrics = score_ranking_metrics(scores, text_labels, image_labels, ks=(1,), metrics=("R@K",))
        return {SCORE: metrics["expected"]["R@1"]}


def branch_parameters(model: PairScoreModel) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """The image branch's and the text branch's trained parameters (an ACMM-style model's memory
    items, read and written by both modalities, train with the image branch)."""
    if isinstance(model, AlignedMemoryModel):
        memory = model.memory
        image = [*memory.region_projection.parameters(), *memory.image_interface.parameters(), memory.memory]
        return image, [*memory.word_projection.parameters(), *memory.text_interface.parameters()]
    return list(model.region_projection.parameters()), list(model.word_projection.parameters())


def head_state(model: PairScoreModel) -> dict[str, torch.Tensor]:
    """What training changes: everything but the frozen backbone and transformer (pretrained weights)."""
    frozen = ("backbone.", "transformer.")
    return {name: t.detach().cpu().clone() for name, t in model.state_dict().items() if not name.startswith(frozen)}


def pair_score_model(config: InteractionConfig | AlignedMemoryConfig) -> PairScoreModel:
    """The untrained pair-score model of ``config`` (SCAN-style or ACMM-style), its encoders loaded."""
    return AlignedMemoryModel(config) if isinstance(config, AlignedMemoryConfig) else InteractionModel(config)


def train_interaction(
    train: SplitData, val: SplitData, model_config: InteractionConfig | AlignedMemoryConfig, config: TrainingConfig
) -> tuple[Checkpoint, pd.DataFrame]:
    """Train the heads and return the best-on-validation checkpoint and the history; with
    ``training.state_path`` the run saves and resumes its state as every family does
    (:func:`~timam.training.loop.fit`)."""
    check_interaction_training(config)
    started = time.perf_counter()
    with kernel_settings(config.deterministic):
        generator = seed_everything(config.seed)
        device = pick_device(config.device)
        logger.info("Training the pair-score model on %s: %d train captions", device, train.num_captions)
        model = model_to(pair_score_model(model_config), device)
        trainer = InteractionTrainer(
            model,
            InteractionSplit(model, train, model.views, config, device),
            InteractionSplit(model, val, (0,), config, device),
        )
        fingerprint = run_fingerprint(
            model_config.to_dict(), outcome_parameters(config), train.caption_ids, val.caption_ids
        )
        return fit(trainer, generator, fingerprint, state_path=config.state_path, keep_state=False, started=started)
