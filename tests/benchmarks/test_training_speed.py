"""benchmarks/training_speed.py measures the paper configuration as conf/paper sets it, in every mode
(the paper's first five epochs and two gloo ranks included); ``--tiny`` runs them all in seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "training_speed.py"


@pytest.fixture
def training_speed(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import training_speed

    return training_speed


def test_the_paper_configuration_is_read_from_conf_paper(training_speed):
    import _common

    args = training_speed.parse_args(["--config", "paper"])
    assert args.seq_len == 64 and args.modes == ["cached", "paper5", "uncached"]
    assert _common.project_parameters("paper")["model"]["image_size"] == [384, 128]
    values = training_speed.training_values(args)
    paper5 = training_speed.mode_config(values, "paper5", unfrozen=False)
    assert paper5.augmentation.flip and paper5.augmentation.crop_padding == 10 and paper5.batch_size == 64
    assert (paper5.freeze.image_backbone_epochs, paper5.freeze.text_model_epochs) == (0, None)
    cached = training_speed.mode_config(values, "cached", unfrozen=False)
    assert not cached.augmentation.active  # the loop caches image features only without augmentation
    unfrozen = training_speed.mode_config(values, "uncached", unfrozen=True)
    assert (unfrozen.freeze.image_backbone_epochs, unfrozen.freeze.text_model_epochs) == (0, 0)
    assert training_speed.parse_args(["--mode", "both"]).modes == ["cached", "uncached"]
    with pytest.raises(SystemExit):
        training_speed.parse_args(["--mode", "cached,fast"])


def test_tiny_run_measures_every_mode_and_ends_with_the_training_line():
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [
        sys.executable,
        str(SCRIPT),
        "--tiny",
        "--device",
        "cpu",
        "--config",
        "paper",
        "--mode",
        "cached,paper5,uncached,ddp",
    ]
    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    name, _, rest = finished.stdout.strip().splitlines()[-1].partition(": ")
    values = dict(item.split("=", 1) for item in rest.split(" "))
    assert name == "training" and values["config"] == "paper" and values["tiny"] == "true"
    assert values["main_mode"] == "paper5" and values["mode"] == "cached,paper5,uncached,ddp"
    for mode in ("cached", "paper5", "uncached", "ddp"):
        assert float(values[f"{mode}_pairs_per_s"]) > 0, mode
    assert "paper5: images" in finished.stdout and "caches ('token_states',)" in finished.stdout
