"""The best-epoch loop that train_timam and the tuning objective share."""

import math
import warnings

import pytest
import torch

import timam.training.loop as loop
from timam.training.loop import SCORE, BestEpoch, train_epochs


def test_best_epoch_takes_the_highest_score_and_the_first_of_equal_ones():
    best, taken = BestEpoch(), []
    for epoch, score in enumerate([20.0, 30.0, 25.0, 30.0, math.nan, 10.0], start=1):
        best.offer(epoch, score, lambda epoch=epoch: taken.append(epoch) or {"w": torch.tensor(epoch)})
    assert (best.score, best.epoch) == (30.0, 2)
    assert taken == [1, 2]  # the state is copied only when an epoch becomes best
    assert best.model["w"].item() == 2


def test_best_epoch_round_trips_through_the_resume_state_keys():
    best = BestEpoch(score=12.5, epoch=3, model={"w": torch.ones(1)})
    state = best.to_state()
    assert set(state) == {"best_score", "best_epoch", "best_model"}
    assert BestEpoch.from_state(state) == best
    assert BestEpoch().offer(1, 0.0)  # any real score beats the starting -1


class _ScriptedTrainer:
    """Stands in for TimamTrainer: each epoch returns its scripted validation score."""

    def __init__(self, scores):
        self.scores, self.calls = scores, []

    def run_epoch(self, epoch, generator, progress=None, after_step=None):
        self.calls.append((epoch, progress))
        return {"epoch": epoch, SCORE: self.scores[epoch]}


def test_train_epochs_yields_every_row_and_resumes_only_its_own_epoch():
    trainer = _ScriptedTrainer({3: 5.0, 4: 8.0, 5: 8.0})
    resume = loop.EpochProgress(epoch=3, batches=[])
    best = BestEpoch()
    rows = list(train_epochs(trainer, range(3, 6), torch.Generator(), best, resume=resume))
    assert [row["epoch"] for row in rows] == [3, 4, 5]
    assert trainer.calls == [(3, resume), (4, None), (5, None)]
    assert (best.epoch, best.score, best.model) == (4, 8.0, {})  # no snapshot: no state kept


def test_training_and_tuning_pick_their_best_epoch_with_the_same_loop(tmp_path, monkeypatch):
    """Both call train_epochs and offer each epoch to BestEpoch, and agree on the best epoch."""
    import timam.tuning.objective as objective
    from tests.training.tiny_run import tiny_inputs
    from timam.training.config import training_config

    assert objective.train_epochs is loop.train_epochs and objective.BestEpoch is loop.BestEpoch
    offers = []
    original = BestEpoch.offer
    monkeypatch.setattr(
        BestEpoch,
        "offer",
        lambda self, epoch, score, snapshot=None: (
            offers.append((epoch, score)) or original(self, epoch, score, snapshot)
        ),
    )
    train, val, model_config = tiny_inputs(tmp_path)
    values = {"epochs": 3, "batch_size": 8, "embed_batch_size": 8, "device": "cpu"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checkpoint, _ = loop.train_timam(train, val, model_config, training_config(values))
        trained, offers[:] = list(offers), []
        result = objective.TuningWorker(train, val, model_config, values).train(training_config(values))
    assert [epoch for epoch, _ in trained] == [1, 2, 3] and offers == trained
    assert result["best_epoch"] == checkpoint.metadata["best_epoch"]
    assert result["score"] == pytest.approx(checkpoint.metadata["val_t2i_R@1"], abs=0)
