"""`compare`: every saved retrieval_metrics version read from disk, one row each."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from kedro.io import DatasetError
from kedro.io.core import Version
from kedro_datasets.json import JSONDataset

from timam.io.metrics_history import MetricsHistoryDataset, VersionHistoryDataset
from timam.pipelines.compare.nodes import compare_metrics


def _metrics(checkpoint: str, r1: float, epochs: int) -> dict:
    values = {"R@1": r1, "R@5": r1 + 10, "R@10": r1 + 20, "mAP": r1 - 5, "mINP": 1.0}
    return {
        "checkpoint_version": checkpoint,
        "checkpoint": {"best_epoch": 1, "val_t2i_R@1": 12.0},
        "training": {"epochs": epochs, "seed": 0, "loss_weights": {"cmpm": 1.0}},
        "protocol": {"dataset": "demo", "split": "test", "relevance": "identity", "tie_rules": ["expected"]},
        "counts": {"images": 24, "captions": 48, "identities": 6},
        "results": {d: {"expected": values} for d in ("text_to_image", "image_to_text")},
    }


@pytest.fixture
def metrics_folder(tmp_path):
    """Two versions written by Kedro's own versioned JSON dataset, plus a crashed run without a file."""
    path = tmp_path / "retrieval_metrics.json"
    for version, metrics in (
        ("2026-01-01T00.00.00.000Z", _metrics("ckpt-a", 20.0, 2)),
        ("2026-01-02T00.00.00.000Z", _metrics("ckpt-b", 30.0, 5)),
    ):
        JSONDataset(filepath=str(path), version=Version(None, version)).save(metrics)
    (path / "2026-01-03T00.00.00.000Z").mkdir()
    return path


def test_history_dataset_loads_every_version_oldest_first(metrics_folder):
    history = MetricsHistoryDataset(filepath=str(metrics_folder)).load()
    assert list(history) == ["2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z"]
    assert history["2026-01-02T00.00.00.000Z"]["checkpoint_version"] == "ckpt-b"
    assert MetricsHistoryDataset(filepath=str(metrics_folder / "missing")).load() == {}


def test_history_dataset_reads_csv_versions_and_names_unreadable_files(tmp_path):
    path = tmp_path / "training_history.csv"
    (path / "v1").mkdir(parents=True)
    pd.DataFrame({"epoch": [1, 2]}).to_csv(path / "v1" / "training_history.csv", index=False)
    history = VersionHistoryDataset(filepath=str(path), dataset="pandas.CSVDataset").load()
    assert history["v1"]["epoch"].tolist() == [1, 2]
    broken = tmp_path / "m.json"
    (broken / "v1").mkdir(parents=True)
    (broken / "v1" / "m.json").write_text("{not json")
    with pytest.raises(DatasetError, match="Version v1 of .*m.json is unreadable"):
        MetricsHistoryDataset(filepath=str(broken)).load()


def test_compare_two_metrics_versions(metrics_folder):
    markdown, table = compare_metrics(
        MetricsHistoryDataset(filepath=str(metrics_folder)).load(), {"tie_rule": "expected"}
    )
    assert table["checkpoint_version"].tolist() == ["ckpt-a", "ckpt-b"]
    assert table["t2i_R@1"].tolist() == [20.0, 30.0]
    assert table["i2t_mAP"].tolist() == [15.0, 25.0]
    assert table["mR"].tolist() == [pytest.approx(30.0), pytest.approx(40.0)]
    assert table["training.loss_weights.cmpm"].tolist() == [1.0, 1.0]
    header = markdown.splitlines()[2]
    assert "checkpoint_version" in header and "t2i_R@1" in header and "i2t_mAP" in header
    assert "training.epochs" in header  # differs between the runs
    assert "training.seed" not in header  # the same in both: CSV only
    assert "| 2026-01-01T00.00.00.000Z | ckpt-a | demo | test | identity | 24 | 48 | 20.00 |" in markdown
    json.dumps(table.to_dict("records"))  # plain values, CSV-friendly


def test_compare_without_metrics_says_what_to_run():
    with pytest.raises(ValueError, match="run `kedro run --pipelines evaluate` first"):
        compare_metrics({}, {})
