"""The catalog says what each MLflow run gets as an artifact, in every env, and a misspelling stops the run."""

from __future__ import annotations

from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader

from timam.tracking_hooks import check_mlflow_metadata

CONF = Path(__file__).resolve().parents[2] / "conf"
ENVS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in {"base", "local"})
# What docs/journeys/tracking.md promises per pipeline.
PROMISED = {
    "train": {"training_history", "training_curves"},
    "evaluate": {"retrieval_metrics", "retrieval_report", "recall_curve", "example_grid", "example_grid_image_to_text",
                 "best_worst_text_to_image", "best_worst_image_to_text"},
    "tune": {"best_training_parameters", "tuning_trials", "tuning_optimisation_history",
             "tuning_parameter_importance"},
    "ablation": {"ablation.{variant}.retrieval_metrics", "ablation_summary", "ablation_report"},
    "families": {"families.{run}.retrieval_metrics", "families_summary", "families_report", "attribute_vocabulary",
                 "families.{run}.attribute_accuracy", "families.{run}.attribute_examples"},
}  # fmt: skip


def _tracked(entries: dict) -> dict[str, dict]:
    return {
        name: entry["metadata"]["mlflow"]
        for name, entry in entries.items()
        if (entry.get("metadata") or {}).get("mlflow", {}).get("artifact")
    }


@pytest.mark.parametrize("env", ["base", *ENVS])
def test_every_env_tracks_the_promised_artifacts_and_only_the_checkpoint_under_a_folder(env: str) -> None:
    entries = OmegaConfigLoader(conf_source=str(CONF), base_env="base", default_run_env=env)["catalog"]
    check_mlflow_metadata(entries)
    tracked = _tracked(entries)
    for pipeline, names in PROMISED.items():
        assert names <= set(tracked), f"{env}: {pipeline} would not log {sorted(names - set(tracked))}"
    promised = set().union(*PROMISED.values()) | {"model_checkpoint"}
    assert set(tracked) == promised, "a new artifact: add it to docs/journeys/tracking.md"
    assert {
        name: declared.get("artifact_path") for name, declared in tracked.items() if declared.get("artifact_path")
    } == {"model_checkpoint": "checkpoint"}


@pytest.mark.parametrize(
    "declared",
    [{"artifcat": True}, {"artifact": "yes"}, {"artifact": True, "path": "x"}, "true"],
)
def test_a_misspelt_mlflow_metadata_names_the_entry_and_the_fix(declared) -> None:
    entries = {"retrieval_report": {"type": "text.TextDataset", "metadata": {"mlflow": declared}}}
    with pytest.raises(ValueError, match=r"Catalog entry 'retrieval_report': metadata.mlflow .* conf/<env>/catalog"):
        check_mlflow_metadata(entries)


def test_only_a_dataset_with_one_file_can_be_an_artifact() -> None:
    folder = {"type": "partitions.PartitionedDataset", "path": "x", "metadata": {"mlflow": {"artifact": True}}}
    with pytest.raises(ValueError, match=r"Catalog entry 'figures': only a dataset saved to one file"):
        check_mlflow_metadata({"figures": folder})


def test_entries_without_mlflow_metadata_pass() -> None:
    check_mlflow_metadata({"captions": {"type": "pandas.ParquetDataset"}, "raw": {"metadata": None}, "_anchor": "x"})
