"""The interaction (SCAN-style) model: its regions, training on cached inputs, checkpoint and cache round trips."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision

from tests.training.tiny_run import tiny_bert_model, tiny_captions
from timam.inference.interaction import pair_scores, region_outputs
from timam.inference.split_data import split_data
from timam.io.checkpoint_dataset import ModelCheckpointDataset
from timam.models.checkpoint import Checkpoint
from timam.models.interaction import InteractionConfig, InteractionModel
from timam.training.config import training_config
from timam.training.interaction import (
    InteractionSplit,
    InteractionTrainer,
    check_interaction_training,
    train_interaction,
)

# Every term off (the base turns identification, CMPM and the adversarial term on); rows turn theirs on.
ALL_TERMS_OFF = {"identification": 0.0, "cmpm": 0.0, "triplet": 0.0, "adversarial": 0.0}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("interaction")


@pytest.fixture(scope="module")
def tiny(workdir: Path):
    """The demo's splits and a tiny interaction config: a ResNet-18 from a saved (random) state
    dict, so its outputs can be cached, and a two-layer BERT of hidden size 16."""
    captions, tokens = tiny_captions(workdir)
    weights = workdir / "resnet18.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    config = InteractionConfig(
        image_backbone="resnet18",
        image_library="torchvision",
        image_weights=str(weights),
        image_size=(64, 64),
        image_views=2,
        text_model=tiny_bert_model(workdir).text_model,
        joint_dim=8,
    )
    return captions, tokens, config


def _training(workdir: Path, **values) -> dict:
    return {
        "epochs": 2,
        "batch_size": 8,
        "embed_batch_size": 8,
        "device": "cpu",
        "loss_weights": {**ALL_TERMS_OFF, "triplet": 1.0},
        "matching": "instance",
        "validation_relevance": "instance",
        "feature_cache_dir": str(workdir / "cache"),
        **values,
    }


def test_regions_are_the_feature_map_cells_of_each_view(tiny) -> None:
    _, _, config = tiny
    model = InteractionModel(config).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        regions = model.region_features(images)
        turned = model.region_features(images, view=1)
        reference = torchvision.models.resnet18()
        reference.load_state_dict(model.backbone.state_dict(), strict=False)
        reference.eval()
        trunk = torch.nn.Sequential(*list(reference.children())[:-2])
        expected = trunk(images).flatten(2).transpose(1, 2)
    assert regions.shape == (2, 4, 512)  # 64 px / stride 32 = 2 x 2 cells of 512 channels
    torch.testing.assert_close(regions, expected)
    torch.testing.assert_close(turned, trunk(torch.rot90(images, 1, dims=(2, 3))).flatten(2).transpose(1, 2))


def test_training_learns_and_the_checkpoint_scores_the_same_after_a_round_trip(tiny, workdir: Path) -> None:
    captions, tokens, config = tiny
    train, val = split_data(captions, tokens, "train"), split_data(captions, tokens, "val")
    checkpoint, history = train_interaction(train, val, config, training_config(_training(workdir, epochs=3)))
    assert list(history["epoch"]) == [1, 2, 3]
    assert history["loss_triplet"].iloc[-1] < history["loss_triplet"].iloc[0]
    assert checkpoint.metadata["val_t2i_R@1"] == history["val_t2i_R@1"].max()
    assert checkpoint.metadata["best_epoch"] == int(history["val_t2i_R@1"].idxmax()) + 1
    assert checkpoint.metadata["train_seconds"] > 0

    dataset = ModelCheckpointDataset(filepath=str(workdir / "ckpt" / "model.safetensors"))
    dataset.save(checkpoint)
    restored = dataset.load()
    assert isinstance(restored.model, InteractionModel)
    assert restored.model.config == checkpoint.model.config
    test = split_data(captions, tokens, "test")
    device = torch.device("cpu")
    inputs = InteractionSplit(checkpoint.model, test, (0,), training_config(_training(workdir)), device)
    before = pair_scores(checkpoint.model, inputs.regions[0], inputs.token_states, inputs.attention_mask, device=device)
    after = pair_scores(restored.model, inputs.regions[0], inputs.token_states, inputs.attention_mask, device=device)
    assert before.shape == (test.num_captions, len(test.image_paths))
    torch.testing.assert_close(before, after, rtol=0, atol=0)
    with pytest.raises(ValueError, match="interaction"):
        restored.embedding_model  # noqa: B018


def test_repeated_captions_get_bitwise_identical_scores_wherever_they_fall(tiny) -> None:
    """Ties must be exact: a repeat scored in another caption block would differ by rounding."""
    _, _, config = tiny
    model = InteractionModel(config).eval()
    torch.manual_seed(1)
    regions = torch.randn(5, 4, 512)
    states = torch.randn(7, 6, 16)
    mask = torch.ones(7, 6, dtype=torch.long)
    mask[2, 4:] = 0
    states[5], mask[5] = states[0], mask[0]  # caption 5 repeats caption 0, in another block of 3
    scores = pair_scores(model, regions, states, mask, device=torch.device("cpu"), caption_chunk=3, image_chunk=2)
    assert scores.shape == (7, 5)
    assert torch.equal(scores[5], scores[0])
    with torch.no_grad():
        one_shot = model.scores(regions, states, mask)
    torch.testing.assert_close(scores, one_shot, rtol=1e-5, atol=1e-6)


def test_region_cache_round_trip_is_exact_and_keyed_apart_from_pooled_features(tiny, workdir: Path) -> None:
    captions, tokens, config = tiny
    model = InteractionModel(config).eval()
    data = split_data(captions, tokens, "val")
    training = training_config(_training(workdir, feature_cache_dir=str(workdir / "region_cache")))
    first = InteractionSplit(model, data, (0, 1), training, torch.device("cpu")).regions
    files = sorted((workdir / "region_cache").glob("*.safetensors"))
    assert len(files) == 1
    again = InteractionSplit(model, data, (0, 1), training, torch.device("cpu")).regions
    assert first.dtype == torch.float16 and first.shape[:2] == (2, len(data.image_paths))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    computed = region_outputs(
        model,
        data.image_paths,
        views=(0, 1),
        batch_size=4,
        device=torch.device("cpu"),
        desc="x",
        precision="auto",
    )
    torch.testing.assert_close(first, computed, rtol=0, atol=0)
    InteractionSplit(model, data, (0,), training, torch.device("cpu")).regions  # noqa: B018  (one view: its own key)
    assert len(list((workdir / "region_cache").glob("*.safetensors"))) == 2


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"loss_weights": {"identification": 1.0, "cmpm": 0.0, "triplet": 1.0, "adversarial": 0.0}}, "identification"),
        (
            {"loss_weights": {"identification": 0.0, "cmpm": 0.0, "triplet": 0.0, "adversarial": 0.0}},
            "triplet or .cmpm",
        ),
        ({"freeze": {"image_backbone_epochs": 0}}, "frozen"),
        ({"augmentation": {"flip": True}}, "augmentation"),
    ],
)
def test_settings_an_interaction_run_cannot_honour_are_refused(workdir: Path, values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_interaction_training(training_config({**_training(workdir), **values}))


def test_cmpm_on_pair_scores_trains_too(tiny, workdir: Path) -> None:
    captions, tokens, config = tiny
    train, val = split_data(captions, tokens, "train"), split_data(captions, tokens, "val")
    weights = {**ALL_TERMS_OFF, "cmpm": 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: the weights come from a file, not random
        checkpoint, history = train_interaction(
            train, val, config, training_config(_training(workdir, loss_weights=weights, epochs=2))
        )
    assert set(history.columns) >= {"loss_cmpm", "loss_total", "val_t2i_R@1"}
    assert "loss_triplet" not in history.columns
    assert isinstance(checkpoint, Checkpoint)


def test_an_interrupted_interaction_run_resumes_to_the_uninterrupted_result(tiny, workdir: Path, monkeypatch) -> None:
    """The family shares the run around its epochs (``fit``): with a state_path it saves and
    resumes mid-epoch as TIMAM does, and finishes where an uninterrupted run finishes."""
    captions, tokens, config = tiny
    train, val = split_data(captions, tokens, "train"), split_data(captions, tokens, "val")
    values = _training(
        workdir, epochs=3, loss_weights={"identification": 0.0, "cmpm": 1.0, "triplet": 0.5, "adversarial": 0.0}
    )
    reference, reference_history = train_interaction(train, val, config, training_config(values))
    state = workdir / "interaction_state.pt"
    resumable = training_config({**values, "state_path": str(state), "save_every_steps": 2})
    calls = {"n": 0}
    original = InteractionTrainer.loss_terms

    def crash_on_ninth_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 9:
            raise RuntimeError("power cut")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(InteractionTrainer, "loss_terms", crash_on_ninth_step)
    with pytest.raises(RuntimeError, match="power cut"):
        train_interaction(train, val, config, resumable)
    monkeypatch.setattr(InteractionTrainer, "loss_terms", original)
    saved = torch.load(state, weights_only=True)
    assert saved["epoch"] == 1 and saved["partial_epoch"]["step"] > 0, "saved inside epoch 2"

    resumed, history = train_interaction(train, val, config, resumable)
    pd.testing.assert_frame_equal(history.drop(columns="seconds"), reference_history.drop(columns="seconds"))
    for name, tensor in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name
    assert not state.exists()
