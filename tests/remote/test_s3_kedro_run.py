"""The project's own commands with the checkpoint, embeddings, metrics and index on S3 (moto's server on 127.0.0.1).

A copy of the project (as tests/pipelines/test_kedro_project.py makes it: the tiny demo, two
epochs) gets a conf/local catalog that moves those entries to ``s3://<bucket>/...``, reaching the
server through ``credentials`` (``client_kwargs.endpoint_url``), and runs each command in a fresh
process: train + evaluate, index, search, and an evaluate-only rerun of the trained checkpoint; a
version that does not exist is asked for from the same conf in-process (one Kedro start less). The
first run also checks the start-of-run cleanup hook.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, DatasetError

from tests.kedro_project import copy_project, kedro
from tests.remote.conftest import S3Server
from timam.formats.atomic import current_host

BUCKET = "timam-project"
S3_ENTRIES = {
    "model_checkpoint": (
        "timam.io.checkpoint_dataset.ModelCheckpointDataset",
        "06_models/model_checkpoint.safetensors",
    ),
    "image_embeddings": ("timam.io.tensor_bundle.TensorBundleDataset", "07_model_output/image_embeddings.safetensors"),
    "text_embeddings": ("timam.io.tensor_bundle.TensorBundleDataset", "07_model_output/text_embeddings.safetensors"),
    "retrieval_metrics": ("timam.io.atomic_datasets.AtomicJSONDataset", "08_reporting/retrieval_metrics.json"),
}
MISSING_VERSION = "2000-01-01T00.00.00.000Z"


def s3_catalog(bucket: str) -> str:
    """conf/local/catalog.yml lines moving the artifacts to the bucket (appended to the tiny demo's entry)."""
    root = f"s3://{bucket}/demo"
    lines = []
    for name, (kind, path) in S3_ENTRIES.items():
        lines += [
            f"{name}:",
            f"  type: {kind}",
            f"  filepath: {root}/{path}",
            "  credentials: moto",
            "  versioned: true",
        ]
    index = f"{root}/07_model_output/image_index"
    checkpoint = f"{root}/{S3_ENTRIES['model_checkpoint'][1]}"
    lines += [
        "image_index:",
        "  type: timam.io.image_index_dataset.ImageIndexDataset",
        f"  filepath: {index}",
        f"  checkpoint_filepath: {checkpoint}",
        "  credentials: moto",
        "  versioned: true",
        "search_index:",
        "  type: timam.io.image_index_dataset.ImageIndexDataset",
        f"  filepath: {index}",
        "  optional: true",
        "  credentials: moto",
        "  versioned: true",
        "retrieval_metrics_history:",
        "  type: timam.io.metrics_history.MetricsHistoryDataset",
        f"  filepath: {root}/{S3_ENTRIES['retrieval_metrics'][1]}",
        "  credentials: moto",
    ]
    return "\n".join(lines) + "\n"


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)


def plant(folder: Path, name: str) -> Path:
    """A file written a minute ago (before the next run starts)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"left by a killed run")
    os.utime(path, (time.time() - 60, time.time() - 60))
    return path


@pytest.fixture(scope="module")
def project(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The copied project, its first `kedro run` (train + evaluate) done, and the files planted before it."""
    s3_server.client().create_bucket(Bucket=BUCKET)
    root = copy_project(tmp_path_factory.mktemp("s3_project"))
    with (root / "conf/local/catalog.yml").open("a") as catalog:
        catalog.write(s3_catalog(BUCKET))
    (root / "conf/local/parameters.yml").write_text("training:\n  epochs: 1\n  batch_size: 16\n")  # the test is storage
    (root / "conf/local/credentials.yml").write_text(
        f"moto:\n  client_kwargs:\n    endpoint_url: {s3_server.endpoint}\n"
    )
    token = "0123456789abcdef0123456789abcdef"
    folder = root / "data/06_models/demo"
    planted = {
        "stale": plant(folder, f".training_state.pt.{token}.{dead_pid()}@{current_host()}.tmp"),
        "live": plant(folder, f".training_state.pt.{token}.{os.getpid()}@{current_host()}.tmp"),
        "foreign": plant(folder, ".notes.tmp"),
    }
    log = kedro(root, "run")
    return {"root": root, "planted": planted, "log": log.stdout + log.stderr}


