"""The resume state outlives training until the checkpoint is saved: a kill at the final save loses
nothing (``kedro run`` killed in a real subprocess at that moment), and ``timam.launch`` and the
Kedro hook delete the state only once every output of the training node is saved."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.io.core import DatasetError
from kedro.pipeline import Node
from safetensors.torch import load_file

from tests.training.tiny_run import REPO, TINY_MODEL, checkout_env, run
from timam.hooks import TrainingStateHook
from timam.io.checkpoint_dataset import ModelCheckpointDataset
from timam.launch import save_outputs
from timam.models.checkpoint import Checkpoint
from timam.models.timam import TimamModel
from timam.training.trainer import TimamTrainer

KEDRO = str(Path(sys.executable).with_name("kedro"))
TINY_DEMO = """
raw_annotations:
  type: timam.io.demo_dataset.DemoReidRawDataset
  filepath: data/01_raw/demo/reid_raw.json
  generator: {num_identities: 12, split_identities: [6, 3, 3], seed: 3}
"""
PARAMETERS = "training: {epochs: 2, batch_size: 16}\n"
BLOCKED_CHECKPOINT = """
model_checkpoint:
  type: tests.training.save_blocker.BlockingCheckpointDataset
  filepath: data/06_models/${globals:dataset}/model_checkpoint.safetensors
  versioned: true
  signal_file: SIGNAL_FILE
"""


def tiny_project(root: Path) -> Path:
    """The project's pyproject and conf with the tiny demo in ``local`` (the default env) and in
    ``kill_at_save``, whose ``model_checkpoint`` blocks as its save starts (``save_blocker``)."""
    shutil.copy(REPO / "pyproject.toml", root)
    (root / "src").mkdir()  # kedro wants a source dir; timam comes from the PYTHONPATH
    shutil.copytree(REPO / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    for env, catalog in (("local", TINY_DEMO), ("kill_at_save", TINY_DEMO + BLOCKED_CHECKPOINT)):
        (root / "conf" / env).mkdir()
        (root / "conf" / env / "catalog.yml").write_text(catalog.replace("SIGNAL_FILE", str(root / "save_started")))
        (root / "conf" / env / "parameters.yml").write_text(PARAMETERS)
    return root


def test_a_kill_at_the_final_checkpoint_save_loses_no_training(tmp_path):
    """SIGKILL of the whole process group of ``kedro run --pipelines train`` as the checkpoint save
    starts: the state survives, and the rerun saves the trained checkpoint without training again."""
    project = tiny_project(tmp_path)
    env = checkout_env(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", KEDRO_DISABLE_TELEMETRY="true")
    log = tmp_path / "killed.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [KEDRO, "run", "--pipelines", "train", "--env", "kill_at_save"],
            cwd=project,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the loader workers die with it
        )
        try:
            deadline = time.monotonic() + 400
            while not (project / "save_started").exists():
                assert process.poll() is None, f"the run ended before the save:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, "the checkpoint save never started"
                time.sleep(0.05)
        finally:
            with contextlib.suppress(ProcessLookupError):  # a group already gone: the assertion above says why
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    killed = log.read_text()
    assert "Saving data to model_checkpoint" in killed and "epoch 2: loss" in killed
    versions = project / "data/06_models/demo/model_checkpoint.safetensors"
    assert [list(folder.iterdir()) for folder in versions.iterdir()] == [[]], "one empty version folder"
    state_path = project / "data/06_models/demo/training_state.pt"
    assert state_path.exists(), "the kill at the final save lost the training state"
    state = torch.load(state_path, weights_only=True)
    assert state["epoch"] == 2

    rerun = subprocess.run(
        [KEDRO, "run", "--pipelines", "train"], cwd=project, env=env, capture_output=True, text=True, check=False
    )
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output[-3000:]
    assert f"Resuming training from {Path('data/06_models/demo/training_state.pt')} after epoch 2" in output
    assert "holds all 2 epochs" in output and "epoch 1: loss" not in output, "trained again from epoch 1"
    saved = [file for folder in versions.iterdir() for file in folder.iterdir()]
    assert len(saved) == 1, "the rerun saved the checkpoint"
    tensors = load_file(saved[0])
    assert all(torch.equal(tensors[name], tensor) for name, tensor in state["best_model"].items())
    history = next((project / "data/08_reporting/demo/training_history.csv").glob("*/training_history.csv"))
    losses = pd.read_csv(history)["loss_total"].tolist()
    assert losses == [row["loss_total"] for row in state["history"]]
    assert not state_path.exists(), "the state goes once the checkpoint and history are saved"


def _checkpoint(state_path: Path) -> Checkpoint:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random image weights
        model = TimamModel(TINY_MODEL)
    return Checkpoint(model=model, metadata={"training": {"state_path": str(state_path)}})


def test_the_hook_deletes_the_state_once_every_output_of_the_training_node_is_saved(tmp_path):
    state = tmp_path / "training_state.pt"
    state.write_bytes(b"state")
    node = Node(lambda: None, None, ["model_checkpoint", "training_history"], name="train_model")
    other = Node(lambda: None, None, ["model_checkpoint", "notes"], name="another_node")
    hook = TrainingStateHook()
    hook.after_dataset_saved("model_checkpoint", _checkpoint(state), node)
    hook.after_dataset_saved("model_checkpoint", _checkpoint(state), other)
    assert state.exists(), "the history is not saved yet"
    hook.after_dataset_saved("training_history", pd.DataFrame(), node)
    assert not state.exists()


class _FailingSave(MemoryDataset):
    def save(self, data) -> None:
        raise OSError("killed mid-save")


def test_launch_deletes_the_state_only_after_saving_every_output(tmp_path):
    state = tmp_path / "training_state.pt"
    state.write_bytes(b"state")
    outputs = {"model_checkpoint": _checkpoint(state), "training_history": pd.DataFrame({"epoch": [1]})}
    failing = DataCatalog({"model_checkpoint": _FailingSave(), "training_history": MemoryDataset()})
    with pytest.raises(DatasetError, match="killed mid-save"):
        save_outputs(failing, outputs)
    assert state.exists()
    checkpoint = ModelCheckpointDataset(filepath=str(tmp_path / "model_checkpoint.safetensors"))
    save_outputs(DataCatalog({"model_checkpoint": checkpoint, "training_history": MemoryDataset()}), outputs)
    assert not state.exists()
    assert checkpoint.load().metadata == outputs["model_checkpoint"].metadata


def test_a_state_holding_every_epoch_gives_the_same_checkpoint_without_training(tmp_path, monkeypatch, caplog):
    state = tmp_path / "state.pt"
    first = run(tmp_path, 2, state_path=state, keep_state=True)
    assert torch.load(state, weights_only=True)["epoch"] == 2, "kept for the caller to delete after saving"

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(TimamTrainer, "train_epoch", no_training)
    again = run(tmp_path, 2, state_path=state, keep_state=True)
    assert json.dumps(again, sort_keys=True) == json.dumps(first, sort_keys=True)
    assert "holds all 2 epochs" in caplog.text
