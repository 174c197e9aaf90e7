"""DDP on CPU (gloo, two processes launched by torchrun) equals one process on the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.training.ddp_worker import one_step, short_run
from tests.training.tiny_run import tiny_inputs
from timam.launch import runtime_parameters
from timam.training.distributed import DistributedContext, global_batch, local_share

WORKER = Path(__file__).with_name("ddp_worker.py")


def torchrun(workdir: Path, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(workdir),
        mode,
    ]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return torch.load(workdir / f"{mode}_ranks2.pt", weights_only=True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The tiny demo and its token cache, written once before the ranks read them."""
    directory = tmp_path_factory.mktemp("ddp")
    tiny_inputs(directory)
    return directory


def test_shares_are_equal_disjoint_and_cover_the_trimmed_batch():
    batch = torch.arange(11)
    shares = [
        local_share(global_batch(batch, DistributedContext(rank, 3)), DistributedContext(rank, 3)) for rank in range(3)
    ]
    assert [share.tolist() for share in shares] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_two_ranks_give_the_loss_and_gradients_of_one_process(workdir):
    single = one_step(workdir, DistributedContext())
    ranks = torchrun(workdir, "step")
    assert torch.equal(ranks["batch"], single["batch"])
    assert set(ranks["terms"]) == {"identification", "cmpm", "cmpc", "adversarial"} == set(single["terms"])
    for name, value in single["terms"].items():
        assert torch.allclose(ranks["terms"][name], value, rtol=1e-6, atol=1e-6), name
    print(f"loss {float(single['total']):.6f}, difference {float((ranks['total'] - single['total']).abs()):.3e}")
    assert set(ranks["grads"]) == set(single["grads"])
    # Every trainable part: image projection, FC-Embed, BiLSTM, text projection, classifiers.
    assert any(name.startswith("image_encoder.projection") for name in single["grads"])
    assert any(name.startswith("text_encoder.lstm") for name in single["grads"])
    assert any(name.startswith("objective.identification") for name in single["grads"])
    largest = max(float((ranks["grads"][name] - grad).abs().max()) for name, grad in single["grads"].items())
    scale = max(float(grad.abs().max()) for grad in single["grads"].values())
    print(f"largest gradient difference {largest:.3e} (largest gradient {scale:.3e})")
    assert largest <= 1e-5 * scale


def test_two_rank_training_follows_the_one_process_run(workdir):
    single = short_run(workdir, DistributedContext())
    ranks = torchrun(workdir, "run")
    assert ranks["history"].keys() == single["history"].keys()
    for column, values in single["history"].items():
        assert ranks["history"][column] == pytest.approx(values, rel=1e-4, abs=1e-4), column
    for name, tensor in single["weights"].items():
        assert torch.allclose(ranks["weights"][name], tensor, rtol=1e-4, atol=1e-5), name


def test_launch_parameters_nest_like_kedro_run():
    assert runtime_parameters("training.epochs=3, model.lstm_hidden=8") == {
        "training": {"epochs": 3},
        "model": {"lstm_hidden": 8},
    }
    assert runtime_parameters("") == {}
    with pytest.raises(SystemExit, match="key=value"):
        runtime_parameters("training.epochs")
