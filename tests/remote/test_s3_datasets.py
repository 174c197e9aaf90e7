"""Every timam dataset class, the index store and ``Searcher`` on S3 (moto's server over HTTP on 127.0.0.1).

What lands in the bucket is listed with boto3, not through the code under test. Before the datasets
went through fsspec, ``s3://bucket/x`` silently became the local path ``bucket/x``: nothing reached
the bucket, and every test here failed.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from kedro.io.core import DatasetError, Version

from tests.remote.conftest import S3Server
from tests.search.tiny_index import noise_images
from tests.tiny_model import random_tiny_model
from timam.formats.tensor_bundle import TensorBundle
from timam.index.embedding import embed_files
from timam.index.faiss_index import build_index, plan_index
from timam.index.store import ImageIndex, IndexManifest, collection_fingerprint
from timam.io.atomic_datasets import AtomicJSONDataset
from timam.io.checkpoint_dataset import ModelCheckpointDataset
from timam.io.image_index_dataset import ImageIndexDataset
from timam.io.metrics_history import MetricsHistoryDataset
from timam.io.tensor_bundle import TensorBundleDataset
from timam.models.checkpoint import Checkpoint
from timam.search import Searcher
from timam.search.locate import find_index_folder

V1, V2, V3 = "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z", "2026-01-03T00.00.00.000Z"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def checkpoint() -> Checkpoint:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
        model = random_tiny_model(image_size=(32, 16), vocab_size=30522)  # MiniLM's vocabulary, for text queries
    return Checkpoint(model=model, metadata={"best_epoch": 2})


def test_tensor_bundles_round_trip_and_a_missing_version_names_its_url(s3_server: S3Server, bucket: str) -> None:
    root = f"s3://{bucket}/data/image_embeddings.safetensors"
    bundle = TensorBundle(tensors={"embeddings": torch.randn(3, 4)}, metadata={"caption_ids": ["a", "b", "c"]})
    TensorBundleDataset(filepath=root, version=Version(None, V1), credentials=s3_server.storage_options).save(bundle)
    assert s3_server.keys(bucket) == [f"data/image_embeddings.safetensors/{V1}/image_embeddings.safetensors"]
    loaded = TensorBundleDataset(filepath=root, version=Version(None, None), credentials=s3_server.storage_options)
    got = loaded.load()
    assert torch.equal(got.tensors["embeddings"], bundle.tensors["embeddings"])
    assert got.metadata == {"caption_ids": ["a", "b", "c"], "version": V1}
    missing = TensorBundleDataset(filepath=root, version=Version(V2, None), credentials=s3_server.storage_options)
    with pytest.raises(
        DatasetError, match=rf"Version '{V2}' of {root} does not exist\. Versions there, newest first: {V1}\."
    ):
        missing.load()


def test_a_checkpoint_on_s3_holds_the_bytes_a_local_save_writes(
    s3_server: S3Server, bucket: str, checkpoint: Checkpoint, tmp_path: Path
) -> None:
    root = f"s3://{bucket}/models/model_checkpoint.safetensors"
    with pytest.raises(DatasetError, match=rf"No saved version of {root} yet; run the pipeline that saves it first"):
        ModelCheckpointDataset(filepath=root, version=Version(None, None), credentials=s3_server.storage_options).load()
    ModelCheckpointDataset(filepath=root, version=Version(None, V1), credentials=s3_server.storage_options).save(
        checkpoint
    )
    local = tmp_path / "model_checkpoint.safetensors"
    ModelCheckpointDataset(filepath=str(local), version=Version(None, V1)).save(checkpoint)
    key = f"models/model_checkpoint.safetensors/{V1}/model_checkpoint.safetensors"
    assert s3_server.keys(bucket) == [key]
    remote_bytes = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    local_bytes = (local / V1 / local.name).read_bytes()
    assert len(remote_bytes) == len(local_bytes)
    assert _header(remote_bytes) == _header(local_bytes)  # safetensors orders the header's keys as it likes
    assert remote_bytes[-1000:] == local_bytes[-1000:]  # the tensors' bytes, after the header
    loaded = ModelCheckpointDataset(filepath=root, version=Version(None, None), credentials=s3_server.storage_options)
    restored = loaded.load()
    assert restored.version == V1 and restored.metadata == {"best_epoch": 2}
    for name, tensor in checkpoint.model.state_dict().items():
        assert torch.equal(restored.model.state_dict()[name], tensor), name


def _header(data: bytes) -> dict:
    return json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])


def test_a_foreign_object_is_refused_naming_its_url_not_a_download(s3_server: S3Server, bucket: str) -> None:
    s3_server.client().put_object(Bucket=bucket, Key="evil.safetensors", Body=b"\x80\x04not a checkpoint")
    url = f"s3://{bucket}/evil.safetensors"
    with pytest.raises(DatasetError, match=rf"^{url} is not a safetensors checkpoint .*never unpickles"):
        ModelCheckpointDataset(filepath=url, credentials=s3_server.storage_options).load()


def test_metrics_and_their_history_on_s3(s3_server: S3Server, bucket: str) -> None:
    root = f"s3://{bucket}/reporting/retrieval_metrics.json"
    for version, r1 in ((V1, 20.0), (V2, 30.0)):
        dataset = AtomicJSONDataset(
            filepath=root, version=Version(None, version), credentials=s3_server.storage_options
        )
        dataset.save({"R@1": r1})
    s3_server.client().put_object(Bucket=bucket, Key=f"reporting/retrieval_metrics.json/{V3}/notes.txt", Body=b"")
    latest = AtomicJSONDataset(filepath=root, version=Version(None, None), credentials=s3_server.storage_options)
    assert latest.load() == {"R@1": 30.0}
    history = MetricsHistoryDataset(filepath=root, credentials=s3_server.storage_options)
    assert history.load() == {V1: {"R@1": 20.0}, V2: {"R@1": 30.0}}  # V3 holds no metrics file: not a version
    chosen = AtomicJSONDataset(filepath=root, version=Version(V3, None), credentials=s3_server.storage_options)
    with pytest.raises(
        DatasetError, match=rf"Version '{V3}' of {root} does not exist\. Versions there, newest first: {V2}, {V1}"
    ):
        chosen.load()


def _index(checkpoint: Checkpoint, images: list[str], version: str) -> tuple[ImageIndex, np.ndarray]:
    embedded = embed_files(checkpoint.model, images, batch_size=8, device=CPU, precision="auto", show_progress=False)
    vectors = F.normalize(embedded.embeddings, dim=1).numpy().astype(np.float32)
    stats = [Path(path).stat() for path in images]
    rows = pd.DataFrame(
        {
            "path": images,
            "size": np.array([s.st_size for s in stats], dtype=np.int64),
            "mtime_ns": np.array([s.st_mtime_ns for s in stats], dtype=np.int64),
        }
    )
    plan = plan_index(len(images), vectors.shape[1], memory_budget_bytes=1 << 30)
    manifest = IndexManifest(
        checkpoint_version=version,
        checkpoint_path=None,  # the dataset fills in the checkpoint's URL
        embedding_dim=vectors.shape[1],
        image_count=len(images),
        collection_fingerprint=collection_fingerprint(rows),
        plan=plan,
        created_at="2026-01-02T00:00:00+00:00",
    )
    return ImageIndex(index=build_index(vectors, plan, show_progress=False), manifest=manifest, rows=rows), vectors


@pytest.fixture(scope="module")
def index_on_s3(s3_server: S3Server, checkpoint: Checkpoint, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A checkpoint and a two-version index on S3, as the catalog's model_checkpoint and image_index save them."""
    bucket = "timam-index"
    s3_server.client().create_bucket(Bucket=bucket)
    checkpoints = f"s3://{bucket}/models/model_checkpoint.safetensors"
    ModelCheckpointDataset(filepath=checkpoints, version=Version(None, V1), credentials=s3_server.storage_options).save(
        checkpoint
    )
    images = noise_images(tmp_path_factory.mktemp("photos"), 5)
    root = f"s3://{bucket}/output/image_index"
    for version, count in ((V1, 3), (V2, 5)):
        image_index, _ = _index(checkpoint, images[:count], V1)
        ImageIndexDataset(
            filepath=root,
            version=Version(None, version),
            checkpoint_filepath=checkpoints,
            credentials=s3_server.storage_options,
        ).save(image_index)
    return {"bucket": bucket, "root": root, "images": images, "checkpoints": checkpoints}


