"""Freeze schedules: frozen parts keep their pretrained weights; unfrozen ones and FC-Embed train."""

import warnings

import pytest
import torch

from tests.training.tiny_run import tiny_inputs
from timam.models.timam import TimamModel
from timam.training.config import training_config
from timam.training.loop import seed_everything, train_timam


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return tiny_inputs(tmp_path_factory.mktemp("freeze"))


def _train(inputs, **overrides):
    train, val, model_config = inputs
    config = training_config({"epochs": 1, "batch_size": 8, "embed_batch_size": 8, "device": "cpu", **overrides})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seed_everything(config.seed)
        initial = {k: v.clone() for k, v in TimamModel(model_config).state_dict().items()}
        checkpoint, history = train_timam(train, val, model_config, config)
    return initial, checkpoint.model.state_dict(), history


def test_frozen_backbone_keeps_weights_while_fc_embed_words_train(inputs):
    initial, trained, _ = _train(inputs)
    assert torch.equal(trained["image_encoder.backbone.conv1.weight"], initial["image_encoder.backbone.conv1.weight"])
    assert torch.equal(
        trained["image_encoder.backbone.bn1.running_mean"], initial["image_encoder.backbone.bn1.running_mean"]
    )
    assert not torch.equal(trained["text_encoder.word_embedding.weight"], initial["text_encoder.word_embedding.weight"])
    assert not torch.equal(trained["image_encoder.projection.weight"], initial["image_encoder.projection.weight"])


def test_unfrozen_backbone_with_augmentation_trains(inputs):
    initial, trained, history = _train(
        inputs, freeze={"image_backbone_epochs": 0}, augmentation={"flip": True, "crop_padding": 2}
    )
    assert not torch.equal(
        trained["image_encoder.backbone.conv1.weight"], initial["image_encoder.backbone.conv1.weight"]
    )
    assert len(history) == 1 and history["loss_total"].notna().all()


def test_changing_state_holds_batchnorm_statistics_of_parts_that_unfreeze(inputs):
    from timam.training.freeze import FreezeSchedule, changing_state, pretrained_parts

    _, _, model_config = inputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TimamModel(model_config)

    def state(freeze):
        schedule = FreezeSchedule(training_config({"freeze": freeze}).freeze, pretrained_parts(model))
        return changing_state(model, schedule.frozen_throughout)

    frozen = state({})
    unfreezing = state({"image_backbone_epochs": 3})
    assert not any(name.startswith("image_encoder.backbone.") for name in frozen)
    assert "image_encoder.backbone.bn1.running_mean" in unfreezing
    assert "image_encoder.projection.weight" in frozen


def test_building_a_cache_restores_every_module_mode(inputs):
    from timam.inference.embedding import image_outputs

    train, _, model_config = inputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TimamModel(model_config)
    model.train()
    model.image_encoder.backbone.eval()  # a frozen part, as the trainer leaves it
    image_outputs(
        model,
        train.image_paths[:2],
        project=False,
        batch_size=2,
        device=torch.device("cpu"),
        desc="t",
        precision="auto",
    )
    assert model.training and model.text_encoder.training
    assert not model.image_encoder.backbone.training


def test_plateau_unfreezes_the_backbone_after_validation_stalls(inputs, monkeypatch, caplog):
    """Validation R@1 stuck at 10 from epoch 1: with patience 2 the backbone trains from epoch 4."""
    from timam.training.trainer import TimamTrainer

    backbone_changed = {}
    original_train_epoch = TimamTrainer.train_epoch

    def recording_train_epoch(self, epoch, *args, **kwargs):
        before = self.model.image_encoder.backbone.conv1.weight.detach().clone()
        result = original_train_epoch(self, epoch, *args, **kwargs)
        backbone_changed[epoch] = not torch.equal(before, self.model.image_encoder.backbone.conv1.weight)
        return result

    monkeypatch.setattr(TimamTrainer, "validate", lambda self: {"val_t2i_R@1": 10.0, "val_i2t_R@1": 10.0})
    monkeypatch.setattr(TimamTrainer, "train_epoch", recording_train_epoch)
    with caplog.at_level("INFO"):
        _train(inputs, epochs=4, freeze={"image_backbone_epochs": "plateau", "plateau_patience": 2})
    assert backbone_changed == {1: False, 2: False, 3: False, 4: True}
    assert "image encoder(s) train from epoch 4" in caplog.text


def test_freeze_schedule_rejects_unknown_values():
    with pytest.raises(ValueError, match="'plateau'"):
        training_config({"freeze": {"text_model_epochs": "later"}})
