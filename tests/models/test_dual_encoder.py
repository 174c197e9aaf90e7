"""CLIP-family towers loaded through timam embed exactly as their libraries do, and survive a checkpoint."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tests.models.dual_encoders import OPEN_CLIP_NAME, open_clip_checkpoint, transformers_checkpoint
from timam.models.checkpoint import checkpoint_tensors, restore_model
from timam.models.dual_encoder import DualEncoderConfig, DualEncoderModel
from timam.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from timam.tokenization import load_tokenizer

CAPTIONS = ["a red square on a field", "two boats", "a road between green fields and a river"]


def _imagenet_normalised(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Library-normalised pixels re-expressed as the loaders hand them over (ImageNet statistics)."""
    pixels = images * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    return (pixels - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def open_clip_model(tmp_path_factory):
    import open_clip

    config_file, checkpoint = open_clip_checkpoint(tmp_path_factory.mktemp("open_clip"))
    reference = open_clip.create_model(OPEN_CLIP_NAME, pretrained=str(checkpoint)).eval()
    config = DualEncoderConfig(
        model_name=OPEN_CLIP_NAME, pretrained=str(checkpoint), model_config_file=str(config_file)
    )
    return reference, DualEncoderModel(config).eval()


def test_open_clip_towers_embed_as_open_clip_does(open_clip_model):
    reference, model = open_clip_model
    config = model.config
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = load_tokenizer(config.text_model)(CAPTIONS, max_length=16)
    with torch.no_grad():
        ours_images = model.image_encoder(_imagenet_normalised(images, config.image_mean, config.image_std))
        ours_texts = model.text_encoder(tokens["input_ids"], tokens["attention_mask"])
        torch.testing.assert_close(ours_images, reference.encode_image(images), rtol=0, atol=2e-6)
        torch.testing.assert_close(ours_texts, reference.encode_text(tokens["input_ids"]), rtol=0, atol=0)
    assert config.embedding_dim == 32 and config.image_size == (32, 32) and config.image_resize == "shortest"
    assert config.logit_scale == pytest.approx(float(reference.logit_scale.exp()))
    assert config.text_model == f"open_clip:{OPEN_CLIP_NAME}"


def test_open_clips_tokenizer_is_the_libraries_own(open_clip_model):
    import open_clip

    tokens = load_tokenizer(f"open_clip:{OPEN_CLIP_NAME}")(CAPTIONS, max_length=16)
    expected = open_clip.get_tokenizer(OPEN_CLIP_NAME)(CAPTIONS, context_length=16)
    assert torch.equal(tokens["input_ids"], expected)
    assert torch.equal(tokens["attention_mask"].bool(), expected != 0)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_transformers_towers_embed_as_the_library_does(tmp_path, kind):
    from transformers import AutoModel

    directory = transformers_checkpoint(tmp_path, kind)
    reference = AutoModel.from_pretrained(directory).eval()
    model = DualEncoderModel(DualEncoderConfig(library="transformers", model_name=str(directory))).eval()
    config = model.config
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    tokens = load_tokenizer(config.text_model)(
        CAPTIONS, padding="max_length", truncation=True, max_length=12, return_tensors="pt"
    )
    with torch.no_grad():
        ours_images = model.image_encoder(_imagenet_normalised(images, config.image_mean, config.image_std))
        ours_texts = model.text_encoder(tokens["input_ids"], tokens["attention_mask"])
        expected_images = reference.get_image_features(pixel_values=images).pooler_output
        expected_texts = reference.get_text_features(**tokens).pooler_output
    torch.testing.assert_close(ours_images, expected_images, rtol=0, atol=2e-6)
    torch.testing.assert_close(ours_texts, expected_texts, rtol=0, atol=0)
    assert (config.image_resize, config.image_interpolation) == (
        ("shortest", "bicubic") if kind == "clip" else ("squash", "bicubic")
    )
    assert config.logit_bias is None if kind == "clip" else config.logit_bias is not None


def test_a_checkpoint_rebuilds_the_towers_without_the_library_files(open_clip_model, tmp_path):
    _, model = open_clip_model
    restored = restore_model(model.config.to_dict(), checkpoint_tensors(model), source="test")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    ids = load_tokenizer(model.config.text_model)(CAPTIONS[:2], max_length=16)
    with torch.no_grad():
        torch.testing.assert_close(restored.image_encoder(images), model.image_encoder(images), rtol=0, atol=0)
        torch.testing.assert_close(
            restored.text_encoder(ids["input_ids"], ids["attention_mask"]),
            model.text_encoder(ids["input_ids"], ids["attention_mask"]),
            rtol=0,
            atol=0,
        )
    assert isinstance(restored, DualEncoderModel) and restored.config == model.config


def test_the_heads_start_at_the_identity_and_no_logit_parameter_is_left_in_the_towers(open_clip_model):
    _, model = open_clip_model
    names = {name for name, _ in model.named_parameters()}
    assert not any("logit" in name for name in names)
    assert torch.equal(model.image_encoder.projection.weight, torch.eye(32))
    assert any(name.startswith("image_encoder.backbone.visual.") for name in names)
    assert any(name.startswith("text_encoder.transformer.transformer.") for name in names)


def test_an_unknown_open_clip_architecture_names_the_fix():
    with pytest.raises(ValueError, match="model_config_file"):
        DualEncoderModel(DualEncoderConfig(model_name="no-such-architecture"))


def test_a_pil_image_through_the_library_transform_and_through_ours_gives_one_tensor(open_clip_model):
    """The loaders' uint8 -> ImageNet-normalised path, then the tower's renormalisation, equals the
    library's own preprocessing (resize of the shorter side, bicubic, centre crop, its mean/std)."""
    import open_clip

    from timam.inference.device import to_device_images
    from timam.inference.images import eval_pixels

    _, model = open_clip_model
    _, _, library_transform = open_clip.create_model_and_transforms(OPEN_CLIP_NAME, pretrained=None)
    generator = torch.Generator().manual_seed(4)
    for width, height in ((50, 37), (32, 32), (33, 64)):
        pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8)
        image = Image.fromarray(pixels.numpy())
        ours = to_device_images(eval_pixels(model.config.preprocessing)(image)[None], torch.device("cpu"))
        ours = ours * model.image_encoder.input_scale + model.image_encoder.input_shift
        torch.testing.assert_close(ours[0], library_transform(image), rtol=0, atol=1e-5)


