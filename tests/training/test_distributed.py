"""DDP on CPU (gloo, two processes launched by torchrun) equals one process on the same global batch."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.training.ddp_worker import CONFIG, one_step, short_run
from tests.training.tiny_run import checkout_env, tiny_bert_model, tiny_inputs
from timam.launch import runtime_parameters
from timam.models.timam import TimamModel
from timam.training.cached_split import CachedSplit
from timam.training.config import training_config
from timam.training.distributed import (
    DistributedContext,
    global_batch,
    local_share,
    sync_batchnorm,
    wants_sync_batchnorm,
)
from timam.training.trainer import TimamTrainer

WORKER = Path(__file__).with_name("ddp_worker.py")
CPU = torch.device("cpu")


def torchrun(workdir: Path, mode: str) -> dict:
    env = checkout_env(OMP_NUM_THREADS="1")
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
    """The tiny demo, its token cache and the tiny BERT, written once before the ranks read them."""
    directory = tmp_path_factory.mktemp("ddp")
    tiny_inputs(directory)
    tiny_bert_model(directory)
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
    terms = {"identification", "cmpm", "cmpc", "adversarial", "infonce", "sdm", "siglip"}
    assert set(ranks["terms"]) == terms == set(single["terms"])
    for name, value in single["terms"].items():
        assert torch.allclose(ranks["terms"][name], value, rtol=1e-6, atol=1e-6), name
    print(f"loss {float(single['total']):.6f}, difference {float((ranks['total'] - single['total']).abs()):.3e}")
    assert set(ranks["grads"]) == set(single["grads"])
    # Every trainable part: image projection, FC-Embed, BiLSTM, text projection, classifiers.
    assert any(name.startswith("image_encoder.projection") for name in single["grads"])
    assert any(name.startswith("text_encoder.lstm") for name in single["grads"])
    assert any(name.startswith("objective.identification") for name in single["grads"])
    assert {"objective.infonce_scale.log_scale", "objective.siglip_bias.bias"} <= set(single["grads"])
    largest = max(float((ranks["grads"][name] - grad).abs().max()) for name, grad in single["grads"].items())
    scale = max(float(grad.abs().max()) for grad in single["grads"].values())
    print(f"largest gradient difference {largest:.3e} (largest gradient {scale:.3e})")
    assert largest <= 1e-5 * scale


def _assert_same_run(single: dict, ranks: dict, noise_driven: tuple[str, ...] = ()) -> None:
    """Same history and weights; ``noise_driven``: weights (by name ending) whose true gradient is 0."""
    assert ranks["history"].keys() == single["history"].keys()
    for column, values in single["history"].items():
        assert ranks["history"][column] == pytest.approx(values, rel=1e-4, abs=1e-4), column
    assert ranks["weights"].keys() == single["weights"].keys()
    for name, tensor in single["weights"].items():
        if not name.endswith(noise_driven):
            assert torch.allclose(ranks["weights"][name], tensor, rtol=1e-4, atol=1e-5), name


def test_two_rank_training_follows_the_one_process_run(workdir):
    _assert_same_run(short_run(workdir, DistributedContext()), torchrun(workdir, "run"))


def test_two_ranks_with_the_transformer_unfrozen_give_the_gradients_of_one_process(workdir):
    """Epoch 2 of a schedule that unfreezes a tiny BERT after epoch 1: every transformer parameter
    trains, and DDP averages the same gradients one process computes."""
    single = one_step(workdir, DistributedContext(), bert=True)
    ranks = torchrun(workdir, "bert_step")
    assert torch.equal(ranks["batch"], single["batch"])
    terms = {"identification", "cmpm", "cmpc", "triplet", "adversarial", "infonce", "sdm", "siglip"}
    assert set(ranks["terms"]) == terms == set(single["terms"])
    for name, value in single["terms"].items():
        assert torch.allclose(ranks["terms"][name], value, rtol=1e-6, atol=1e-6), name
    assert set(ranks["grads"]) == set(single["grads"])
    transformer = [name for name in single["grads"] if name.startswith("text_encoder.transformer.")]
    assert any(".encoder.layer.1." in name for name in transformer) and not any("pooler" in n for n in transformer)
    largest = max(float((ranks["grads"][name] - grad).abs().max()) for name, grad in single["grads"].items())
    scale = max(float(grad.abs().max()) for grad in single["grads"].values())
    assert largest <= 1e-5 * scale


def test_two_rank_training_through_the_transformer_unfreeze_follows_the_one_process_run(workdir):
    """Three epochs, the transformer unfrozen after the first: DDP is rebuilt with it inside and
    trains on through epochs 2 and 3 (with BERT's unused pooler, the second step after the
    unfreeze raised "Expected to have finished reduction in the prior iteration")."""
    single = short_run(workdir, DistributedContext(), bert=True)
    ranks = torchrun(workdir, "bert_run")
    assert single["history"]["epoch"] == [1, 2, 3]
    # A key bias adds one number to all of a query's attention scores, which the softmax ignores:
    # its true gradient is 0 and the computed one rounding noise, which Adam scales to full steps.
    _assert_same_run(single, ranks, noise_driven=("attention.self.key.bias",))
    assert any(name.startswith("text_encoder.transformer.") for name in single["weights"])


def test_launch_parameters_nest_like_kedro_run():
    assert runtime_parameters("training.epochs=3, model.lstm_hidden=8") == {
        "training": {"epochs": 3},
        "model": {"lstm_hidden": 8},
    }
    assert runtime_parameters("") == {}
    with pytest.raises(SystemExit, match="key=value"):
        runtime_parameters("training.epochs")


GPU = torch.device("cuda", 0)  # only a device name: the decision creates no tensor
TWO_RANKS = DistributedContext(rank=0, world_size=2)


def test_sync_batchnorm_when_several_gpu_ranks_train_the_backbone():
    """``auto``: only when there is something to synchronise (several ranks), a backbone that trains
    (BatchNorm in training mode) and GPU tensors (torch's SyncBatchNorm trains on no others)."""
    assert wants_sync_batchnorm("auto", TWO_RANKS, GPU, backbone_trains=True)
    assert not wants_sync_batchnorm("auto", TWO_RANKS, GPU, backbone_trains=False)  # frozen: eval-mode BatchNorm
    assert not wants_sync_batchnorm("auto", DistributedContext(), GPU, backbone_trains=True)  # one rank
    assert not wants_sync_batchnorm("auto", TWO_RANKS, CPU, backbone_trains=True)  # gloo on CPU
    assert wants_sync_batchnorm(True, TWO_RANKS, GPU, backbone_trains=False)
    assert not wants_sync_batchnorm(True, DistributedContext(), GPU, backbone_trains=True)
    assert not wants_sync_batchnorm(False, TWO_RANKS, GPU, backbone_trains=True)
    with pytest.raises(ValueError, match="cannot train; set it to auto or false"):
        wants_sync_batchnorm(True, TWO_RANKS, CPU, backbone_trains=True)
    with pytest.raises(ValueError, match="training.sync_batchnorm must be auto, true or false, got 'maybe'"):
        training_config({"sync_batchnorm": "maybe"})


def test_sync_batchnorm_keeps_the_parameters_buffers_and_eval_outputs():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    backbone(torch.randn(6, 3, 8, 8))  # running statistics away from their initial values
    backbone.eval()
    images = torch.randn(2, 3, 8, 8)
    before, tensors, keys = backbone(images), list(backbone.parameters()), list(backbone.state_dict())
    converted = sync_batchnorm(backbone)
    assert [type(m) for m in converted.modules()].count(nn.SyncBatchNorm) == 2
    assert not any(type(m) is nn.BatchNorm2d for m in converted.modules())
    assert all(a is b for a, b in zip(converted.parameters(), tensors, strict=True))  # optimisers stay valid
    assert list(converted.state_dict()) == keys  # checkpoints and resume states unchanged
    assert torch.equal(converted(images), before)  # eval mode: the stored statistics, on any device


def _batchnorm_types(workdir: Path, monkeypatch, values: dict, decision: bool | None = None) -> tuple[set, list]:
    """The backbone's normalisation layer types in a two-rank trainer (built, not stepped: no process
    group is needed), and the arguments the trainer asked the decision with."""
    import timam.training.trainer as trainer_module

    train, val, model_config = tiny_inputs(workdir)
    asked = []

    def spy(setting, context, device, *, backbone_trains):
        asked.append((setting, context.world_size, device.type, backbone_trains))
        if decision is None:
            return wants_sync_batchnorm(setting, context, device, backbone_trains=backbone_trains)
        return decision

    monkeypatch.setattr(trainer_module, "wants_sync_batchnorm", spy)
    config = training_config({**CONFIG, **values})
    model = TimamModel(model_config)
    caches = (CachedSplit(model, split, batch_size=8, device=CPU) for split in (train, val))
    trainer = TimamTrainer(model, *caches, config, CPU, TWO_RANKS)
    backbone = trainer.model.image_encoder.backbone
    kinds = {type(m) for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    optimised = {id(p) for group in trainer.optimizers.image.param_groups for p in group["params"]}
    assert {id(p) for p in backbone.parameters()} <= optimised
    return kinds, asked


def test_the_trainer_converts_the_backbone_before_ddp_when_the_decision_says_so(workdir, monkeypatch):
    """On CPU ranks ``auto`` keeps BatchNorm; where the decision holds (two GPU ranks training the
    backbone, stood in for here) the trainer's backbone holds SyncBatchNorm layers on the very
    parameters its optimiser steps. A training step of SyncBatchNorm needs GPU tensors in torch
    2.13, so gloo on CPU checks the decision and the conversion, not the synchronised statistics."""
    trains = {"freeze": {"image_backbone_epochs": 0}}
    assert _batchnorm_types(workdir, monkeypatch, trains) == ({nn.BatchNorm2d}, [("auto", 2, "cpu", True)])
    frozen = _batchnorm_types(workdir, monkeypatch, {}, decision=False)
    assert frozen == ({nn.BatchNorm2d}, [("auto", 2, "cpu", False)])  # frozen throughout: not trained
    plateau = _batchnorm_types(workdir, monkeypatch, {"freeze": {"image_backbone_epochs": "plateau"}}, decision=True)
    assert plateau == ({nn.SyncBatchNorm}, [("auto", 2, "cpu", True)])
    with pytest.raises(ValueError, match="cannot train"):
        _batchnorm_types(workdir, monkeypatch, {**trains, "sync_batchnorm": True})
