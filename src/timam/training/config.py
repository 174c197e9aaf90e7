"""``params:training``, typed: every training knob with its default, bounds and meaning.

Each default here equals ``conf/base/parameters_train.yml`` (a test checks), and each field's
docstring is the line of the configuration reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)

from timam.config import ParameterBlock, build, set_by_conf
from timam.inference.config import DeviceName, Precision


class OptimizerConfig(ParameterBlock):
    """One branch's optimiser."""

    name: Literal["sgd", "adam"] = "adam"
    """sgd (with momentum) | adam"""
    lr: PositiveFloat = 1e-3
    """learning rate"""
    weight_decay: NonNegativeFloat = 4e-4
    """L2 weight decay"""
    momentum: float = Field(default=0.9, ge=0, lt=1)
    """sgd only"""


# The attribute-hashing heads' terms (timam.training.hashing): no other model has what they train.
HASHING_TERMS = ("attribute_prediction", "similarity_preserving", "quantization")


class LossWeights(ParameterBlock):
    """Weight of each loss term; 0 switches a term off. The default is TIMAM's objective L_I + L_M + L_D."""

    identification: NonNegativeFloat = 1.0
    """norm-softmax identity classification (L_I)"""
    cmpm: NonNegativeFloat = 1.0
    """cross-modal projection matching, both ways (L_M)"""
    cmpc: NonNegativeFloat = 0.0
    """cross-modal projection classification"""
    adversarial: NonNegativeFloat = 1.0
    """the modality discriminator's term (L_D)"""
    triplet: NonNegativeFloat = 0.0
    """VSE++ hardest-negative triplet"""
    infonce: NonNegativeFloat = 0.0
    """CLIP's symmetric InfoNCE with a learnable temperature"""
    sdm: NonNegativeFloat = 0.0
    """IRRA's similarity distribution matching (training.sdm_temperature)"""
    siglip: NonNegativeFloat = 0.0
    """SigLIP's pairwise sigmoid loss with a learnable temperature and bias"""
    attribute_prediction: NonNegativeFloat = 0.0
    """attribute hashing (AgNet-style): multi-label cross-entropy of each modality's attribute logits
    against the attribute vocabulary's targets (L_a)"""
    similarity_preserving: NonNegativeFloat = 0.0
    """attribute hashing: the cross-modal likelihood of same-identity pairs under the relaxed codes'
    inner products (L_s, DCMH's)"""
    quantization: NonNegativeFloat = 0.0
    """attribute hashing: the relaxed codes' squared distance to their signs (L_q)"""


class AdversarialConfig(ParameterBlock):
    """How the encoders fool the modality discriminator, and GAN balancing knobs (used when
    ``loss_weights.adversarial`` > 0)."""

    mode: Literal["flip", "reverse"] = "flip"
    """flip (encoders trained on flipped modality labels) | reverse (gradient reversal)"""
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    """one-sided: the discriminator's image target is 1 - s"""
    discriminator_steps: PositiveInt = 1
    """discriminator updates per encoder update"""
    warmup_epochs: NonNegativeInt = 1
    """the adversarial term joins the loss after this epoch"""
    hidden_dim: PositiveInt = 256
    """discriminator hidden layer"""


class ScheduleConfig(ParameterBlock):
    """Every learning rate times ``factor`` when validation R@1 has not improved for ``patience``
    epochs, down to ``min_lr``."""

    factor: float = Field(default=0.1, gt=0, lt=1)
    """multiplies every learning rate on a plateau"""
    patience: NonNegativeInt = 2
    """epochs without improvement before the cut"""
    min_lr: NonNegativeFloat = 2e-6
    """no learning rate goes below this"""


def _check_unfreeze(value: int | str | None) -> int | str | None:
    if value is None or value == "plateau" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise ValueError("must be null, an epoch >= 0 or 'plateau'")


# None: frozen throughout; N >= 0: trained after epoch N; "plateau": once validation stops improving.
UnfreezeAfter = Annotated[int | str | None, Field(union_mode="left_to_right"), AfterValidator(_check_unfreeze)]


class FreezeConfig(ParameterBlock):
    """When the pretrained parts start training: null keeps them frozen (and cached) throughout,
    0 trains them from the first epoch, N unfreezes them after epoch N (the paper's BERT schedule),
    "plateau" unfreezes them once validation R@1 has not improved for ``plateau_patience`` epochs
    (the heads have learned what they can on frozen features)."""

    image_backbone_epochs: UnfreezeAfter = None
    """the image backbone: null (frozen, features cached) | N | plateau"""
    text_model_epochs: UnfreezeAfter = None
    """the transformer: null (frozen, token states cached) | N | plateau"""
    plateau_patience: PositiveInt = 2
    """epochs without improvement that count as a plateau"""


