"""CLIP-family dual encoders as timam embedding models: towers from open_clip or transformers.

The towers come from a pretrained joint image-text model -- any open_clip architecture with a local
checkpoint file (open_clip's format, which RemoteCLIP and GeoRSCLIP ship) or a pretrained tag, or
transformers' ``CLIPModel`` / ``SiglipModel`` from a local directory or a hub name -- and every
timam objective trains on them (identification, CMPM, the adversarial term, triplet, and the
contrastive losses of :mod:`timam.losses.contrastive`).

The model has the shape of :class:`~timam.models.timam.TimamModel`, so the trainer, the caches and
the freeze schedule need no branch: the image tower is ``image_encoder.backbone`` and its output
the features a frozen run caches; the text tower (the library model without its image parts) is
``text_encoder.transformer`` and its pooled text embedding stands for the token states. On top of
each tower sits a linear map initialised to the identity, so a model that no run trained embeds
exactly as the library does (zero-shot), and with frozen towers the maps alone can adapt.

Each tower is called through the library's own method (``CLIP.encode_image`` / ``encode_text``,
``get_image_features`` / ``get_text_features``): the image tower is moved out of the library model
into a module of its own and the library's unbound method runs on it, so nothing of the
architecture is re-implemented. The checkpoint's image preprocessing (size, resize rule,
interpolation, mean, std) and its learned temperature are read from the library and recorded.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from timam.config import build, set_from_data
from timam.models.config import DualEncoderSource, ImageSize
from timam.models.preprocessing import ImagePreprocessing, Interpolation, ResizeRule

DUAL_ENCODER_FAMILY = "dual_encoder"
OPEN_CLIP_TOKENIZER = "open_clip:"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# The image parts of each library model, moved into the image tower, and the parameters no tower uses.
_IMAGE_PARTS = {"open_clip": ("visual",), "transformers": ("vision_model", "visual_projection")}
_LOGIT_PARTS = ("logit_scale", "logit_bias")


class DualEncoderConfig(DualEncoderSource):
    """A CLIP-family dual encoder's architecture: where it comes from (``params:model.dual_encoder``)
    and what the checkpoint says of itself, recorded so a saved model rebuilds offline."""

    model_name: str
    """open_clip: an architecture name; transformers: a local directory or a hub name"""
    num_classes: int = set_from_data(1, ge=1)
    """identities of the train split (the identification head; counted from the data)"""
    embedding_dim: int = set_from_data(0, ge=0)
    """the joint space of the checkpoint"""
    architecture: dict[str, Any] = set_from_data(default_factory=dict)
    """the library's model config, written into checkpoints so they rebuild offline"""
    image_size: ImageSize = set_from_data((224, 224))
    """[height, width] the towers were trained at"""
    image_resize: ResizeRule = set_from_data("shortest")
    """shortest (shorter side to the size, centre crop) | squash"""
    image_interpolation: Interpolation = set_from_data("bicubic")
    """bicubic | bilinear"""
    image_mean: tuple[float, float, float] = set_from_data(OPENAI_MEAN)
    """per-channel mean of the checkpoint's preprocessing"""
    image_std: tuple[float, float, float] = set_from_data(OPENAI_STD)
    """per-channel std of the checkpoint's preprocessing"""
    logit_scale: float = set_from_data(1 / 0.07, gt=0)
    """the checkpoint's learned temperature exp(t): the contrastive losses start from it"""
    logit_bias: float | None = set_from_data(None)
    """SigLIP's learned bias, where the checkpoint has one"""

    @property
    def text_encoder(self) -> str:
        """Always a transformer: the freeze schedule and the caches read this."""
        return "transformer"

    @property
    def image_views(self) -> int:
        return 1

    @property
    def preprocessing(self) -> ImagePreprocessing:
        return ImagePreprocessing(
            size=self.image_size,
            resize=self.image_resize,
            interpolation=self.image_interpolation,
            mean=self.image_mean,
            std=self.image_std,
        )

    @property
    def text_model(self) -> str:
        """The tokenizer, which follows the model: open_clip's by architecture (params tokenization.tokenizer
        ``open_clip:<model_name>``), else the model's own directory or hub name."""
        return f"{OPEN_CLIP_TOKENIZER}{self.model_name}" if self.library == "open_clip" else self.model_name

    def to_dict(self) -> dict[str, Any]:
        return {"family": DUAL_ENCODER_FAMILY, **self.model_dump(mode="json")}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], path: str = "model") -> DualEncoderConfig:
        return build(cls, {key: value for key, value in values.items() if key != "family"}, path)


def is_dual_encoder_config(values: Mapping[str, Any]) -> bool:
    return values.get("family") == DUAL_ENCODER_FAMILY


