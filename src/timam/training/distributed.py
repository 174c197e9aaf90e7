"""Data-parallel training across processes (torchrun): one global batch, split between the ranks.

Every rank draws the same global batches (same seed), embeds its own contiguous share, and gathers
all shares *with gradient*, so CMPM, identification and the adversarial term see the negatives of
the whole global batch. The loss is then the same number on every rank. The gather's backward sums
each rank's gradient for a share (world_size x the true gradient of that share);
DistributedDataParallel's averaging over ranks then gives the encoders the single-process gradient
of the global batch. The loss heads (classifiers, discriminator) act on the gathered embeddings, so
their gradients are already identical on every rank; they are averaged too, which changes nothing
on CPU and keeps GPU ranks from drifting apart.

That equality to one process holds while every layer treats a sample independently of the others
in its share, i.e. without BatchNorm in training mode (and without dropout, whose masks each rank
draws for its own share). A trainable backbone's BatchNorm normalises each rank's share (64/N
images) with that share's statistics and updates its running statistics from it; with
``training.sync_batchnorm`` (``auto``: when several GPU ranks train the backbone) its layers become
SyncBatchNorm, which normalises with the statistics of the whole global batch, as one process would
(up to rounding). Frozen parts run in eval mode, where BatchNorm uses its stored statistics.

Why not ``DistributedSampler``: it shards a permutation of single items, which would break the
P x K identity batches apart and make a rank's batch differ from a one-process batch. Sharding each
global batch keeps the same guarantees (disjoint shares, every caption once per epoch, reproducible
from the seed) and keeps the global batch identical to a one-process run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits: rank 0 of 1 when not launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """The one rank that logs, shows progress and saves."""
        return self.rank == 0


def context_from_environment() -> DistributedContext:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK); single process otherwise.

    NCCL when the process has a GPU, gloo on CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistributedContext()
    context = DistributedContext(
        rank=int(os.environ["RANK"]), world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", "0"))
    )
    if not dist.is_initialized():
        # Both backends where there is a GPU: training.device may still put the tensors on the CPU.
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    return context


def check_batch_divides(batch_size: int, group_size: int, context: DistributedContext) -> None:
    """Refuse a global batch the ranks cannot share equally (P x K batches: every whole group)."""
    if context.active and (batch_size // group_size * group_size) % context.world_size:
        raise ValueError(
            f"training.batch_size {batch_size} (in groups of {group_size}) does not split into {context.world_size} "
            f"equal shares; use a multiple of {context.world_size * group_size}"
        )


def rank_device(requested: torch.device, context: DistributedContext) -> torch.device:
    """Each rank on its own GPU (cuda:LOCAL_RANK); CPU ranks share the CPU."""
    if requested.type == "cuda" and context.active:
        torch.cuda.set_device(context.local_rank)
        return torch.device("cuda", context.local_rank)
    return requested


def global_batch(batch: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """The batch trimmed to a multiple of the world size, so every rank gets an equal share.

    Equal shares are what the gather needs; at most ``world_size - 1`` captions of a batch sit out
    an epoch (only the last batch, when the batch size is a multiple of the world size).
    """
    return batch[: len(batch) - len(batch) % context.world_size]


def local_share(batch: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """This rank's contiguous share of a trimmed global batch (gathering restores the global order)."""
    share = len(batch) // context.world_size
    return batch[context.rank * share : (context.rank + 1) * share]


class GatherRows(torch.autograd.Function):
    """All-gather of equal row blocks whose backward sums every rank's gradient for this rank's rows.

    Written on torch's public collectives (``all_gather_single``, ``reduce_scatter_single``; gloo and
    NCCL both have them): ``torch.distributed.nn.all_gather``, the public autograd gather, is
    deprecated in torch 2.13 in favour of the private ``_functional_collectives`` module.
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        world_size = dist.get_world_size()
        gathered = tensor.new_empty((world_size * tensor.shape[0], *tensor.shape[1:]))
        dist.all_gather_single(gathered, tensor.contiguous())
        return gathered

    @staticmethod
    def backward(ctx: Any, *grad_outputs: torch.Tensor) -> torch.Tensor:
        (grad,) = grad_outputs
        own_rows = grad.new_empty((grad.shape[0] // dist.get_world_size(), *grad.shape[1:]))
        dist.reduce_scatter_single(own_rows, grad.contiguous())  # the sum over ranks, this rank's block
        return own_rows


def gather_with_grad(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Every rank's rows in rank order, differentiable with respect to this rank's rows."""
    if not context.active:
        return tensor
    return GatherRows.apply(tensor)


def broadcast_from_main(value: T, context: DistributedContext) -> T:
    """Rank 0's ``value`` on every rank (a resume state, validation scores): one source of truth."""
    if not context.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def average_gradients(parameters: list[nn.Parameter], context: DistributedContext) -> None:
    """Average the gradients of replicated parameters over the ranks (one flattened all-reduce)."""
    grads = [parameter.grad for parameter in parameters if parameter.grad is not None]
    if not context.active or not grads:
        return
    flat = torch.cat([grad.flatten() for grad in grads])
    dist.all_reduce(flat)
    flat /= context.world_size
    for grad, update in zip(grads, flat.split([grad.numel() for grad in grads]), strict=True):
        grad.copy_(update.view_as(grad))


def data_parallel(module: nn.Module, device: torch.device, context: DistributedContext) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel when there are several ranks, as is otherwise.

    DDP registers the parameters that require gradients when it is built, so callers rebuild the
    wrapper when the freeze schedule changes which parameters train.
    """
    if not context.active or not any(parameter.requires_grad for parameter in module.parameters()):
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def barrier(context: DistributedContext) -> None:
    if context.active:
        dist.barrier()


def wants_sync_batchnorm(
    setting: bool | str, context: DistributedContext, device: torch.device, *, backbone_trains: bool
) -> bool:
    """Whether the image backbone's BatchNorm layers become SyncBatchNorm (``training.sync_batchnorm``).

    ``auto``: when several ranks train the backbone (``backbone_trains``: it is not frozen
    throughout) on GPUs. One rank has nothing to synchronise. torch's SyncBatchNorm trains only on
    accelerator tensors, so ``true`` with several CPU (gloo) ranks is refused here rather than on
    the first training step.
    """
    if setting is False or not context.active:
        return False
    if setting == "auto":
        return backbone_trains and device.type != "cpu"
    if device.type == "cpu":
        raise ValueError(
            "training.sync_batchnorm is true but the ranks train on the CPU, where torch's SyncBatchNorm "
            "cannot train; set it to auto or false"
        )
    return True


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm layer replaced by a SyncBatchNorm that holds the same parameter
    and buffer objects (optimisers built on them stay valid; the state dict keys do not change).
    Done before DistributedDataParallel wraps it."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)