class AugmentationConfig(ParameterBlock):
    """Training image augmentation; any of it means image features are computed every step (no cache)."""

    flip: bool = False
    """horizontal flip"""
    crop_padding: NonNegativeInt = 0
    """padded random crop: pixels of padding"""
    colour_jitter: NonNegativeFloat = 0.0
    """colour jitter strength"""

    @property
    def active(self) -> bool:
        return self.flip or self.crop_padding > 0 or self.colour_jitter > 0


def _auto_or_bool(value: object) -> object:
    if value == "auto" or isinstance(value, bool):
        return value
    raise ValueError("must be auto, true or false")


class TrainingConfig(ParameterBlock):
    """How a model trains: data order, losses, optimisers, schedules, freezing, devices, resume."""

    seed: int = 0
    """model init, batch order, augmentation"""
    device: DeviceName = "auto"
    """auto picks CUDA when present | cpu | cuda | cuda:1"""
    epochs: PositiveInt = 15
    """training epochs (the best on validation is kept)"""
    batch_size: int = Field(default=64, ge=2)
    """the global batch (split over ranks under torchrun)"""
    sampler: Literal["random", "identity"] = "random"
    """random | identity (P identities x K captions)"""
    samples_per_identity: PositiveInt = 4
    """K of the identity sampler"""
    shared_classifier: bool = True
    """one identification classifier for both modalities"""
    triplet_margin: NonNegativeFloat = 0.2
    """margin of the hardest-negative triplet loss (loss_weights.triplet)"""
    score_temperature: PositiveFloat = 0.05
    """interaction models: CMPM on softmax(pair scores / this)"""
    sdm_temperature: PositiveFloat = 0.02
    """SDM's fixed temperature tau (IRRA: 0.02)"""
    grad_clip: NonNegativeFloat = 0.0
    """max gradient norm; 0: no clipping"""
    embed_batch_size: PositiveInt = 64
    """batch of the (no-grad) validation and feature-cache embedding"""
    validation_relevance: Literal["identity", "instance"] = "identity"
    """relevance of the validation R@1 that selects the checkpoint: identity (same person or class) |
    instance (a caption's own image); match evaluation.relevance"""
    matching: Literal["identity", "instance"] = "identity"
    """positives of the matching losses (CMPM, triplet): identity (every same-identity pair in a batch,
    as TIMAM) | instance (only a caption and its own image)"""
    state_path: str | None = set_by_conf(None)
    """the full training state, saved after every epoch: rerunning the same command after a crash
    resumes from it (null: off; conf/base keeps it under globals caches.training_state)"""
    save_every_steps: NonNegativeInt = 0
    """also save the resume state every N steps inside an epoch (long GPU epochs); 0: at epoch ends"""
    feature_cache_dir: str | None = set_by_conf(None)
    """frozen encoders' outputs kept on disk, keyed by encoders, image files and tokens (null: memory
    only; conf/base keeps them under globals caches.frozen_features)"""
    precision: Precision = "auto"
    """compute dtype of the image backbone and the transformer while training: auto (bfloat16 on CUDA,
    float32 on the CPU) | float32 | bfloat16 (also on the CPU); projections, embeddings and losses
    stay float32"""
    sync_batchnorm: Annotated[Literal["auto"] | bool, BeforeValidator(_auto_or_bool)] = "auto"
    """SyncBatchNorm under DDP: auto (when several GPU ranks train the backbone) | true | false"""
    deterministic: bool = False
    """true: deterministic CUDA kernels, cudnn.benchmark off (bitwise repeatable GPU runs, slower)"""
    cache_device: Literal["auto", "cpu", "cuda"] = "auto"
    """where the frozen outputs' caches live while training: auto (on the GPU when they fit in a
    quarter of its free memory; host memory otherwise and on the CPU) | cpu | cuda"""
    freeze: FreezeConfig = FreezeConfig()
    augmentation: AugmentationConfig = AugmentationConfig()
    loss_weights: LossWeights = LossWeights()
    adversarial: AdversarialConfig = AdversarialConfig()
    image_optimizer: OptimizerConfig = OptimizerConfig()
    """the image branch's optimiser (the paper: SGD, lr 2e-4)"""
    text_optimizer: OptimizerConfig = OptimizerConfig()
    """the text branch's optimiser (the paper: Adam, lr 2e-4)"""
    discriminator_optimizer: OptimizerConfig = OptimizerConfig(name="sgd", lr=2e-4)
    """the modality discriminator's optimiser (the paper: SGD, lr 2e-4)"""
    schedule: ScheduleConfig = ScheduleConfig()


def training_config(values: Mapping[str, Any] | TrainingConfig | None, path: str = "training") -> TrainingConfig:
    """Build from ``params:training``, naming any misspelt key with its full path and the nearest known key."""
    return build(TrainingConfig, values, path)