def weights_identity(config: DualEncoderConfig) -> dict[str, Any]:
    """Which pretrained weights a model holds: the source as given and, for files on disk, their
    sha256 (a model directory: of each weight file), so a zero-shot evaluation names what it scored."""
    source = config.pretrained if config.library == "open_clip" else config.model_name
    path = Path(str(source))
    files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) if path.is_dir() else [path]
    hashes = {file.name: _sha256(file) for file in files if file.is_file()}
    return {"library": config.library, "model_name": config.model_name, "source": source, "sha256": hashes}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _register_open_clip_architecture(config: DualEncoderConfig) -> None:
    """Make ``config.model_name`` known to open_clip: its config file, or the architecture a checkpoint recorded."""
    import open_clip

    if config.model_config_file:
        open_clip.add_model_config(config.model_config_file)
    if config.architecture and open_clip.get_model_config(config.model_name) != config.architecture:
        folder = Path(tempfile.mkdtemp(prefix="timam-open-clip-"))
        (folder / f"{config.model_name}.json").write_text(json.dumps(config.architecture))
        open_clip.add_model_config(folder)
    if open_clip.get_model_config(config.model_name) is None:
        raise ValueError(
            f"open_clip has no architecture {config.model_name!r}; use one of open_clip.list_models() or give "
            "params model.model_config_file (a JSON model config)"
        )


def _library_model(config: DualEncoderConfig, pretrained: bool) -> Any:
    """The library's joint model: with the checkpoint's weights, or the recorded architecture only."""
    if config.library == "open_clip":
        import open_clip

        _register_open_clip_architecture(config)
        return open_clip.create_model(config.model_name, pretrained=config.pretrained if pretrained else None)
    from transformers import AutoConfig, AutoModel

    if pretrained:
        return AutoModel.from_pretrained(config.model_name)
    values = dict(config.architecture)
    return AutoModel.from_config(AutoConfig.for_model(values.pop("model_type"), **values))


def _interpolation(value: Any) -> Interpolation:
    names = {2: "bilinear", 3: "bicubic", "bilinear": "bilinear", "bicubic": "bicubic"}
    if value not in names:
        raise ValueError(f"the checkpoint's image interpolation {value!r} is not supported (bilinear, bicubic)")
    return names[value]  # type: ignore[return-value]


def _open_clip_description(model: Any, name: str) -> dict[str, Any]:
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg["size"] if isinstance(cfg["size"], tuple | list) else (cfg["size"], cfg["size"])
    if cfg["resize_mode"] not in ("shortest", "squash"):
        raise ValueError(f"open_clip resize mode {cfg['resize_mode']!r} is not supported (shortest, squash)")
    return {
        "architecture": open_clip.get_model_config(name),
        "image_size": tuple(size),
        "image_resize": cfg["resize_mode"],
        "image_interpolation": _interpolation(cfg["interpolation"]),
        "image_mean": tuple(cfg["mean"]),
        "image_std": tuple(cfg["std"]),
    }


def _transformers_description(model: Any, name: str) -> dict[str, Any]:
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(name)
    except OSError as error:
        raise ValueError(f"{name} has no image processor config; save the model's processor beside it") from error
    if getattr(processor, "do_center_crop", False):
        size = (processor.crop_size["height"], processor.crop_size["width"])
        if processor.size.get("shortest_edge") != min(size):
            raise ValueError(f"{name}: a resize to {processor.size} before a {size} crop is not supported")
        resize: ResizeRule = "shortest"
    else:
        size, resize = (processor.size["height"], processor.size["width"]), "squash"
    values = model.config.to_dict()
    return {
        "architecture": {key: value for key, value in values.items() if not key.startswith("_")},
        "image_size": size,
        "image_resize": resize,
        "image_interpolation": _interpolation(int(processor.resample)),
        "image_mean": tuple(processor.image_mean),
        "image_std": tuple(processor.image_std),
    }


def _logits(model: Any) -> dict[str, Any]:
    scale = getattr(model, "logit_scale", None)
    bias = getattr(model, "logit_bias", None)
    return {
        "logit_scale": float(scale.detach().exp().reshape(-1)[0]) if scale is not None else 1 / 0.07,
        "logit_bias": float(bias.detach().reshape(-1)[0]) if bias is not None else None,
    }


