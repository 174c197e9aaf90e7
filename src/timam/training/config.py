"""Training settings as a typed tree built from ``params:training`` (unknown keys are errors), and the
dict helpers (``flatten``, ``deep_merge``) that tuning and the ablation use on parameter trees."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from timam.config_tree import build_config
from timam.inference.device import PRECISIONS
from timam.models.config import check_model_parameters

CACHE_DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class OptimizerConfig:
    """One branch's optimiser: "sgd" (momentum) or "adam"."""

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 4e-4
    momentum: float = 0.9


@dataclass(frozen=True)
class LossWeights:
    """Weight of each loss term; 0 switches a term off."""

    identification: float = 1.0
    cmpm: float = 1.0
    cmpc: float = 0.0
    adversarial: float = 0.0
    triplet: float = 0.0


@dataclass(frozen=True)
class AdversarialConfig:
    """How the encoders fool the modality discriminator, and GAN balancing knobs."""

    mode: str = "flip"
    label_smoothing: float = 0.1
    discriminator_steps: int = 1
    warmup_epochs: int = 1
    hidden_dim: int = 256

    def __post_init__(self) -> None:
        if self.mode not in {"flip", "reverse"}:
            raise ValueError(f"training.adversarial.mode must be 'flip' or 'reverse', got {self.mode!r}")
        if self.discriminator_steps < 1:
            raise ValueError("training.adversarial.discriminator_steps must be >= 1")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError("training.adversarial.label_smoothing must be in [0, 1)")


@dataclass(frozen=True)
class ScheduleConfig:
    """Divide every learning rate by 1/factor when validation R@1 stops improving, down to min_lr."""

    factor: float = 0.1
    patience: int = 2
    min_lr: float = 2e-6


@dataclass(frozen=True)
class FreezeConfig:
    """When the pretrained parts start training: None keeps them frozen (and cached) throughout,
    0 trains them from the first epoch, N unfreezes them after epoch N (the paper's BERT schedule),
    "plateau" unfreezes them once validation R@1 has not improved for ``plateau_patience`` epochs
    (the heads have learned what they can on frozen features)."""

    image_backbone_epochs: int | str | None = None
    text_model_epochs: int | str | None = None
    plateau_patience: int = 2

    def __post_init__(self) -> None:
        for name in ("image_backbone_epochs", "text_model_epochs"):
            value = getattr(self, name)
            if not (value is None or value == "plateau" or (isinstance(value, int) and value >= 0)):
                raise ValueError(f"training.freeze.{name} must be null, an epoch >= 0 or 'plateau', got {value!r}")
        if self.plateau_patience < 1:
            raise ValueError(f"training.freeze.plateau_patience must be >= 1, got {self.plateau_patience}")


@dataclass(frozen=True)
class AugmentationConfig:
    """Training image augmentation; any of it means image features are computed every step."""

    flip: bool = False
    crop_padding: int = 0
    colour_jitter: float = 0.0

    @property
    def active(self) -> bool:
        return self.flip or self.crop_padding > 0 or self.colour_jitter > 0


