"""The index pipeline: its nodes on a tiny random model, disjoint writers, and one real `kedro run`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io.core import Version
from PIL import Image

from tests.tiny_model import random_tiny_model
from timam.index.merge import MissingShardsError
from timam.index.store import collection_fingerprint
from timam.io.checkpoint_dataset import ModelCheckpointDataset
from timam.models.checkpoint import Checkpoint
from timam.pipeline_registry import register_pipelines
from timam.pipelines.index.nodes import (
    build_image_index,
    embed_image_collection,
    list_image_collection,
    merge_image_shards,
)
from timam.search import Searcher

REPO = Path(__file__).resolve().parents[2]
KEDRO = str(Path(sys.executable).with_name("kedro"))
VERSION = "2026-01-01T00.00.00.000Z"


@pytest.fixture(scope="module")
def checkpoint() -> Checkpoint:
    with pytest.warns(UserWarning, match="RANDOM weights"):
        model = random_tiny_model()
    return Checkpoint(model=model, metadata={}, version=VERSION)


def write_images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (32, 32), (50 * i % 256, 255 - 40 * i % 256, 30 * i % 256)).save(folder / f"{i:02d}.png")


EMBEDDING = {"device": "cpu", "batch_size": 4}
TOKENIZATION = {"tokenizer": "offline:minilm", "max_length": 16}


def params(photos: Path, shards: Path, **extra) -> dict:
    return {
        "collection": {"path": str(photos)},
        "shard_size": 2,
        "shard_dir": str(shards),
        "show_progress": False,
        **extra,
    }


def run_index(checkpoint, index: dict, embedding: dict = EMBEDDING):
    collection = list_image_collection(index)
    shards = embed_image_collection(checkpoint, collection, index, embedding)
    vectors, rows, bad = merge_image_shards(collection, shards)
    return build_image_index(vectors, rows, shards, index, TOKENIZATION), vectors, bad


def test_the_nodes_build_an_index_whose_manifest_names_checkpoint_collection_and_plan(checkpoint, tmp_path):
    photos = tmp_path / "photos"
    write_images(photos, 5)
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    image_index, vectors, bad = run_index(checkpoint, params(photos, tmp_path / "shards"))
    manifest = image_index.manifest
    assert (manifest.checkpoint_version, manifest.embedding_dim, manifest.image_count) == (VERSION, 16, 5)
    assert (manifest.precision, manifest.tokenizer, manifest.max_length) == ("float32", "offline:minilm", 16)
    assert manifest.plan.kind == "flat" and manifest.collection_fingerprint == collection_fingerprint(image_index.rows)
    assert image_index.rows["path"].tolist() == [str(photos / f"{i:02d}.png") for i in range(5)]
    assert bad["path"].tolist() == [str(photos / "broken.png")] and bad["reason"].iloc[0].startswith("unreadable")
    assert image_index.search(vectors, 1)[1][:, 0].tolist() == [0, 1, 2, 3, 4]
    assert (tmp_path / "shards" / VERSION / "shard-000002.safetensors").is_file()


def test_disjoint_writers_then_one_merge_build_the_index_one_writer_builds(checkpoint, tmp_path):
    photos = tmp_path / "photos"
    write_images(photos, 7)
    alone, vectors, _ = run_index(checkpoint, params(photos, tmp_path / "alone"))
    shared = tmp_path / "shared"
    collection = list_image_collection(params(photos, shared))
    first = embed_image_collection(checkpoint, collection, params(photos, shared, shard="0/2"), EMBEDDING)
    assert first["embedded"] == [0, 2] and first["writer"] == "0/2"
    with pytest.raises(MissingShardsError, match=r"Index shards 1, 3 of 4 .* writer\(s\) 1/2 have not finished"):
        merge_image_shards(collection, first)
    embed_image_collection(checkpoint, collection, params(photos, shared, shard="1/2"), EMBEDDING)
    together, _, _ = run_index(checkpoint, params(photos, shared))  # the merge run embeds nothing
    for got, want in zip(together.search(vectors, 7), alone.search(vectors, 7), strict=True):
        np.testing.assert_array_equal(got, want)
    pd.testing.assert_frame_equal(together.rows, alone.rows)
    assert together.manifest.collection_fingerprint == alone.manifest.collection_fingerprint


def test_a_bfloat16_index_finds_each_image_first_at_score_one(checkpoint, tmp_path):
    """The index records the precision its images were embedded in, and queries are embedded in it."""
    photos = tmp_path / "photos"
    write_images(photos, 6)
    image_index, _, _ = run_index(
        checkpoint, params(photos, tmp_path / "shards"), {**EMBEDDING, "precision": "bfloat16"}
    )
    assert image_index.manifest.precision == "bfloat16"
    searcher = Searcher(image_index=image_index, checkpoint=checkpoint, device="cpu")
    assert searcher.encoder.precision == "bfloat16"
    for row, path in enumerate(image_index.rows["path"]):
        best = searcher.by_image(path, k=1)[0]
        assert best.row == row and f"{best.score:.3f}" == "1.000"


def test_shards_of_another_precision_are_refused_at_the_merge(checkpoint, tmp_path):
    photos = tmp_path / "photos"
    write_images(photos, 4)
    index = params(photos, tmp_path / "shards")
    collection = list_image_collection(index)
    embed_image_collection(checkpoint, collection, index, {**EMBEDDING, "precision": "bfloat16"})
    shards = embed_image_collection(checkpoint, collection, index, EMBEDDING)  # reuses the bf16 shards
    assert shards["reused"] == [0, 1] and shards["precision"] == "float32"
    with pytest.raises(MissingShardsError, match=r"Index shards 0, 1 .* embedded in bfloat16 .* this run in float32"):
        merge_image_shards(collection, shards)


def test_index_embed_is_the_index_pipeline_without_the_merge():
    pipelines = register_pipelines()
    assert {node.name for node in pipelines["index_embed"].nodes} == {"list_image_collection", "embed_image_collection"}
    assert {node.name for node in pipelines["index"].nodes} == {
        "list_image_collection",
        "embed_image_collection",
        "merge_image_shards",
        "build_image_index",
    }
    assert set(pipelines["index"].outputs()) == {"image_index", "index_bad_images"}


def kedro(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KEDRO_DISABLE_TELEMETRY": "true", "TQDM_DISABLE": "1"}
    result = subprocess.run([KEDRO, *args], cwd=project, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, f"kedro {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_kedro_run_index_indexes_the_demo_folder_by_default(checkpoint, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "pyproject.toml", project)
    (project / "src").mkdir()  # kedro wants a source dir; timam comes from the editable install
    shutil.copytree(REPO / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    ModelCheckpointDataset(
        filepath=str(project / "data/06_models/demo/model_checkpoint.safetensors"), version=Version(None, VERSION)
    ).save(checkpoint)
    images = project / "data/01_raw/demo/imgs"  # where the demo generator puts them: the default collection
    write_images(images / "test", 3)
    (images / "train").mkdir()
    (images / "train" / "empty.jpg").write_bytes(b"")

    first = kedro(project, "run", "--pipelines", "index")
    assert "1 embedded, 0 reused of 1" in first.stdout + first.stderr
    root = project / "data/07_model_output/demo/image_index"
    (version,) = [p.name for p in root.iterdir()]
    manifest = json.loads((root / version / "image_index" / "manifest.json").read_text())
    assert manifest["checkpoint_version"] == VERSION and manifest["image_count"] == 3
    assert manifest["checkpoint_path"] == (
        f"data/06_models/demo/model_checkpoint.safetensors/{VERSION}/model_checkpoint.safetensors"
    )
    assert (project / manifest["checkpoint_path"]).is_file()
    rows = pd.read_parquet(root / version / "image_index" / "rows.parquet")
    assert rows["path"].tolist() == [f"data/01_raw/demo/imgs/test/{i:02d}.png" for i in range(3)]
    bad = pd.read_csv(next((project / "data/07_model_output/demo/index_bad_images.csv").glob("*/*.csv")))
    assert bad[["path", "size", "reason"]].to_dict("records") == [
        {"path": "data/01_raw/demo/imgs/train/empty.jpg", "size": 0, "reason": "zero-byte"}
    ]
