"""Packed codes and Hamming scores: against bit-by-bit references, and the tie-aware metrics of a
hashing model checked against a naive enumeration of every order of its ties."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from timam.retrieval.hamming import code_bytes, hamming_distances, hamming_scores, pack_codes, unpack_codes
from timam.retrieval.ranking import score_ranking_metrics


def test_packing_keeps_the_signs_and_the_byte_layout_faiss_takes():
    outputs = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))
    codes = pack_codes(outputs)
    assert codes.dtype == torch.uint8 and codes.shape == (5, 2)
    assert torch.equal(unpack_codes(codes), torch.where(outputs > 0, 1.0, -1.0))
    first_byte = sum(int(outputs[0, bit] > 0) << (7 - bit) for bit in range(8))  # most significant bit first
    assert int(codes[0, 0]) == first_byte
    with pytest.raises(ValueError, match="multiple of 8"):
        pack_codes(torch.randn(2, 12))
    assert code_bytes(64) == 8


def test_distances_count_differing_bits():
    generator = torch.Generator().manual_seed(1)
    queries = pack_codes(torch.randn(7, 24, generator=generator))
    gallery = pack_codes(torch.randn(11, 24, generator=generator))
    distances = hamming_distances(queries, gallery, chunk_size=3)
    q_bits, g_bits = unpack_codes(queries), unpack_codes(gallery)
    for i in range(7):
        for j in range(11):
            assert int(distances[i, j]) == int((q_bits[i] != g_bits[j]).sum())
    assert torch.equal(hamming_scores(queries, gallery), -distances.float())


def _naive_metrics(distances: list[list[int]], relevant: list[list[bool]], ks: tuple[int, ...]) -> dict[str, float]:
    """Mean over queries of R@K and AP, averaged over EVERY order of each query's tied items."""
    totals = {f"R@{k}": 0.0 for k in ks} | {"mAP": 0.0}
    for row, rel in zip(distances, relevant, strict=True):
        groups = [[j for j in range(len(row)) if row[j] == d] for d in sorted(set(row))]
        orders = list(itertools.product(*(itertools.permutations(group) for group in groups)))
        for order in orders:
            ranked = [j for group in order for j in group]
            hits = [rel[j] for j in ranked]
            for k in ks:
                totals[f"R@{k}"] += float(any(hits[:k])) / len(orders)
            found, precision = 0, 0.0
            for position, hit in enumerate(hits, start=1):
                if hit:
                    found += 1
                    precision += found / position
            totals["mAP"] += precision / sum(rel) / len(orders)
    return {key: 100 * value / len(distances) for key, value in totals.items()}


def test_hamming_rankings_count_ties_exactly_as_the_expected_rule():
    # 4-bit codes: 7 gallery items share few distances, so most items of a query tie with others.
    gallery_bits = [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 0]]
    query_bits = [[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 0, 0]]

    def packed(rows):  # 4 bits of code and 4 equal padding bits: a byte
        return pack_codes(torch.tensor([row + [0] * 4 for row in rows], dtype=torch.float32) * 2 - 1)

    queries, gallery = packed(query_bits), packed(gallery_bits)
    query_labels, gallery_labels = torch.tensor([0, 1, 2]), torch.tensor([0, 3, 2, 1, 1, 2, 0])
    scores = hamming_scores(queries, gallery)
    distances = (-scores).int().tolist()
    assert all(max(row.count(d) for d in row) >= 3 for row in distances)  # every query has a tie of 3 or more
    relevant = [[int(g) == int(q) for g in gallery_labels] for q in query_labels]
    expected = _naive_metrics(distances, relevant, (1, 2, 5))
    ours = score_ranking_metrics(scores, query_labels, gallery_labels, ks=(1, 2, 5), tie_rules=("expected",))
    for key, value in expected.items():
        assert ours["expected"][key] == pytest.approx(value, abs=1e-9), key
    # The index rule (ties to the lower gallery index) is one of those orders, and differs from their mean.
    index = score_ranking_metrics(scores, query_labels, gallery_labels, ks=(1, 2, 5), tie_rules=("index",))
    assert index["index"]["R@1"] != pytest.approx(ours["expected"]["R@1"])


def test_codes_of_another_length_or_type_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        hamming_distances(torch.zeros(1, 2, dtype=torch.int32), torch.zeros(1, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="one length"):
        hamming_distances(torch.zeros(1, 2, dtype=torch.uint8), torch.zeros(1, 3, dtype=torch.uint8))
    assert np.array_equal(unpack_codes(pack_codes(torch.ones(1, 8))).numpy(), np.ones((1, 8), dtype=np.float32))