def metrics_versions(s3_server: S3Server) -> dict[str, dict]:
    prefix = f"demo/{S3_ENTRIES['retrieval_metrics'][1]}/"
    keys = s3_server.keys(BUCKET, prefix)
    body = {key: s3_server.client().get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys}
    return {key.removeprefix(prefix).split("/")[0]: json.loads(data) for key, data in body.items()}


def test_train_and_evaluate_write_their_artifacts_to_the_bucket(s3_server: S3Server, project: dict) -> None:
    keys = s3_server.keys(BUCKET)
    [checkpoint] = [key for key in keys if key.startswith("demo/06_models/model_checkpoint.safetensors/")]
    version = checkpoint.split("/")[3]
    for name in ("image_embeddings.safetensors", "text_embeddings.safetensors", "retrieval_metrics.json"):
        folder = "08_reporting" if name.endswith(".json") else "07_model_output"
        assert f"demo/{folder}/{name}/{version}/{name}" in keys, name  # one run, one version
    local = project["root"] / "data"
    assert not (local / "06_models/demo/model_checkpoint.safetensors").exists()
    assert not (local / "07_model_output/demo/image_embeddings.safetensors").exists()
    assert not list(project["root"].glob(f"{BUCKET}*")) and not (project["root"] / "s3:").exists()
    [metrics] = metrics_versions(s3_server).values()
    assert metrics["checkpoint_version"] == version
    assert (local / "08_reporting/demo/retrieval_report.md").is_dir()  # what stayed local still works


def test_the_run_removed_a_killed_writers_temporary_and_kept_a_live_ones(project: dict) -> None:
    planted = project["planted"]
    assert not planted["stale"].exists()
    assert planted["live"].exists() and planted["foreign"].exists()


@pytest.fixture(scope="module")
def indexed(s3_server: S3Server, project: dict) -> list[str]:
    kedro(project["root"], "run", "--pipelines", "index")
    return s3_server.keys(BUCKET, "demo/07_model_output/image_index/")


def test_index_uploads_the_index_with_its_manifest(indexed: list[str]) -> None:
    names = sorted(key.split("/")[-1] for key in indexed)
    assert names == ["index.faiss", "manifest.json", "rows.parquet"]


def test_search_ranks_the_index_on_s3(s3_server: S3Server, project: dict, indexed: list[str]) -> None:
    kedro(project["root"], "run", "--pipelines", "search", "--params", "search.query=a man in a red shirt")
    results = next((project["root"] / "data/08_reporting/demo/search_results.csv").glob("*/search_results.csv"))
    lines = results.read_text().splitlines()
    assert len(lines) == 11 and "imgs/" in lines[1]  # top_k 10 images of the indexed demo folder


def test_an_evaluate_only_rerun_reads_the_checkpoint_from_s3_and_scores_the_same(
    s3_server: S3Server, project: dict
) -> None:
    [(first_version, first)] = metrics_versions(s3_server).items()
    checkpoint = first["checkpoint_version"]
    kedro(project["root"], "run", "--pipelines", "evaluate", "--load-versions", f"model_checkpoint:{checkpoint}")
    versions = metrics_versions(s3_server)
    [rerun] = [metrics for version, metrics in versions.items() if version != first_version]
    assert rerun["checkpoint_version"] == checkpoint
    for key in ("results", "mR", "counts", "protocol"):
        assert rerun[key] == first[key], key


def test_a_missing_version_names_its_s3_url_and_the_versions_there(project: dict) -> None:
    """What `kedro run --load-versions model_checkpoint:<missing>` meets, from the project's own conf, in-process."""
    loader = OmegaConfigLoader(str(project["root"] / "conf"), base_env="base", default_run_env="local")
    catalog = DataCatalog.from_config(
        loader["catalog"], loader["credentials"], load_versions={"model_checkpoint": MISSING_VERSION}
    )
    url = f"s3://{BUCKET}/demo/{S3_ENTRIES['model_checkpoint'][1]}"
    with pytest.raises(
        DatasetError, match=rf"Version '{MISSING_VERSION}' of {url} does not exist\. Versions there, newest"
    ):
        catalog.load("model_checkpoint")
