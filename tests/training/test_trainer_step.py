"""One training step of the trainer with everything trainable, and what a step costs the host.

Every trainable parameter must get a gradient (DDP fails on the next step otherwise); the losses
are checked once per step, their sums read once per epoch, and the BiLSTM's lengths come from the
host; validation asks the ranking for R@K only and reports what the full ranking reports.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import timam.training.trainer as trainer_module
from tests.training.tiny_run import TINY_MODEL, tiny_bert_model, tiny_inputs
from timam.models.text_encoder import TextEncoder
from timam.models.timam import TimamModel
from timam.retrieval.ranking import ranking_metrics
from timam.retrieval.relevance import relevance_labels
from timam.training.cached_split import CachedSplit
from timam.training.config import training_config
from timam.training.epoch import check_finite
from timam.training.loop import seed_everything
from timam.training.progress import EpochProgress
from timam.training.trainer import TimamTrainer

CPU = torch.device("cpu")
# Every loss term on, the adversarial one from the first epoch.
ALL_TERMS = {
    "loss_weights": {"identification": 1.0, "cmpm": 1.0, "cmpc": 0.5, "adversarial": 0.5, "triplet": 0.5},
    "adversarial": {"warmup_epochs": 0},
}


def make_trainer(workdir: Path, values: dict, *, bert: bool = True) -> tuple[TimamTrainer, torch.Generator]:
    """A trainer of the tiny demo (tiny BERT or FC-Embed) with ``values`` over the tiny defaults."""
    train, val, _ = tiny_inputs(workdir)
    model_config = tiny_bert_model(workdir) if bert else TINY_MODEL
    config = training_config({"batch_size": 8, "embed_batch_size": 8, "device": "cpu", **values})
    generator = seed_everything(config.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random image weights
        model = TimamModel(model_config)
    caches = (CachedSplit(model, split, batch_size=8, device=CPU, precision=config.precision) for split in (train, val))
    return TimamTrainer(model, *caches, config, CPU), generator


def one_step(trainer: TimamTrainer, generator: torch.Generator, epoch: int = 1) -> dict[str, float]:
    """The real training step (losses, backward, optimiser steps, discriminator) on the first batch."""
    trainer.set_epoch(epoch)
    progress = EpochProgress(epoch=epoch, batches=trainer.batches(generator)[:1])
    return trainer.train_epoch(epoch, generator, progress)


@pytest.mark.parametrize("shared_classifier", [True, False])
def test_one_step_with_everything_trainable_gives_every_trainable_parameter_a_gradient(tmp_path, shared_classifier):
    """Backbone, transformer, BiLSTM, projections, classifiers and discriminator all trainable and
    every loss term on: a parameter left without a gradient would stop DDP on the next step."""
    trainer, generator = make_trainer(
        tmp_path,
        {
            **ALL_TERMS,
            "shared_classifier": shared_classifier,
            "freeze": {"image_backbone_epochs": 0, "text_model_epochs": 0},
        },
    )
    losses = one_step(trainer, generator)
    assert {"loss_adversarial", "loss_triplet", "loss_cmpc", "loss_discriminator"} <= set(losses)
    objective = (("objective." + name, parameter) for name, parameter in trainer.objective.named_parameters())
    named = [*trainer.model.named_parameters(), *objective]
    trainable = [name for name, parameter in named if parameter.requires_grad]
    assert any(name.startswith("image_encoder.backbone.") for name in trainable)
    assert any(name.startswith("text_encoder.transformer.encoder.layer.1.") for name in trainable)
    assert any(name.startswith("objective.discriminator.") for name in trainable)
    without = [name for name, parameter in named if parameter.requires_grad and parameter.grad is None]
    assert without == []


def test_each_step_checks_all_loss_terms_at_once_and_sums_them_on_the_device(tmp_path, monkeypatch):
    """One isfinite over the stacked terms per step (one host synchronisation on a GPU, not one
    per term), and the epoch's sums read once at its end, equal to summing Python floats."""
    trainer, generator = make_trainer(tmp_path, ALL_TERMS, bert=False)
    trainer.set_epoch(1)
    checked = []
    original_isfinite = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda tensor: checked.append(tensor.shape) or original_isfinite(tensor))
    added = []
    original_add = EpochProgress.add

    def add(progress, terms, total):
        added.append({name: float(value.detach()) for name, value in {**terms, "total": total}.items()})
        original_add(progress, terms, total)
        assert all(isinstance(value, torch.Tensor) for value in progress.sums.values())  # not read per step

    monkeypatch.setattr(EpochProgress, "add", add)
    batches = trainer.batches(generator)
    losses = trainer.train_epoch(1, generator, EpochProgress(epoch=1, batches=batches))
    terms = {"identification", "cmpm", "cmpc", "triplet", "adversarial", "discriminator"}
    assert checked == [torch.Size([len(terms)])] * len(batches)
    expected = {}
    for row in added:  # the old arithmetic: Python floats added step by step
        for name, value in row.items():
            expected[name] = expected.get(name, 0.0) + value
    assert losses == {f"loss_{name}": value / len(batches) for name, value in expected.items()}
    assert set(losses) == {f"loss_{name}" for name in terms | {"total"}}


