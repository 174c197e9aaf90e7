"""Everything needed to rebuild a TIMAM model, as plain values that travel inside a checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from timam.config import ParameterBlock, build, set_from_data
from timam.models.preprocessing import ImagePreprocessing

OFFLINE_TEXT_MODEL = "offline:minilm"
OFFLINE_IMAGE_WEIGHTS = "offline"
ImageViews = Literal[1, 2, 8]
# (height, width) in pixels.
ImageSize = tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]


def check_square_for_turns(image_views: int, image_size: tuple[int, int]) -> None:
    """Eight views turn images by quarter turns: only a square image keeps its size when turned."""
    if image_views == 8 and image_size[0] != image_size[1]:
        raise ValueError(
            f"image_views 8 turns images by quarter turns, which needs a square image_size, got "
            f"{list(image_size)}; use image_views 2 (mirrored only) or a square size"
        )


class DualEncoderSource(ParameterBlock):
    """Where a CLIP-family model comes from (``model.dual_encoder``, used with ``family: dual_encoder``);
    everything else about it (its size, preprocessing, temperature) is read from the checkpoint."""

    library: Literal["open_clip", "transformers"] = "open_clip"
    """open_clip | transformers (CLIPModel, SiglipModel)"""
    model_name: str | None = None
    """open_clip: an architecture name (ViT-B-32, RN50...); transformers: a local directory or a hub name"""
    pretrained: str | None = None
    """open_clip: a local checkpoint file (open_clip's format: RemoteCLIP, GeoRSCLIP ship it) or a
    pretrained tag (needs a network); null: random weights. transformers: model_name's own weights"""
    model_config_file: str | None = None
    """open_clip: a JSON model config (or a folder of them) for an architecture open_clip does not list"""
    gradient_checkpointing: bool = False
    """recompute the towers' activations in the backward pass (less GPU memory, slower steps)"""
    lock_image_unlocked_groups: int | None = Field(default=None, ge=0)
    """open_clip's --lock-image: while the image tower trains (training.freeze), all but its last N
    layer groups stay frozen; null: the whole tower trains"""
    lock_text_unlocked_layers: int | None = Field(default=None, ge=0)
    """open_clip's --lock-text: while the text tower trains, all but its last N layers stay frozen"""

    @model_validator(mode="after")
    def _locks_are_open_clips(self) -> DualEncoderSource:
        locks = (self.lock_image_unlocked_groups, self.lock_text_unlocked_layers)
        if self.library != "open_clip" and any(lock is not None for lock in locks):
            raise ValueError(
                "lock_image_unlocked_groups / lock_text_unlocked_layers are open_clip's tower locks; "
                "for a transformers model freeze whole towers with training.freeze"
            )
        return self


class ModelConfig(ParameterBlock):
    """Architecture of a TIMAM model.

    ``image_weights``: "offline" (packaged ImageNet weights, timm efficientnet_lite0, _lite1 or
    _lite2 only, or their tf_ variants; native sizes 224, 240 and 260 px), "imagenet" (the
    library's hub weights, needs a network or cache), a path to a state dict, or None (random
    init, warned loudly). ``image_size`` is (height, width). ``image_views``: image
    features are the mean over this many views of the image -- 1 (as it is), 2 (and mirrored) or
    8 (the four quarter turns, each also mirrored; square images only) -- for data whose
    orientation means nothing, such as aerial photographs.
    """

    num_classes: int = Field(ge=1)
    """identities of the train split (counted from the data, never a parameter)"""
    family: Literal["timam", "dual_encoder"] = "timam"
    """timam (a backbone and a BERT + BiLSTM text branch, as the paper) | dual_encoder (the towers of a
    CLIP-family model, model.dual_encoder; the timam keys below are then not used)"""
    dual_encoder: DualEncoderSource = DualEncoderSource()
    image_backbone: str = "efficientnet_lite0"
    """a timm or torchvision classification backbone (resnet18...resnet152 for torchvision)"""
    image_library: Literal["timm", "torchvision"] = "timm"
    """timm | torchvision"""
    image_weights: str | None = OFFLINE_IMAGE_WEIGHTS
    """offline (packaged ImageNet weights: efficientnet_lite0/1/2) | imagenet (the library's hub
    weights, needs a network) | a path to a state dict | null (random init, warned)"""
    image_size: ImageSize = (160, 80)
    """[height, width] of the images the backbone sees (person images are tall)"""
    text_encoder: Literal["transformer", "fc_embed"] = "transformer"
    """transformer (BERT-style word states into a BiLSTM) | fc_embed (learned word embeddings)"""
    text_model: str = OFFLINE_TEXT_MODEL
    """offline:minilm (packaged) or a hub name / directory, e.g. bert-base-uncased"""
    vocab_size: int = set_from_data(30522, ge=1)
    """fc_embed: rows of the word-embedding table (follows the tokenizer of caption_tokens)"""
    word_embedding_dim: int = Field(default=300, ge=1)
    """fc_embed only: size of the learned word vectors (their count follows the tokenizer)"""
    lstm_hidden: int = Field(default=512, ge=1)
    """the BiLSTM over the word states, each direction"""
    embedding_dim: int = Field(default=512, ge=1)
    """the joint image-text space"""
    image_views: ImageViews = 1
    """features averaged over 1 view, 2 (and mirrored) or 8 (quarter turns x mirror; square sizes)"""
    transformer_config: dict[str, Any] = set_from_data(default_factory=dict)
    """the transformer's architecture, written into checkpoints so they rebuild without the hub"""

    @model_validator(mode="after")
    def _square_for_turns(self) -> ModelConfig:
        check_square_for_turns(self.image_views, self.image_size)
        if self.family == "dual_encoder" and not self.dual_encoder.model_name:
            raise ValueError("family dual_encoder needs model.dual_encoder.model_name (the CLIP-family model)")
        return self

    @property
    def preprocessing(self) -> ImagePreprocessing:
        """Resize to ``image_size`` (bilinear) and ImageNet's statistics: what the backbones were trained with."""
        return ImagePreprocessing(size=self.image_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (the checkpoint header's ``config``: a TIMAM model's architecture)."""
        return self.model_dump(mode="json", exclude={"family", "dual_encoder"})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], path: str = "model") -> ModelConfig:
        """Build from parameters or a checkpoint header; unknown keys are an error, not ignored."""
        return build(cls, values, path)


# Counted from the data (the train split's classes), never set as a parameter.
DATA_FIELDS = ("num_classes",)


def model_config(values: Mapping[str, Any] | None, *, num_classes: int, path: str = "model") -> ModelConfig:
    """``params:model`` plus what the data fixes; ``model.num_classes`` is refused (the data counts it)."""
    values = dict(values or {})
    for name in DATA_FIELDS:
        if name in values:
            raise ValueError(f"params {path}.{name} is counted from the train split; remove it from the parameters")
    return ModelConfig.from_dict({**values, "num_classes": num_classes}, path)


def check_model_parameters(values: Mapping[str, Any] | None, path: str = "model") -> None:
    """Check ``params:model`` before any data is read (keys and values; the class count is a stand-in)."""
    model_config(values, num_classes=1, path=path)
