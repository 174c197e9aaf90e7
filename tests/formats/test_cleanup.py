"""Leftovers of killed writers are removed at a run's start; live writers' temporaries and foreign files never are."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from timam.formats.atomic import atomic_path, current_host, temporary_sibling
from timam.formats.cleanup import DEFAULT_MAX_AGE_S, project_folders, remove_stale_temporaries

TOKEN = "0123456789abcdef0123456789abcdef"
VERSION = "2026-01-02T03.04.05.678Z"
HOUR = 3600.0


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(process.stdout)


def aged(path: Path, seconds: float) -> Path:
    """Set ``path``'s modification time ``seconds`` into the past."""
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))
    return path


def temporary(folder: Path, target: str, pid: int, *, host: str | None = None, age: float = 60.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{target}.{TOKEN}.{pid}@{host or current_host()}.tmp"
    path.write_bytes(b"half a file")
    return aged(path, age)


def files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def test_the_temporary_name_carries_the_writers_pid_and_host(tmp_path: Path) -> None:
    name = temporary_sibling(tmp_path / "model.safetensors").name
    assert name.startswith(".model.safetensors.") and name.endswith(f".{os.getpid()}@{current_host()}.tmp")


def test_a_dead_writers_temporary_is_removed_a_live_ones_is_kept(tmp_path: Path) -> None:
    stale = temporary(tmp_path / "data/06_models", "model.safetensors", dead_pid())
    live = temporary(tmp_path / "data/06_models", "training_state.pt", os.getpid())
    report = remove_stale_temporaries([tmp_path / "data"])
    assert not stale.exists() and live.exists()
    assert report.removed == [stale] and report.kept == [live] and report.freed_bytes == len(b"half a file")


def test_foreign_files_are_never_touched(tmp_path: Path) -> None:
    data = tmp_path / "data"
    foreign = [
        ".notes.tmp",  # hidden and .tmp, but not our naming
        "captions.parquet.tmp",
        f".model.safetensors.{TOKEN[:-1]}.1@{current_host()}.tmp",  # 31 hex digits
        f".model.safetensors.{TOKEN}.1@{current_host()}.bak",
        f"model.safetensors.{TOKEN}.1@{current_host()}.tmp",  # not hidden
        "captions.parquet",
    ]
    data.mkdir()
    for name in foreign:
        (data / name).write_bytes(b"x")
        aged(data / name, 10 * DEFAULT_MAX_AGE_S)
    (data / "retrieval_metrics.json" / VERSION).mkdir(parents=True)
    (data / "retrieval_metrics.json" / VERSION / "retrieval_metrics.json").write_text("{}")
    outside = tmp_path / "elsewhere"
    stale_outside = temporary(outside, "x.csv", dead_pid())
    (data / "linked").symlink_to(outside, target_is_directory=True)  # never followed
    before = files(tmp_path)
    report = remove_stale_temporaries([data])
    assert report.removed == [] and files(tmp_path) == before and stale_outside.exists()


def test_only_what_is_older_than_the_run_is_removed(tmp_path: Path) -> None:
    started = time.time()
    written_since = temporary(tmp_path, "a.csv", dead_pid(), age=-5.0)  # a concurrent run's, after our start
    remove_stale_temporaries([tmp_path], started=started)
    assert written_since.exists()


def test_another_hosts_and_old_style_temporaries_go_only_after_the_age_limit(tmp_path: Path) -> None:
    recent_other_host = temporary(tmp_path, "a.csv", 1, host="gpu-node-7", age=HOUR)
    old_other_host = temporary(tmp_path, "b.csv", 1, host="gpu-node-7", age=DEFAULT_MAX_AGE_S + HOUR)
    live_but_ancient = temporary(tmp_path, "c.csv", os.getpid(), age=DEFAULT_MAX_AGE_S + HOUR)
    recent_old_style = tmp_path / f".d.csv.{TOKEN}.tmp"
    recent_old_style.write_bytes(b"x")
    aged(recent_old_style, HOUR)
    old_old_style = tmp_path / f".e.csv.{TOKEN}.old"
    old_old_style.write_bytes(b"x")
    aged(old_old_style, DEFAULT_MAX_AGE_S + HOUR)
    remove_stale_temporaries([tmp_path])
    assert recent_other_host.exists() and recent_old_style.exists()
    assert not old_other_host.exists() and not live_but_ancient.exists() and not old_old_style.exists()


def test_a_killed_index_save_leaves_a_folder_and_its_version_folder_both_removed(tmp_path: Path) -> None:
    version = tmp_path / "image_index" / VERSION
    partial = version / f".image_index.{TOKEN}.{dead_pid()}@{current_host()}.tmp"
    partial.mkdir(parents=True)
    (partial / "index.faiss").write_bytes(b"\0" * 1000)
    aged(partial, 60)
    kept_version = tmp_path / "image_index" / "2026-01-01T00.00.00.000Z"
    (kept_version / "image_index").mkdir(parents=True)
    report = remove_stale_temporaries([tmp_path])
    assert report.freed_bytes == 1000
    assert files(tmp_path) == [
        "image_index",
        f"image_index/{kept_version.name}",
        f"image_index/{kept_version.name}/image_index",
    ]


def test_an_empty_version_folder_goes_once_old_a_recent_one_stays(tmp_path: Path) -> None:
    old = aged(_mkdir(tmp_path / "m.json" / "2025-01-01T00.00.00.000Z"), DEFAULT_MAX_AGE_S + HOUR)
    recent = aged(_mkdir(tmp_path / "m.json" / "2026-01-01T00.00.00.000Z"), HOUR)
    not_a_version = aged(_mkdir(tmp_path / "m.json" / "empty"), DEFAULT_MAX_AGE_S + HOUR)
    remove_stale_temporaries([tmp_path])
    assert not old.exists() and recent.exists() and not_a_version.exists()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def test_a_writer_killed_mid_write_leaves_a_temporary_the_next_run_removes(tmp_path: Path) -> None:
    target = tmp_path / "data" / "06_models" / "model.safetensors" / VERSION / "model.safetensors"
    script = (
        "import os, signal, sys\n"
        "from timam.formats.atomic import atomic_path\n"
        "with atomic_path(sys.argv[1]) as temporary:\n"
        "    temporary.write_bytes(b'half a checkpoint')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script, str(target)], check=False)
    assert killed.returncode == -signal.SIGKILL
    [left] = [path for path in (tmp_path / "data").rglob("*") if path.is_file()]
    assert left.name.startswith(".model.safetensors.") and not target.exists()
    aged(left, 1)
    remove_stale_temporaries([tmp_path / "data"])
    assert files(tmp_path / "data") == ["06_models", "06_models/model.safetensors"]  # its version folder went too


def test_project_folders_are_data_the_caches_and_every_local_catalog_path(tmp_path: Path) -> None:
    catalog = {
        "model_checkpoint": {"type": "x", "filepath": "data/06_models/demo/model_checkpoint.safetensors"},
        "metrics": {"type": "MlflowArtifactDataset", "dataset": {"type": "y", "filepath": "/scratch/out/m.json"}},
        "image_index": {"filepath": "s3://bucket/image_index", "checkpoint_filepath": "/ckpt/model.safetensors"},
        "{variant}.metrics": {"filepath": "/runs/ablation/{variant}/m.json"},
    }
    folders = project_folders(tmp_path, catalog, {"caches": {"tokens": "/cache/tokens", "optuna": 3}})
    assert folders.deep == (
        tmp_path / "data",
        tmp_path / "data/06_models/demo/model_checkpoint.safetensors",
        Path("/scratch/out/m.json"),
        Path("/ckpt/model.safetensors"),
        Path("/runs/ablation"),
        Path("/cache/tokens"),
    )
    assert Path("/scratch/out") in folders.shallow and Path("/runs") in folders.shallow


def test_atomic_path_still_leaves_nothing_behind_on_success(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "a.bin") as temporary_path:
        temporary_path.write_bytes(b"x")
    assert files(tmp_path) == ["a.bin"]


@pytest.mark.parametrize("kind", ["tmp", "old"])
def test_both_kinds_of_sibling_are_recognised(tmp_path: Path, kind: str) -> None:
    name = temporary_sibling(tmp_path / "idx", kind).name.replace(f".{os.getpid()}@", f".{dead_pid()}@")
    path = tmp_path / name
    path.mkdir()
    aged(path, 5)
    remove_stale_temporaries([tmp_path])
    assert not path.exists()
