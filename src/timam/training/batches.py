"""Batch composition: uniformly random captions, or P identities x K captions each, and the epoch's
global batches every family trains on (:func:`epoch_batches`).

CMPM treats every same-identity pair in a batch as a positive, so an identity-aware batch gives it
positives to learn from; with random batches most identities appear once.
"""

from __future__ import annotations

import torch

from timam.training.config import TrainingConfig
from timam.training.distributed import DistributedContext, global_batch


def epoch_batches(
    labels: torch.Tensor, config: TrainingConfig, generator: torch.Generator, context: DistributedContext
) -> list[torch.Tensor]:
    """One epoch's global batches of caption indices as ``training.sampler`` draws them, the same on
    every rank (same generator), each trimmed so the ranks get equal shares (a batch left with fewer
    than 2 captions is dropped). ``labels``: each training caption's identity label."""
    if config.sampler == "identity":
        batches = identity_batches(labels, config.batch_size, config.samples_per_identity, generator)
    else:
        batches = random_batches(len(labels), config.batch_size, generator)
    batches = [global_batch(batch, context) for batch in batches]
    return [batch for batch in batches if len(batch) >= 2]


def random_batches(num_items: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A permutation cut into batches; a last batch smaller than 2 is dropped (no pairs to contrast)."""
    order = torch.randperm(num_items, generator=generator)
    batches = list(order.split(batch_size))
    return [batch for batch in batches if len(batch) >= 2]


def identity_batches(
    labels: torch.Tensor, batch_size: int, samples_per_identity: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """About one epoch of P x K batches: P = batch_size // K identities, K captions of each.

    Identities with fewer than K captions are sampled with replacement; every identity is visited
    once per epoch in random order.
    """
    k = max(1, min(samples_per_identity, batch_size))
    per_batch = max(1, batch_size // k)
    identities = labels.unique()
    members = {int(label): torch.nonzero(labels == label).flatten() for label in identities}
    order = identities[torch.randperm(len(identities), generator=generator)]
    batches = []
    for start in range(0, len(order), per_batch):
        chosen = []
        for label in order[start : start + per_batch].tolist():
            pool = members[label]
            if len(pool) >= k:
                picks = pool[torch.randperm(len(pool), generator=generator)[:k]]
            else:
                picks = pool[torch.randint(len(pool), (k,), generator=generator)]
            chosen.append(picks)
        batch = torch.cat(chosen)
        if len(batch) >= 2:
            batches.append(batch)
    return batches
