"""One training step, or a short run, of the tiny demo: in one process, or per rank under torchrun.

``torchrun --nproc_per_node 2 ddp_worker.py WORKDIR MODE`` writes rank 0's result to
WORKDIR/<MODE>_ranks<world size>.pt; the DDP tests compare it with the same call in one process.
MODE is ``step`` or ``run`` (FC-Embed, frozen throughout), or ``bert_step`` or ``bert_run`` (a tiny
BERT that the freeze schedule unfreezes after epoch 1 of 3: the step is one of epoch 2, the run
trains through the unfreeze).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

from tests.training.tiny_run import tiny_bert_model, tiny_inputs
from timam.models.timam import TimamModel
from timam.training.cached_split import CachedSplit
from timam.training.config import training_config
from timam.training.distributed import DistributedContext, context_from_environment
from timam.training.loop import seed_everything, train_timam
from timam.training.trainer import TimamTrainer

# Identification, CMPM, CMPC, the adversarial term and the contrastive ones (InfoNCE, SDM, SigLIP,
# whose negatives are the other ranks' too) all on: every loss that needs the global batch.
CONFIG = {
    "batch_size": 8,
    "embed_batch_size": 8,
    "device": "cpu",
    "epochs": 2,
    "loss_weights": {
        "identification": 1.0,
        "cmpm": 1.0,
        "cmpc": 0.5,
        "adversarial": 0.5,
        "infonce": 0.5,
        "sdm": 0.5,
        "siglip": 0.5,
    },
    "adversarial": {"warmup_epochs": 0},
}
# The transformer frozen (its token states cached) in epoch 1 and trained with the heads from epoch
# 2: DDP is rebuilt around it at the unfreeze, and every parameter it then holds must get a gradient.
BERT_CONFIG = {
    **CONFIG,
    "epochs": 3,
    "loss_weights": {**CONFIG["loss_weights"], "triplet": 0.5},
    "freeze": {"text_model_epochs": 1},
}


def _inputs(workdir: Path, bert: bool):
    train, val, model_config = tiny_inputs(workdir)
    return train, val, tiny_bert_model(workdir) if bert else model_config


def one_step(workdir: Path, context: DistributedContext, *, bert: bool = False) -> dict:
    """Loss terms and every gradient after the backward pass of the first global batch (of epoch 2,
    with the transformer trainable, for ``bert``)."""
    train, val, model_config = _inputs(workdir, bert)
    config = training_config(BERT_CONFIG if bert else CONFIG)
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
    trainer.set_epoch(2 if bert else 1)
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


def short_run(workdir: Path, context: DistributedContext, *, bert: bool = False) -> dict:
    """The history and final weights of a short run with every optimiser step taken (two epochs,
    or for ``bert`` three, the transformer training in the last two)."""
    train, val, model_config = _inputs(workdir, bert)
    config = training_config(BERT_CONFIG if bert else CONFIG)
    checkpoint, history = train_timam(train, val, model_config, config, context=context)
    return {"history": history.drop(columns="seconds").to_dict(orient="list"), "weights": checkpoint.model.state_dict()}


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    directory, mode = Path(sys.argv[1]), sys.argv[2]
    context = context_from_environment()
    job = one_step if mode.endswith("step") else short_run
    result = job(directory, context, bert=mode.startswith("bert_"))
    if context.is_main:
        torch.save(result, directory / f"{mode}_ranks{context.world_size}.pt")
    torch.distributed.destroy_process_group()
