"""Tests for the batch samplers: random permutation batches and P identities x K captions batches."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from timam.training.batches import identity_batches, random_batches


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _flat(batches: list[torch.Tensor]) -> list[int]:
    return [int(i) for batch in batches for i in batch]


def _labels(counts: list[int]) -> torch.Tensor:
    """Captions in label order: ``counts[c]`` captions of identity ``c``."""
    return torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(counts)])


# --- random_batches ------------------------------------------------------------------------------


@pytest.mark.parametrize(("num_items", "batch_size"), [(12, 4), (14, 4), (7, 7), (11, 3), (3, 8)])
def test_random_batches_cover_every_caption_exactly_once(num_items: int, batch_size: int) -> None:
    # 14 = 3 x 4 + 2 and 11 = 3 x 3 + 2: a smaller last batch of 2 or more is kept.
    batches = random_batches(num_items, batch_size, _generator())
    assert sorted(_flat(batches)) == list(range(num_items))
    sizes = [len(b) for b in batches]
    full, rest = divmod(num_items, batch_size)
    assert sizes == [batch_size] * full + ([rest] if rest else [])
    assert all(batch.dtype == torch.long for batch in batches)


def test_random_batches_drop_a_last_batch_of_one() -> None:
    batches = random_batches(9, 4, _generator(3))  # 4 + 4 + 1: the single caption has nothing to contrast with
    assert [len(b) for b in batches] == [4, 4]
    seen = _flat(batches)
    assert len(seen) == len(set(seen)) == 8
    assert set(seen) < set(range(9))


def test_random_batches_of_too_few_items_are_empty() -> None:
    assert random_batches(1, 4, _generator()) == []
    assert random_batches(0, 4, _generator()) == []
    assert random_batches(5, 1, _generator()) == []  # batches of one are all dropped


def test_random_batches_are_a_permutation_not_the_identity_order() -> None:
    flat = _flat(random_batches(50, 8, _generator(1)))
    assert flat != list(range(50))  # chance of the identity permutation: 1 / 50!


def test_random_batches_reproducible_from_the_generator_only() -> None:
    torch.manual_seed(123)
    first = random_batches(40, 6, _generator(7))
    torch.manual_seed(456)  # the global RNG must not matter: every rank draws from its own seeded generator
    second = random_batches(40, 6, _generator(7))
    assert len(first) == len(second)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    other = random_batches(40, 6, _generator(8))
    assert _flat(other) != _flat(first)


def test_random_batches_differ_between_epochs_of_one_generator() -> None:
    generator = _generator(5)
    epoch_one = _flat(random_batches(30, 5, generator))
    epoch_two = _flat(random_batches(30, 5, generator))
    assert sorted(epoch_one) == sorted(epoch_two) == list(range(30))
    assert epoch_one != epoch_two


# --- identity_batches ----------------------------------------------------------------------------


def test_identity_batches_have_p_identities_of_k_distinct_captions() -> None:
    labels = _labels([5] * 8)  # 8 identities of 5 captions; batch 8, K 2 -> P 4 -> two full batches
    batches = identity_batches(labels, batch_size=8, samples_per_identity=2, generator=_generator())
    assert [len(b) for b in batches] == [8, 8]
    for batch in batches:
        counts = Counter(int(labels[i]) for i in batch)
        assert len(counts) == 4 and set(counts.values()) == {2}
        assert len(set(batch.tolist())) == 8  # K <= pool size: drawn without replacement
        # each identity's K captions sit together (the layout the distributed shares rely on)
        groups = [labels[batch[j : j + 2]] for j in range(0, 8, 2)]
        assert all(len(group.unique()) == 1 for group in groups)


def test_identity_batches_visit_every_identity_once_per_epoch() -> None:
    labels = _labels([3, 4, 6, 2, 5, 3, 4])  # 7 identities; P = 6 // 3 = 2 -> batches of 2, 2, 2, 1 identities
    batches = identity_batches(labels, batch_size=6, samples_per_identity=3, generator=_generator(2))
    assert [len(b) for b in batches] == [6, 6, 6, 3]
    per_batch = [set(labels[b].tolist()) for b in batches]
    visited = [identity for identities in per_batch for identity in identities]
    assert sorted(visited) == list(range(7))  # each identity in exactly one batch
    for batch in batches:
        assert all(count == 3 for count in Counter(labels[batch].tolist()).values())


def test_identity_batches_pick_only_the_identitys_own_captions() -> None:
    labels = torch.tensor([4, 9, 4, 9, 4, 9, 17, 17, 17, 17])  # non-contiguous, interleaved label values
    batches = identity_batches(labels, batch_size=4, samples_per_identity=2, generator=_generator(11))
    positions = {4: {0, 2, 4}, 9: {1, 3, 5}, 17: {6, 7, 8, 9}}
    for batch in batches:
        for j in range(0, len(batch), 2):
            pair = batch[j : j + 2].tolist()
            label = int(labels[pair[0]])
            assert set(pair) <= positions[label] and len(set(pair)) == 2


def test_identity_with_fewer_than_k_captions_is_sampled_with_replacement() -> None:
    labels = _labels([1, 2, 4])  # K = 4: identity 0 has one caption, identity 1 two
    batches = identity_batches(labels, batch_size=4, samples_per_identity=4, generator=_generator())
    assert len(batches) == 3 and all(len(b) == 4 for b in batches)
    by_identity = {int(labels[b[0]]): b.tolist() for b in batches}
    assert by_identity[0] == [0, 0, 0, 0]
    assert set(by_identity[1]) <= {1, 2}
    assert sorted(by_identity[2]) == [3, 4, 5, 6]  # exactly K: each once


def test_k_larger_than_the_batch_is_clamped_to_one_identity_per_batch() -> None:
    labels = _labels([6, 6, 6])
    batches = identity_batches(labels, batch_size=3, samples_per_identity=5, generator=_generator())
    assert len(batches) == 3
    for batch in batches:
        assert len(batch) == 3 and len(labels[batch].unique()) == 1 and len(set(batch.tolist())) == 3


def test_k_of_one_gives_p_distinct_identities_and_drops_a_last_singleton() -> None:
    labels = _labels([2] * 5)  # K 1, batch 4 -> P 4: batches of 4 identities and then 1 (dropped)
    batches = identity_batches(labels, batch_size=4, samples_per_identity=1, generator=_generator(4))
    assert [len(b) for b in batches] == [4]
    assert len(labels[batches[0]].unique()) == 4
    # a non-positive K is treated as 1 as well
    again = identity_batches(labels, batch_size=4, samples_per_identity=0, generator=_generator(4))
    assert [b.tolist() for b in again] == [b.tolist() for b in batches]


def test_identity_batches_reproducible_and_seed_dependent() -> None:
    labels = _labels([4] * 12)
    torch.manual_seed(1)
    first = identity_batches(labels, 8, 2, _generator(21))
    torch.manual_seed(2)
    second = identity_batches(labels, 8, 2, _generator(21))
    assert [b.tolist() for b in first] == [b.tolist() for b in second]
    third = identity_batches(labels, 8, 2, _generator(22))
    assert [b.tolist() for b in third] != [b.tolist() for b in first]


def test_identity_batches_change_order_between_epochs() -> None:
    labels = _labels([3] * 10)
    generator = _generator(9)
    epoch_one = [labels[b].tolist() for b in identity_batches(labels, 6, 3, generator)]
    epoch_two = [labels[b].tolist() for b in identity_batches(labels, 6, 3, generator)]
    assert epoch_one != epoch_two
    assert sorted(x for b in epoch_one for x in b) == sorted(x for b in epoch_two for x in b)


def test_identity_batches_of_no_captions_are_empty() -> None:
    assert identity_batches(torch.empty(0, dtype=torch.long), 4, 2, _generator()) == []