def test_the_index_is_uploaded_whole_and_loads_back(s3_server: S3Server, index_on_s3: dict) -> None:
    assert s3_server.keys(index_on_s3["bucket"], "output/") == [
        f"output/image_index/{version}/image_index/{name}"
        for version in (V1, V2)
        for name in ("index.faiss", "manifest.json", "rows.parquet")
    ]
    latest = ImageIndexDataset(
        filepath=index_on_s3["root"], version=Version(None, None), credentials=s3_server.storage_options
    )
    loaded = latest.load()
    assert loaded is not None and loaded.manifest.image_count == 5 and latest.exists()
    assert loaded.manifest.checkpoint_path == f"{index_on_s3['checkpoints']}/{V1}/model_checkpoint.safetensors"


def test_an_upload_killed_before_its_manifest_is_never_the_latest_and_names_its_url(
    s3_server: S3Server, bucket: str, index_on_s3: dict, checkpoint: Checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = f"s3://{bucket}/image_index"
    complete, _ = _index(checkpoint, index_on_s3["images"][:3], V1)
    ImageIndexDataset(filepath=root, version=Version(None, V1), credentials=s3_server.storage_options).save(complete)
    fs = fsspec.filesystem("s3", **s3_server.storage_options)  # fsspec hands the dataset this same instance
    real_put = fs.put_file

    def killed_at_the_manifest(lpath: str, rpath: str, **kwargs: object) -> None:
        if rpath.endswith("manifest.json"):
            raise ConnectionError("simulated kill before the manifest upload")
        real_put(lpath, rpath, **kwargs)

    monkeypatch.setattr(fs, "put_file", killed_at_the_manifest)
    image_index, _ = _index(checkpoint, index_on_s3["images"][:2], V1)
    dataset = ImageIndexDataset(filepath=root, version=Version(None, V3), credentials=s3_server.storage_options)
    with pytest.raises(DatasetError, match="simulated kill"):
        dataset.save(image_index)
    monkeypatch.undo()
    assert s3_server.keys(bucket, f"image_index/{V3}/") == [
        f"image_index/{V3}/image_index/index.faiss",
        f"image_index/{V3}/image_index/rows.parquet",
    ]
    latest = ImageIndexDataset(filepath=root, version=Version(None, None), credentials=s3_server.storage_options)
    loaded = latest.load()
    assert loaded is not None and loaded.manifest.image_count == 3  # V1, not the half-uploaded V3
    with pytest.raises(DatasetError, match=rf"the image index at {root}/{V3}/image_index has no manifest\.json: its"):
        ImageIndexDataset(filepath=root, version=Version(V3, None), credentials=s3_server.storage_options).load()


def test_searcher_opens_an_index_on_s3_like_timam_serve(
    s3_server: S3Server, index_on_s3: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)  # how `timam serve` is pointed at the server
    root = index_on_s3["root"]
    assert find_index_folder(root) == find_index_folder(f"{root}/{V2}") == f"{root}/{V2}/image_index"
    searcher = Searcher.open(root, device="cpu")  # the checkpoint is the URL the manifest names
    assert searcher.index_version == V2 and searcher.checkpoint_version == V1 and searcher.size == 5
    assert searcher.index_name == f"index {root}/{V2}/image_index"
    hits = searcher.by_image(index_on_s3["images"][3], k=2)
    assert hits[0].row == 3 and hits[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(FileNotFoundError, match=rf"index folder {root}-missing does not exist"):
        Searcher.open(f"{root}-missing", device="cpu")
    s3_server.client().put_object(Bucket=index_on_s3["bucket"], Key="foreign.safetensors", Body=b"\x80\x04pickle")
    foreign = f"s3://{index_on_s3['bucket']}/foreign.safetensors"
    with pytest.raises(ValueError, match=rf"^{foreign} is not a safetensors checkpoint"):
        Searcher.open(root, foreign, device="cpu")
