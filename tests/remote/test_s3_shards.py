"""Index shards on S3: two writers share one bucket folder, a rerun reuses it, and the merge equals a local one.

Multi-machine index building needs one folder every writer sees; ``index.shard_dir`` may be an
``s3://`` URL (credentials from the environment, as for any process without a catalog).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.index.test_shards import embed, listing, merge, write_images
from tests.remote.conftest import S3Server
from tests.tiny_model import random_tiny_model
from timam.index.config import ShardSpec
from timam.index.shards import read_shard_header, shard_path
from timam.models.timam import TimamModel


@pytest.fixture(scope="module")
def model() -> TimamModel:
    with pytest.warns(UserWarning, match="RANDOM weights"):
        return random_tiny_model()


def test_two_writers_fill_one_s3_folder_and_the_merge_equals_a_local_one(
    s3_server: S3Server, bucket: str, model: TimamModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    write_images(tmp_path / "photos", 5)  # 3 shards of 2, 2, 1
    collection, shared = listing(tmp_path / "photos"), f"s3://{bucket}/index_shards/v1"
    assert embed(model, collection, shared, ShardSpec(0, 2)).embedded == [0, 2]
    assert embed(model, collection, shared, ShardSpec(1, 2)).embedded == [1]
    assert s3_server.keys(bucket) == [f"index_shards/v1/shard-{j:06d}.safetensors" for j in range(3)]
    assert shard_path(shared, 1) == f"{shared}/shard-000001.safetensors"
    assert read_shard_header(shard_path(shared, 1))["shard"] == 1  # read from the object's header alone
    assert embed(model, collection, shared).reused == [0, 1, 2]  # a rerun on any machine embeds nothing
    remote = merge(collection, shared, writers=2)
    local = merge(collection, embed(model, collection, tmp_path / "local").folder)
    np.testing.assert_array_equal(remote.vectors, local.vectors)
    assert remote.rows.equals(local.rows)