def test_open_clips_tower_locks_leave_only_the_last_groups_trainable(open_clip_model):
    _, model = open_clip_model
    config = model.config.replace(lock_image_unlocked_groups=1, lock_text_unlocked_layers=1)
    locked = DualEncoderModel(config).train()
    image, text = locked.image_encoder.backbone.visual, locked.text_encoder.transformer
    image.requires_grad_(True)
    text.requires_grad_(True)
    locked.lock("image")
    locked.lock("text")
    # open_clip's last group of each tower (its projection) trains; every layer before it stays frozen.
    assert image.proj.requires_grad and text.text_projection.requires_grad
    for block in (*image.transformer.resblocks, *text.transformer.resblocks):
        assert not any(p.requires_grad for p in block.parameters())
    assert not text.token_embedding.weight.requires_grad
    more = DualEncoderModel(config.replace(lock_image_unlocked_groups=2)).train()
    more.image_encoder.backbone.requires_grad_(True)
    more.lock("image")
    last = more.image_encoder.backbone.visual.transformer.resblocks[-1]
    assert all(p.requires_grad for p in last.parameters())  # two groups: the last block too
    with pytest.raises(ValueError, match="open_clip's tower locks"):
        DualEncoderConfig(library="transformers", model_name="x", lock_text_unlocked_layers=1)
