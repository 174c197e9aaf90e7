"""The core's MLflow calls: no-ops without a run, real records with one, one warning on failure."""

from __future__ import annotations

import logging

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from timam.tracking import log
from timam.tracking.log import log_epoch, log_metrics, log_params, metric_name, nested_run, numeric_leaves, set_tags


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh SQLite store as the tracking URI, and the warn-once flag reset."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setattr(log, "_warned", False)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("tests")
    yield MlflowClient(uri)
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


def test_metric_names_drop_what_mlflow_refuses():
    assert metric_name("val_t2i_R@1") == "val_t2i_R1"
    assert metric_name("loss (total)") == "loss _total_"
    assert numeric_leaves({"a": {"R@5": 1, "flag": True, "nan": float("nan"), "text": "x"}, "b": 2.5}) == {
        "a.R5": 1.0,
        "b": 2.5,
    }


def test_without_an_active_run_nothing_is_logged_and_nothing_raises(store):
    log_epoch({"epoch": 1, "loss_total": 1.0}, epoch=1)
    set_tags({"a": 1})
    with nested_run("child") as run_id:
        assert run_id is None
    assert store.search_runs([store.get_experiment_by_name("tests").experiment_id]) == []


def test_epochs_become_metric_histories_and_params_are_flattened(store):
    with mlflow.start_run() as run:
        for epoch, loss in ((1, 2.0), (2, 1.5), (3, 1.25)):
            log_epoch({"epoch": epoch, "loss_total": loss, "val_t2i_R@1": 10.0 * epoch}, epoch=epoch)
        log_params({"optimizer": {"lr": 0.001}, "views": [1, 2]}, prefix="training")
    history = store.get_metric_history(run.info.run_id, "loss_total")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.5), (3, 1.25)]
    assert [m.value for m in store.get_metric_history(run.info.run_id, "val_t2i_R1")] == [10.0, 20.0, 30.0]
    assert "epoch" not in store.get_run(run.info.run_id).data.metrics
    assert store.get_run(run.info.run_id).data.params == {"training.optimizer.lr": "0.001", "training.views": "[1, 2]"}


def test_nested_runs_record_how_the_block_ended(store):
    class Stopped(Exception):
        pass

    with mlflow.start_run() as parent:
        with nested_run("done", tags={"k": 1}) as done:
            pass
        with pytest.raises(Stopped), nested_run("pruned", stopped_by=(Stopped,)) as pruned:
            raise Stopped
        with pytest.raises(ValueError), nested_run("broken") as broken:
            raise ValueError("bug")
        assert mlflow.active_run().info.run_id == parent.info.run_id  # back to the parent each time
    statuses = {run_id: store.get_run(run_id).info.status for run_id in (done, pruned, broken)}
    assert statuses == {done: "FINISHED", pruned: "KILLED", broken: "FAILED"}
    assert store.get_run(done).data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert store.get_run(done).data.tags["k"] == "1"


def test_a_failing_store_warns_once_and_never_raises(store, caplog):
    with mlflow.start_run():
        with caplog.at_level(logging.WARNING, logger="timam.tracking.log"):
            log_metrics({"x": 1.0}, run_id="no-such-run")
            log_metrics({"x": 2.0}, run_id="no-such-run")
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "the run goes on untracked" in warnings[0].getMessage()
    assert "data/08_reporting" in warnings[0].getMessage()