class _ImageTower(nn.Module):
    """The library model's image parts, called through the library's own image method."""

    def __init__(self, library: Any, parts: tuple[str, ...], encode: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        for name in parts:
            if hasattr(library, name):  # SigLIP has no visual_projection: its head is in the vision model
                self.add_module(name, getattr(library, name))
                delattr(library, name)
        self.config = getattr(library, "config", None)  # transformers' method reads it; not a module
        self._encode = encode

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._encode(self, images)


def _towers(library: Any, kind: str) -> tuple[_ImageTower, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """The image tower (moved out of ``library``) and the text tower's call on what stays."""
    method: Any = type(library)
    if kind == "open_clip":
        image = _ImageTower(library, _IMAGE_PARTS[kind], lambda tower, x: method.encode_image(tower, x))
        context = int(library.context_length)

        def text(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            # open_clip's text tower adds its whole positional table: ids cut to a batch's longest
            # caption are padded back (with 0, as its tokenizer pads; it pools at the end-of-text token).
            if ids.shape[1] > context:
                raise ValueError(
                    f"{ids.shape[1]} tokens exceed the text tower's context of {context}: set params "
                    f"tokenization.max_length to at most {context}"
                )
            return library.encode_text(F.pad(ids.long(), (0, context - ids.shape[1])))
    else:
        image = _ImageTower(
            library, _IMAGE_PARTS[kind], lambda tower, x: method.get_image_features(tower, pixel_values=x).pooler_output
        )

        def text(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return library.get_text_features(input_ids=ids.long(), attention_mask=mask.long()).pooler_output

    for name in _LOGIT_PARTS:  # the losses own their temperature (started from these values)
        if isinstance(getattr(library, name, None), nn.Parameter):
            delattr(library, name)
    return image, text


def _identity(dim: int) -> nn.Linear:
    projection = nn.Linear(dim, dim)
    with torch.no_grad():
        projection.weight.copy_(torch.eye(dim))
        projection.bias.zero_()
    return projection


class DualImageEncoder(nn.Module):
    """Images -> the image tower's embedding (the cacheable features) -> an identity-initialised map."""

    input_scale: torch.Tensor
    input_shift: torch.Tensor

    def __init__(self, tower: _ImageTower, dim: int, preprocessing: ImagePreprocessing) -> None:
        super().__init__()
        self.backbone = tower
        self.projection = _identity(dim)
        self.views = (0,)
        # The loaders normalise with ImageNet's statistics; the tower wants its own: an exact affine map.
        imagenet = ImagePreprocessing(size=preprocessing.size)
        scale = torch.tensor(imagenet.std) / torch.tensor(preprocessing.std)
        shift = (torch.tensor(imagenet.mean) - torch.tensor(preprocessing.mean)) / torch.tensor(preprocessing.std)
        self.register_buffer("input_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", shift.view(1, 3, 1, 1), persistent=False)

    @property
    def feature_dim(self) -> int:
        return self.projection.in_features

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images * self.input_scale + self.input_shift)

    def view_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).unsqueeze(0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features(images))


class DualTextEncoder(nn.Module):
    """Token ids -> the text tower's embedding (standing for the cacheable token states) -> an identity map."""

    def __init__(self, library: Any, encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], dim: int) -> None:
        super().__init__()
        self.transformer = library
        self.projection = _identity(dim)
        self._encode = encode

    @property
    def state_dim(self) -> int:
        return self.projection.in_features

    def word_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._encode(input_ids, attention_mask)

    def encode_states(
        self, states: torch.Tensor, attention_mask: torch.Tensor, lengths: torch.Tensor | list[int] | None = None
    ) -> torch.Tensor:
        return self.projection(states.float())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encode_states(self.word_states(input_ids, attention_mask), attention_mask)


class DualEncoderModel(nn.Module):
    """Both towers of a CLIP-family model; ``pretrained=False`` builds the recorded architecture only."""

    def __init__(self, config: DualEncoderConfig, *, pretrained: bool = True) -> None:
        super().__init__()
        library = _library_model(config, pretrained)
        if pretrained:
            describe = _open_clip_description if config.library == "open_clip" else _transformers_description
            config = config.replace(**describe(library, config.model_name), **_logits(library))
        if config.gradient_checkpointing:
            _enable_checkpointing(library, config.library)
        image, text = _towers(library, config.library)
        dim = _output_dim(image, config.image_size)
        self.config = config if config.embedding_dim == dim else config.replace(embedding_dim=dim)
        self.image_encoder = DualImageEncoder(image, dim, self.config.preprocessing)
        self.text_encoder = DualTextEncoder(library, text, dim)

    def lock(self, part: str) -> None:
        """open_clip's tower lock on a tower that trains: all but its last groups (layers) frozen again,
        with open_clip's own ``lock`` / ``lock_text_tower``; nothing when the config sets no lock."""
        config = self.config
        if part == "image" and config.lock_image_unlocked_groups is not None:
            visual: Any = self.image_encoder.backbone.visual
            visual.lock(unlocked_groups=config.lock_image_unlocked_groups)
        if part == "text" and config.lock_text_unlocked_layers is not None:
            self.text_encoder.transformer.lock_text_tower(unlocked_layers=config.lock_text_unlocked_layers)


@torch.no_grad()
def _output_dim(tower: _ImageTower, size: tuple[int, int]) -> int:
    """The joint space's size, as the tower gives it (one eval-mode forward of a blank image)."""
    training = tower.training
    tower.eval()
    dim = int(tower(torch.zeros(1, 3, *size)).shape[1])
    tower.train(training)
    return dim


def _enable_checkpointing(library: Any, kind: str) -> None:
    if kind == "open_clip":
        library.set_grad_checkpointing(True)
    else:
        library.gradient_checkpointing_enable()
