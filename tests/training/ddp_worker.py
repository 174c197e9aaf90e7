"""One training step, or a short run, of the tiny demo: in one process, or per rank under torchrun.

``torchrun --nproc_per_node 2 ddp_worker.py WORKDIR step|run`` writes rank 0's result to
WORKDIR/<mode>_ranks<world size>.pt; the DDP tests compare it with the same call in one process.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

from tests.training.tiny_run import tiny_inputs
from timam.models.timam import TimamModel
from timam.training.cached_split import CachedSplit
from timam.training.config import training_config
from timam.training.distributed import DistributedContext, context_from_environment
from timam.training.loop import seed_everything, train_timam
from timam.training.trainer import TimamTrainer

# Identification, CMPM, CMPC and the adversarial term all on: every loss that needs the global batch.
CONFIG = {
    "batch_size": 8,
    "embed_batch_size": 8,
    "device": "cpu",
    "epochs": 2,
    "loss_weights": {"identification": 1.0, "cmpm": 1.0, "cmpc": 0.5, "adversarial": 0.5},
    "adversarial": {"warmup_epochs": 0},
}


def one_step(workdir: Path, context: DistributedContext) -> dict:
    """Loss terms and every gradient after the backward pass of the first global batch."""
    train, val, model_config = tiny_inputs(workdir)
    config = training_config(CONFIG)
    generator = seed_everything(config.seed)
    device = torch.device("cpu")
    model = TimamModel(model_config)
    trainer = TimamTrainer(
        model,
        CachedSplit(model, train, batch_size=8, device=device),
        CachedSplit(model, val, batch_size=8, device=device),
        config,
        device,
        context,
    )
    trainer.set_epoch(1)
    trainer.set_train_mode()
    batch = trainer.batches(generator)[0]
    terms, _, _ = trainer.batch_terms(batch, None, adversarial_on=True)
    total = trainer.backward(terms)
    named = [*model.named_parameters(), *(("objective." + n, p) for n, p in trainer.objective.named_parameters())]
    return {
        "batch": batch,
        "terms": {name: value.detach() for name, value in terms.items()},
        "total": total.detach(),
        "grads": {name: parameter.grad.clone() for name, parameter in named if parameter.grad is not None},
    }


def short_run(workdir: Path, context: DistributedContext) -> dict:
    """The history and final weights of a two-epoch run with every optimiser step taken."""
    train, val, model_config = tiny_inputs(workdir)
    checkpoint, history = train_timam(train, val, model_config, training_config(CONFIG), context=context)
    return {"history": history.drop(columns="seconds").to_dict(orient="list"), "weights": checkpoint.model.state_dict()}


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    directory, mode = Path(sys.argv[1]), sys.argv[2]
    context = context_from_environment()
    result = (one_step if mode == "step" else short_run)(directory, context)
    if context.is_main:
        torch.save(result, directory / f"{mode}_ranks{context.world_size}.pt")
    torch.distributed.destroy_process_group()