@dataclass(frozen=True)
class TrainingConfig:
    seed: int = 0
    device: str = "auto"
    epochs: int = 15
    batch_size: int = 64
    sampler: str = "random"
    samples_per_identity: int = 4
    shared_classifier: bool = True
    triplet_margin: float = 0.2
    # CMPM on an interaction model's pair scores: softmax(scores / score_temperature) (no embeddings).
    score_temperature: float = 0.05
    grad_clip: float = 0.0
    embed_batch_size: int = 64
    # Relevance for the validation R@1 that selects the checkpoint: "identity" (same person or
    # class) or "instance" (a caption's own image); match evaluation.relevance.
    validation_relevance: str = "identity"
    # Positives of the matching losses (CMPM, triplet): "identity" (every same-identity pair in a
    # batch, as TIMAM) or "instance" (only a caption and its own image; for instance retrieval).
    matching: str = "identity"
    # Where the full training state is saved after every epoch (resume after a crash); None: off.
    state_path: str | None = None
    # Also save it every N training steps inside an epoch (long GPU epochs); 0: at epoch ends only.
    save_every_steps: int = 0
    # Frozen encoders' outputs kept here for later runs over the same data and encoders; None: memory only.
    feature_cache_dir: str | None = None
    # The dtype the image backbone and the transformer compute in: "auto" (bfloat16 on CUDA, float32
    # on the CPU), "float32" or "bfloat16" (also on the CPU). Projections, embeddings and losses
    # are float32 whatever this says.
    precision: str = "auto"
    # SyncBatchNorm in the image backbone under DDP: "auto" (when several GPU ranks train the
    # backbone: BatchNorm statistics over the global batch, not each rank's share), True or False.
    sync_batchnorm: bool | str = "auto"
    # Deterministic kernels (cudnn.deterministic, torch.use_deterministic_algorithms,
    # CUBLAS_WORKSPACE_CONFIG, cudnn.benchmark off): bitwise repeatable GPU runs, slower steps.
    deterministic: bool = False
    # Where the frozen outputs' caches live while training: "auto" (on the GPU when they fit in a
    # quarter of its free memory, so each step gathers its rows there instead of on the host and
    # copying them; on the CPU nothing changes), "cpu" (host memory) or "cuda" (the training GPU).
    cache_device: str = "auto"
    loss_weights: LossWeights = field(default_factory=LossWeights)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    image_optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    text_optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    discriminator_optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def __post_init__(self) -> None:
        if self.sampler not in {"random", "identity"}:
            raise ValueError(f"training.sampler must be 'random' or 'identity', got {self.sampler!r}")
        if self.matching not in {"identity", "instance"}:
            raise ValueError(f"training.matching must be 'identity' or 'instance', got {self.matching!r}")
        if self.validation_relevance not in {"identity", "instance"}:
            raise ValueError(
                f"training.validation_relevance must be 'identity' or 'instance', got {self.validation_relevance!r}"
            )
        if self.score_temperature <= 0:
            raise ValueError(f"training.score_temperature must be positive, got {self.score_temperature}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("training.epochs must be >= 1 and training.batch_size >= 2")
        if self.precision not in PRECISIONS:
            raise ValueError(f"training.precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.sync_batchnorm not in (True, False, "auto"):
            raise ValueError(f"training.sync_batchnorm must be auto, true or false, got {self.sync_batchnorm!r}")
        if self.cache_device not in CACHE_DEVICES:
            raise ValueError(f"training.cache_device must be one of {list(CACHE_DEVICES)}, got {self.cache_device!r}")
        if not isinstance(self.deterministic, bool):
            raise ValueError(f"training.deterministic must be true or false, got {self.deterministic!r}")
        if self.save_every_steps < 0:
            raise ValueError(
                f"training.save_every_steps must be >= 0 (0: at epoch ends only), got {self.save_every_steps}"
            )
        for name in ("image_optimizer", "text_optimizer", "discriminator_optimizer"):
            if getattr(self, name).name not in {"sgd", "adam"}:
                raise ValueError(f"training.{name}.name must be 'sgd' or 'adam'")


def training_config(values: Mapping[str, Any] | TrainingConfig | None, path: str = "training") -> TrainingConfig:
    """Build from ``params:training``, naming any misspelt key with its full path and the nearest known key."""
    return build_config(TrainingConfig, values, path)


@dataclass(frozen=True)
class AblationVariant:
    """One variant of the ablation: overrides of the base ``model`` and ``training`` parameters."""

    model: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AblationConfig:
    """``params:ablation``: the variants by name (they must match the ablation pipeline's VARIANTS)."""

    variants: dict[str, AblationVariant] = field(default_factory=dict)

    def variant_parameters(
        self, name: str, model: Mapping[str, Any], training: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The base ``model`` and ``training`` parameters with variant ``name``'s overrides merged in."""
        if name not in self.variants:
            raise ValueError(f"params ablation.variants has no entry {name!r}; it must list {name!r}")
        variant = self.variants[name]
        return deep_merge(model, variant.model), deep_merge(training, variant.training)


def ablation_config(
    values: Mapping[str, Any] | AblationConfig | None,
    *,
    model: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
) -> AblationConfig:
    """Build from ``params:ablation``; with the base ``model`` and ``training`` blocks, also check that
    every variant's merged parameters build (an override's misspelt key names the variant)."""
    config = build_config(AblationConfig, values, "ablation")
    if training is not None:
        for name in config.variants:
            merged_model, merged_training = config.variant_parameters(name, model or {}, training)
            training_config(merged_training, f"ablation.variants.{name}.training")
            check_model_parameters(merged_model, f"ablation.variants.{name}.model")
    return config


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters as ``{"a.b.c": leaf}``: the dotted keys of ``--params`` and of tables."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, nested dictionaries key by key (neither is changed)."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