def test_epoch_progress_states_keep_float_sums_and_load_old_ones():
    progress = EpochProgress(epoch=2, batches=[torch.arange(4), torch.arange(4)])
    progress.add({"cmpm": torch.tensor(1.25)}, torch.tensor(1.5))
    state = progress.to_state()
    assert state["sums"] == {"cmpm": 1.25, "total": 1.5} and all(type(v) is float for v in state["sums"].values())
    resumed = EpochProgress.from_state(state)  # also the format saved before the sums moved to the device
    resumed.add({"cmpm": torch.tensor(0.5)}, torch.tensor(1.0))
    assert resumed.mean_losses() == {"loss_cmpm": 0.875, "loss_total": 1.25}
    assert EpochProgress.from_state(state).mean_losses() == {"loss_cmpm": 0.625, "loss_total": 0.75}


def test_a_nan_term_is_named_with_its_epoch_and_step():
    terms = {"cmpm": torch.tensor(1.0), "triplet": torch.tensor(float("inf")), "discriminator": torch.tensor(0.7)}
    with pytest.raises(FloatingPointError, match=r"'triplet' is inf at epoch 3, step 4"):
        check_finite(terms, 3, 4)
    check_finite({"cmpm": torch.tensor(1.0)}, 1, 0)


def test_the_text_forward_takes_its_lengths_from_the_host(tmp_path, monkeypatch):
    """The trainer hands the BiLSTM the captions' lengths read on the host, so the forward never
    copies the device mask back; they are the lengths the mask gives."""
    trainer, generator = make_trainer(tmp_path, {"freeze": {"text_model_epochs": 0}})
    given = []
    original = TextEncoder.encode_states

    def encode_states(self, states, attention_mask, lengths=None):
        given.append((lengths, attention_mask.sum(dim=1).clamp(min=1).tolist()))
        return original(self, states, attention_mask, lengths)

    monkeypatch.setattr(TextEncoder, "encode_states", encode_states)
    one_step(trainer, generator)
    trainer.validation_embeddings()
    assert len(given) >= 2
    for lengths, from_mask in given:
        assert isinstance(lengths, list) and lengths == from_mask


def test_encode_states_with_host_lengths_equals_reading_them_from_the_mask():
    torch.manual_seed(0)
    encoder = TextEncoder(TINY_MODEL)
    ids = torch.randint(1, 100, (5, 9))
    mask = torch.ones(5, 9, dtype=torch.long)
    mask[1, 4:], mask[3, 1:] = 0, 0
    states = encoder.word_states(ids, mask)
    lengths = mask.sum(dim=1).tolist()
    assert torch.equal(encoder.encode_states(states, mask, lengths), encoder.encode_states(states, mask))


def test_validation_asks_for_recall_only_and_reports_the_full_rankings_r1(tmp_path, monkeypatch):
    trainer, generator = make_trainer(tmp_path, {}, bert=False)
    one_step(trainer, generator)
    asked = []
    original = trainer_module.ranking_metrics
    monkeypatch.setattr(
        trainer_module, "ranking_metrics", lambda *a, **k: asked.append(tuple(k["metrics"])) or original(*a, **k)
    )
    scores = trainer.validate()
    assert asked == [("R@K",), ("R@K",)]
    image_emb, text_emb = trainer.validation_embeddings()
    data = trainer.val.data
    image_labels, text_labels = relevance_labels(
        image_identity=data.image_identity,
        caption_identity=data.caption_identity,
        caption_image=data.caption_image,
        relevance="identity",
    )
    full_t2i = ranking_metrics(text_emb, image_emb, text_labels, image_labels)["expected"]
    full_i2t = ranking_metrics(image_emb, text_emb, image_labels, text_labels)["expected"]
    assert {"mAP", "mINP"} <= set(full_t2i)
    assert scores == {"val_t2i_R@1": full_t2i["R@1"], "val_i2t_R@1": full_i2t["R@1"]}


def test_a_nan_loss_stops_the_step_before_the_encoders_are_updated(tmp_path, monkeypatch):
    import timam.training.objective as objective

    trainer, generator = make_trainer(tmp_path, ALL_TERMS, bert=False)
    before = {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}
    original = objective.cmpm_loss
    monkeypatch.setattr(objective, "cmpm_loss", lambda *a, **k: tuple(x * float("nan") for x in original(*a, **k)))
    with pytest.raises(FloatingPointError, match=r"'cmpm' is nan at epoch 1, step 0"):
        one_step(trainer, generator)
    assert all(torch.equal(tensor, before[name]) for name, tensor in trainer.model.state_dict().items())
