"""The Kedro project end to end, each command in a fresh process, on a tiny generated demo.

The project (pyproject.toml + conf) is copied into a temporary directory with a conf/local
override for a small demo and two epochs, so tests never touch the repository's data/.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kedro_project import checkpoint_versions, copy_project, kedro, latest_metrics

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("project"))


def test_a_misspelt_parameter_stops_the_run_before_any_node(project):
    result = kedro(project, "run", "--params", "training.epoch=1", succeeds=False)
    output = result.stdout + result.stderr
    assert "Unknown parameter training.epoch; did you mean 'epochs'? Known: [" in output
    assert "Node ingest_captions: started" not in output and "Running node" not in output
    assert not (project / "data" / "02_intermediate").exists()  # nothing ran, nothing was written


def test_bad_values_stop_the_run_before_any_node_naming_each_key(project):
    bad = "training.epochs=abc,training.image_optimizer.lr=-1,model.embedding_dim=0,training.loss_weights.cmpm=-1"
    result = kedro(project, "run", "--params", f"{bad},training.device=tpu", succeeds=False)
    output = result.stdout + result.stderr
    assert "Parameters rejected before any node ran" in output
    for key in ("training.epochs", "training.image_optimizer.lr", "training.loss_weights.cmpm", "training.device"):
        assert f"params {key} must be" in output, key
    assert "params model.embedding_dim must be greater than or equal to 1, got 0" in output
    assert "Running node" not in output and not (project / "data" / "02_intermediate").exists()


@pytest.fixture(scope="module")
def trained(project) -> Path:
    kedro(project, "run", "--pipelines", "train")
    return project


def test_train_pipeline_writes_versioned_checkpoint_and_history(trained):
    assert len(checkpoint_versions(trained)) == 1
    history_dir = trained / "data/08_reporting/demo/training_history.csv"
    history = next(history_dir.glob("*/training_history.csv")).read_text().splitlines()
    assert history[0].startswith("epoch,lr,")
    assert len(history) == 3  # header + 2 epochs
    assert (trained / "data/01_raw/demo/reid_raw.json").exists()
    assert (trained / "data/02_intermediate/demo/captions.parquet").exists()


def test_evaluate_pipeline_names_the_checkpoint_it_scored(trained):
    kedro(trained, "run", "--pipelines", "evaluate")
    metrics = latest_metrics(trained)
    assert metrics["checkpoint_version"] == checkpoint_versions(trained)[-1]
    assert metrics["protocol"]["relevance"] == "identity"
    assert metrics["counts"] == {"images": 24, "captions": 48, "identities": 6}
    for direction in ("text_to_image", "image_to_text"):
        values = metrics["results"][direction]["expected"]
        assert set(values) >= {"R@1", "R@5", "R@10", "mAP"}
        assert 0 <= values["R@1"] <= values["R@5"] <= values["R@10"] <= 100
    report_dir = trained / "data/08_reporting/demo/retrieval_report.md"
    report = next(report_dir.glob("*/retrieval_report.md")).read_text()
    assert metrics["checkpoint_version"] in report
    assert "No published numbers for this dataset." in report
    assert "mR" in metrics
    for figure in (
        "recall_curve",
        "example_grid",
        "example_grid_image_to_text",
        "best_worst_text_to_image",
        "best_worst_image_to_text",
        "training_curves",
    ):
        png = next((trained / f"data/08_reporting/demo/{figure}.png").glob(f"*/{figure}.png"))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, figure


def test_search_and_compare_read_the_saved_evaluation(trained):
    # the checkpoint the latest embeddings were made with (later tests may add newer checkpoints)
    scored = latest_metrics(trained)["checkpoint_version"]
    kedro(
        trained,
        "run",
        "--pipelines",
        "search,compare",
        "--params",
        "search.query=a man in a red shirt",
        "--load-versions",
        f"model_checkpoint:{scored}",
    )
    results = next((trained / "data/08_reporting/demo/search_results.csv").glob("*/search_results.csv"))
    lines = results.read_text().splitlines()
    assert lines[0] == "rank,row,path,score" and len(lines) == 11  # top_k 10, the Searcher's hits table
    assert next((trained / "data/08_reporting/demo/search_grid.png").glob("*/search_grid.png")).stat().st_size > 10_000
    comparison = next((trained / "data/08_reporting/demo/metrics_comparison.md").glob("*/metrics_comparison.md"))
    assert scored in comparison.read_text()


def test_search_names_a_query_image_pillow_cannot_read(trained):
    result = kedro(
        trained, "run", "--pipelines", "search", "--params", "search.query_image=pyproject.toml", succeeds=False
    )
    output = result.stdout + result.stderr
    assert (
        "params search.query_image 'pyproject.toml' is not an image Pillow can read (UnidentifiedImageError" in output
    )
    assert "DataLoader worker" not in output and "embedding the query image" not in output


def test_evaluate_a_chosen_checkpoint_version(trained):
    kedro(trained, "run", "--pipelines", "train", "--from-nodes", "train_model")
    first, second = checkpoint_versions(trained)
    kedro(trained, "run", "--pipelines", "evaluate", "--load-versions", f"model_checkpoint:{first}")
    assert latest_metrics(trained)["checkpoint_version"] == first


def test_rerun_reuses_cached_tokens(trained):
    result = kedro(trained, "run", "--pipelines", "prepare")
    assert "loaded from cache" in result.stdout + result.stderr


def test_viz_build_lists_pipelines_and_nodes(trained):
    kedro(trained, "viz", "build")
    text = "".join(p.read_text() for p in (trained / "build").rglob("*") if p.is_file() and p.suffix in {"", ".json"})
    for name in (
        "train",
        "evaluate",
        "compare",
        "search",
        "ingest_captions",
        "tokenize_captions",
        "train_model",
        "embed_test_split",
        "rank_test_split",
        "plot_recall_curve",
        "compare_metrics",
    ):
        assert name in text, name


def test_torchrun_trains_on_two_ranks_and_saves_one_version(trained):
    before = checkpoint_versions(trained)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KEDRO_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "timam.launch",
        "--params",
        "training.epochs=1",
    ]
    result = subprocess.run(command, cwd=trained, capture_output=True, text=True, env=env, check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (result.stdout + result.stderr).count("Saved model_checkpoint") == 1, "rank 0 alone logs it"
    new = sorted(set(checkpoint_versions(trained)) - set(before))
    assert len(new) == 1, "rank 0 alone saves, one version per run"
    history = (trained / "data/08_reporting/demo/training_history.csv" / new[0] / "training_history.csv").read_text()
    assert len(history.splitlines()) == 2  # header + 1 epoch
    kedro(trained, "run", "--pipelines", "evaluate")
    assert latest_metrics(trained)["checkpoint_version"] == new[0]
