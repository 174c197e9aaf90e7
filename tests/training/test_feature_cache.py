"""Frozen features on disk: computed once, reused by a later run, recomputed when an input changes."""

import os
import warnings

import torch
from safetensors.torch import load_file

import timam.training.cached_split as cached_split
import timam.training.loop as loop
from tests.training.tiny_run import TINY_MODEL, tiny_inputs
from timam.models.timam import TimamModel
from timam.training import feature_cache
from timam.training.config import training_config
from timam.training.feature_cache import cached_tensor, image_feature_key, token_state_key


def test_cached_tensor_computes_once_then_loads(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return torch.arange(6.0).view(2, 3)

    first = cached_tensor(tmp_path, "k", compute)
    second = cached_tensor(tmp_path, "k", compute)
    assert torch.equal(first, second) and len(calls) == 1
    assert cached_tensor(None, "k", compute) is not None and len(calls) == 2  # no directory: no cache


def test_keys_change_with_what_the_outputs_depend_on(tmp_path, monkeypatch):
    images = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    for image in images:
        image.write_bytes(b"x")
    paths = [str(image) for image in images]
    weights = tmp_path / "resnet18.pt"
    weights.write_bytes(b"weights")
    model = TINY_MODEL.replace(image_weights=str(weights))
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    key = image_feature_key(model, paths, cpu)
    assert image_feature_key(model, paths, cpu) == key
    assert image_feature_key(model.replace(image_size=(64, 32)), paths, cpu) != key
    assert image_feature_key(model.replace(image_views=2), paths, cpu) != key  # a mean over views
    assert image_feature_key(model, paths[::-1], cpu) != key
    assert image_feature_key(model, paths, cuda) != key  # bf16 features are not float32 features
    # training.precision: a key names the dtype only where it differs from the device's default
    assert image_feature_key(model, paths, cpu, precision="float32") == key
    assert image_feature_key(model, paths, cpu, precision="bfloat16") != key
    assert image_feature_key(model, paths, cuda, precision="bfloat16") == image_feature_key(model, paths, cuda)
    assert image_feature_key(model, paths, cuda, precision="float32") != image_feature_key(model, paths, cuda)
    with monkeypatch.context() as patch:  # the memory layout changes the rounding
        patch.setattr(feature_cache, "IMAGE_MEMORY_FORMAT", torch.contiguous_format)
        assert image_feature_key(model, paths, cpu) != key
    os.utime(weights, ns=(1, 1))
    assert image_feature_key(model, paths, cpu) != key
    key = image_feature_key(model, paths, cpu)
    os.utime(images[0], ns=(1, 1))
    assert image_feature_key(model, paths, cpu) != key
    assert image_feature_key(TINY_MODEL, paths, cpu) is None  # random init depends on the seed: never cached

    text = TINY_MODEL.replace(text_encoder="transformer", text_model="offline:minilm")
    ids, mask = torch.tensor([[101, 7, 102]]), torch.ones(1, 3, dtype=torch.long)
    assert token_state_key(text, ids, mask, cpu) != token_state_key(text, ids + 1, mask, cpu)
    assert token_state_key(text, ids, mask, cpu) != token_state_key(text, ids.int(), mask, cpu)
    assert token_state_key(TINY_MODEL, ids, mask, cpu) is None  # FC-Embed has no frozen transformer
    assert token_state_key(text, ids, mask, cpu, "bfloat16") != token_state_key(text, ids, mask, cpu)
    assert token_state_key(text, ids, mask, cpu, "float32") == token_state_key(text, ids, mask, cpu)


def test_second_run_reads_the_features_and_trains_identically(tmp_path, monkeypatch):
    train, val, model_config = tiny_inputs(tmp_path)
    torch.save(TimamModel(model_config).image_encoder.backbone.state_dict(), tmp_path / "backbone.pt")
    model_config = model_config.replace(image_weights=str(tmp_path / "backbone.pt"))
    config = training_config(
        {
            "epochs": 2,
            "batch_size": 8,
            "embed_batch_size": 8,
            "device": "cpu",
            "feature_cache_dir": str(tmp_path / "features"),
        }
    )
    computed = []
    original = cached_split.image_outputs
    monkeypatch.setattr(cached_split, "image_outputs", lambda *a, **k: computed.append(1) or original(*a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, first = loop.train_timam(train, val, model_config, config)
        assert len(computed) == 2  # train and val
        _, second = loop.train_timam(train, val, model_config, config)
    assert len(computed) == 2, "the second run computed image features again"
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 2
    assert first.drop(columns="seconds").equals(second.drop(columns="seconds"))


def test_training_split_keeps_every_view_and_validation_their_mean(tmp_path):
    train, val, model_config = tiny_inputs(tmp_path)
    torch.save(TimamModel(model_config).image_encoder.backbone.state_dict(), tmp_path / "backbone.pt")
    model_config = model_config.replace(image_weights=str(tmp_path / "backbone.pt"), image_views=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TimamModel(model_config)
    train_cache = cached_split.CachedSplit(model, train, batch_size=8, device=torch.device("cpu"), per_view=True)
    val_cache = cached_split.CachedSplit(model, val, batch_size=8, device=torch.device("cpu"), per_view=True)
    val_mean = cached_split.CachedSplit(model, val, batch_size=8, device=torch.device("cpu"))
    views = train_cache.image_features
    assert views.shape == (2, len(train.image_paths), model.image_encoder.feature_dim)
    assert torch.allclose(val_cache.image_features.mean(0), val_mean.image_features, atol=1e-5)
    chosen = train_cache.draw_views(train.num_captions)
    drawn = train_cache.image_features_of(torch.arange(train.num_captions), chosen)
    assert torch.equal(drawn, views[chosen, train.caption_image])  # each the drawn view of its own image
    assert set(chosen.tolist()) == {0, 1} and val_mean.draw_views(3) is None
    config = training_config(
        {
            "epochs": 1,
            "batch_size": 8,
            "embed_batch_size": 8,
            "device": "cpu",
            "feature_cache_dir": str(tmp_path / "features"),
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checkpoint, history = loop.train_timam(train, val, model_config, config)
    assert checkpoint.model.config.image_views == 2 and len(history) == 1
    shapes = sorted(
        tuple(t.shape) for f in (tmp_path / "features").glob("*.safetensors") for t in load_file(f).values()
    )
    feature = model.image_encoder.feature_dim
    assert (2, len(train.image_paths), feature) in shapes and (len(val.image_paths), feature) in shapes
