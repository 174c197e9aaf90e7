"""Every kedro run in MLflow, read back through ``MlflowClient`` from the project's own store.

Each command runs in a fresh process on a copy of the project with a tiny generated demo (as in
tests/pipelines/test_kedro_project.py), so the store is this test's ``mlflow.db``.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from mlflow.artifacts import download_artifacts
from mlflow.tracking import MlflowClient

from tests.kedro_project import checkpoint_versions, copy_project, kedro, latest_metrics

EPOCHS = 2  # the copied project's training.epochs


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("tracked"))


def uri(project: Path) -> str:
    return f"sqlite:///{project / 'mlflow.db'}"


@pytest.fixture(scope="module")
def client(project) -> MlflowClient:
    return MlflowClient(uri(project))


def runs(client: MlflowClient, **tags: str) -> list:
    experiment = client.get_experiment_by_name("timam-demo")
    assert experiment is not None, "no experiment timam-demo: the run was not tracked"
    found = client.search_runs([experiment.experiment_id])
    return [run for run in found if all(run.data.tags.get(key) == value for key, value in tags.items())]


@pytest.fixture(scope="module")
def two_trainings(project, client):
    """``kedro run`` (train + evaluate), then ``--pipelines train`` with another seed, uploading its weights."""
    kedro(project, "run")
    kedro(project, "run", "--pipelines", "train", "--params", "training.seed=1,tracking.log_checkpoint=true")
    first, second = checkpoint_versions(project)
    return first, second


def test_a_training_run_has_its_parameters_epoch_curves_tags_and_artifacts(project, client, two_trainings):
    first, _ = two_trainings
    [run] = runs(client, checkpoint_version=first)
    params = run.data.params
    assert {"training.epochs", "training.seed", "model.embedding_dim", "tokenization.max_length"} <= set(params)
    assert params["training.epochs"] == str(EPOCHS)
    for metric in ("loss_total", "val_t2i_R1", "val_i2t_R1", "lr"):
        history = client.get_metric_history(run.info.run_id, metric)
        assert [point.step for point in history] == list(range(1, EPOCHS + 1)), metric
    assert run.data.tags["trained_checkpoint"] == "true"
    assert run.data.tags["best_epoch"] in {str(epoch) for epoch in range(1, EPOCHS + 1)}
    artifacts = {artifact.path for artifact in client.list_artifacts(run.info.run_id)}
    assert {"training_history.csv", "training_curves.png", "retrieval_metrics.json", "retrieval_report.md"} <= artifacts
    assert not any(path.startswith("checkpoint") for path in artifacts)  # weights stay in the catalog by default
    logged = download_artifacts(
        run_id=run.info.run_id, artifact_path="retrieval_metrics.json", tracking_uri=uri(project)
    )
    [saved_file] = (project / "data/08_reporting/demo/retrieval_metrics.json").glob("*/retrieval_metrics.json")
    assert Path(logged).read_bytes() == saved_file.read_bytes()  # the catalog's file, as the catalog wrote it
    metrics = run.data.metrics
    for direction in ("text_to_image", "image_to_text"):
        for rule in ("expected", "optimistic", "pessimistic"):
            assert f"test.{direction}.{rule}.R1" in metrics
    assert "test.mR.expected" in metrics
    saved = latest_metrics(project)  # what compare and the report read
    assert metrics["test.text_to_image.expected.R1"] == saved["results"]["text_to_image"]["expected"]["R@1"]
    assert metrics["test.mR.index"] == saved["mR"]["index"]


def test_an_evaluate_only_rerun_joins_the_run_that_trained_its_checkpoint(project, client, two_trainings):
    first, second = two_trainings
    [newest] = runs(client, checkpoint_version=second)
    assert not any(key.startswith("test.") for key in newest.data.metrics)  # trained only, not evaluated
    uploaded = [artifact.path for artifact in client.list_artifacts(newest.info.run_id, "checkpoint")]
    assert uploaded == ["checkpoint/model_checkpoint.safetensors"]  # params:tracking.log_checkpoint
    changed = ("--params", "evaluation.curve_max_k=40")  # an evaluation setting the training run logged as 50
    kedro(project, "run", "--pipelines", "evaluate", "--load-versions", f"model_checkpoint:{first}", *changed)
    [older] = runs(client, checkpoint_version=first)
    [newest] = runs(client, checkpoint_version=second)
    assert len(runs(client)) == 2, "the rerun started a run of its own"
    assert not any(key.startswith("test.") for key in newest.data.metrics), "metrics landed in the newest run"
    history = client.get_metric_history(older.info.run_id, "test.text_to_image.expected.R1")
    assert len(history) == 2  # the first evaluation and the rerun
    assert older.info.run_name == "__default__"  # the training run keeps its name and command
    assert older.data.tags["kedro_command"] == "kedro run --pipeline=__default__"
    assert "load-version=model_checkpoint" in older.data.tags["rerun.kedro_command"]
    assert older.data.params["evaluation.curve_max_k"] == "50"  # MLflow keeps a logged value...
    assert older.data.tags["rerun.evaluation.curve_max_k"] == "40"  # ...the rerun's goes beside it


def test_a_pipeline_with_tracking_disabled_makes_no_run_and_says_nothing_of_mlflow(project, client, two_trainings):
    first, _ = two_trainings  # the checkpoint of the latest test-split embeddings (the rerun above)
    before = len(runs(client))
    query = ("--params", "search.query=a man in a red shirt")
    result = kedro(project, "run", "--pipelines", "search", "--load-versions", f"model_checkpoint:{first}", *query)
    log = result.stdout + result.stderr
    assert "logging is deactivated for this pipeline" in log  # search is in mlflow.yml's disable_tracking
    assert "MLflow tracking failed" not in log and "joins run" not in log
    assert len(runs(client)) == before


def test_a_tuning_run_has_one_nested_run_per_trial(project, client, two_trainings):
    kedro(
        project,
        "run",
        "--pipelines",
        "tune",
        "--params",
        "tuning.n_trials=2,tuning.epochs=2,tuning.storage=null",
    )
    [parent] = [run for run in runs(client) if run.info.run_name == "tune"]
    trials = runs(client, **{"mlflow.parentRunId": parent.info.run_id})
    assert sorted(run.data.tags["optuna.trial"] for run in trials) == ["0", "1"]
    for trial in trials:
        assert trial.data.tags["optuna.state"] in {"COMPLETE", "PRUNED"}
        assert len(client.get_metric_history(trial.info.run_id, "val_t2i_R1")) >= 1
        assert any(key.startswith("training.") for key in trial.data.params)
    assert any(key.startswith("best.training.") for key in parent.data.params)
    artifacts = {artifact.path for artifact in client.list_artifacts(parent.info.run_id)}
    assert {"tuning_trials.csv", "tuning_optimisation_history.png", "best_training_parameters.yml"} <= artifacts


def test_an_ablation_variant_is_its_own_run_tagged_variant_and_seed(project, client, two_trainings):
    only_one_variant = ("--namespaces", "ablation.cmpm_seed0", "--params", "training.epochs=1")
    kedro(project, "run", "--pipelines", "ablation", *only_one_variant)
    [parent] = [run for run in runs(client) if run.info.run_name == "ablation"]
    [variant] = runs(client, **{"mlflow.parentRunId": parent.info.run_id})
    assert (variant.data.tags["variant"], variant.data.tags["seed"]) == ("cmpm", "0")
    assert "test.text_to_image.expected.R1" in variant.data.metrics
    assert len(client.get_metric_history(variant.info.run_id, "val_t2i_R1")) == 1
    variant_artifacts = {artifact.path for artifact in client.list_artifacts(variant.info.run_id)}
    assert variant_artifacts == {"retrieval_metrics.json"}  # the namespaced dataset, in the variant's run


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_tracking_server_warns_once_and_the_run_completes(project):
    local = project / "conf" / "local" / "mlflow.yml"
    local.write_text(f"server:\n  mlflow_tracking_uri: http://127.0.0.1:{_closed_port()}\n")
    try:
        result = kedro(project, "run", "--pipelines", "prepare")
    finally:
        local.unlink()
    log = result.stdout + result.stderr
    assert log.count("MLflow tracking is off for this run") == 1
    assert "does not answer" in log and "data/08_reporting" in log
    assert "Pipeline execution completed successfully" in log


def test_a_failing_artifact_store_warns_once_and_every_file_is_still_saved(project, client, two_trainings):
    store = project / "mlartifacts"
    store.rename(project / "mlartifacts.kept")
    store.write_text("a file where the artifact folders should go")  # every upload fails: Not a directory
    reports = project / "data/08_reporting/demo/retrieval_report.md"
    saved_before = len(list(reports.iterdir()))
    try:
        result = kedro(project, "run", "--pipelines", "evaluate")
    finally:
        store.unlink()
        (project / "mlartifacts.kept").rename(store)
    log = result.stdout + result.stderr
    assert log.count("MLflow tracking failed") == 1 and "as an artifact" in log
    assert "Pipeline execution completed successfully" in log
    assert len(list(reports.iterdir())) == saved_before + 1
