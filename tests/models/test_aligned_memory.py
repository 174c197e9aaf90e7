"""ACMM-style aligned memory scores against a reference that follows the equations one pair, one word and
one memory item at a time; chunks, padding, gradients, and the interaction scoring it plugs into."""

from __future__ import annotations

import json

import pytest
import torch

from timam.inference.interaction import pair_scores
from timam.models.aligned_memory import (
    AlignedMemory,
    AlignedMemoryConfig,
    MemoryWeights,
    aligned_memory_scores,
    chunked_aligned_memory_scores,
)

LAMBDA, BETA = 4.0, 3.0


def _inputs(images=2, regions=3, captions=3, words=4, d=5, lengths=(4, 2, 3), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    region_features = torch.randn(images, regions, d, generator=g, dtype=dtype)
    word_features = torch.randn(captions, words, d, generator=g, dtype=dtype)
    mask = torch.arange(words)[None, :] < torch.tensor(lengths)[:, None]
    return region_features, word_features, mask


def _weights(d=5, items=4, seed=1, dtype=torch.float64) -> MemoryWeights:
    g = torch.Generator().manual_seed(seed)
    return MemoryWeights(*(torch.randn(*shape, generator=g, dtype=dtype) for shape in _shapes(d, items)))


def _shapes(d: int, items: int) -> list[tuple[int, ...]]:
    return [(items, d), (3 * d, d), (3 * d,), (3 * d, d), (3 * d,)]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm()


def _softmax(values: list[torch.Tensor]) -> list[torch.Tensor]:
    exps = [torch.exp(v) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def _interface(x, matrix, bias, d):
    raw = matrix @ x + bias
    return raw[:d], torch.sigmoid(raw[d : 2 * d]), torch.tanh(raw[2 * d :])


def _reference_pair(regions, words, weights: MemoryWeights, d: int) -> torch.Tensor:
    """S(I, T) for one image's regions and one caption's REAL words, step by step from the equations."""
    v = [_unit(r) for r in regions]
    w = [_unit(x) for x in words]
    memory = list(weights.memory)
    aligned = []
    for word in w:  # a_j = sum_r softmax_r(λ w_j·v_r) v_r
        alpha = _softmax([LAMBDA * (word @ region) for region in v])
        aligned.append(sum(a * region for a, region in zip(alpha, v, strict=True)))
    image = [_interface(a, weights.image_interface, weights.image_bias, d) for a in aligned]
    text = [_interface(x, weights.text_interface, weights.text_bias, d) for x in w]

    def address(key):  # ω_k = softmax_k(β cos(key, M_k))
        return _softmax([BETA * (_unit(key) @ _unit(item)) for item in memory])

    def update(interfaces):  # M_k ⊙ (1 - mean_j ω_jk e_j) + mean_j ω_jk c_j
        omegas = [address(key) for key, _, _ in interfaces]
        updated = []
        for k, item in enumerate(memory):
            erase = sum(omega[k] * e for omega, (_, e, _) in zip(omegas, interfaces, strict=True)) / len(w)
            add = sum(omega[k] * c for omega, (_, _, c) in zip(omegas, interfaces, strict=True)) / len(w)
            updated.append(item * (1 - erase) + add)
        return omegas, updated

    image_omegas, image_memory = update(image)
    text_omegas, text_memory = update(text)
    total = 0.0
    for j in range(len(w)):
        text_read = sum(o * item for o, item in zip(text_omegas[j], image_memory, strict=True))  # reads V's write
        image_read = sum(o * item for o, item in zip(image_omegas[j], text_memory, strict=True))  # reads T's write
        total = total + _unit(aligned[j] + image_read) @ _unit(w[j] + text_read)
    return total / len(w)


def _scores(regions, words, mask, weights, **chunks):
    return chunked_aligned_memory_scores(regions, words, mask, weights, lambda_softmax=LAMBDA, sharpness=BETA, **chunks)


def test_scores_equal_the_step_by_step_reference_for_every_pair() -> None:
    regions, words, mask = _inputs()
    weights = _weights()
    scores = _scores(regions, words, mask, weights)
    assert scores.shape == (3, 2) and scores.dtype == torch.float64
    for c in range(3):
        for i in range(2):
            expected = _reference_pair(regions[i], words[c][mask[c]], weights, 5)
            assert scores[c, i].item() == pytest.approx(expected.item(), abs=1e-12)


@pytest.mark.parametrize("writer", ["image", "text"])
def test_each_modalitys_update_reaches_the_score_through_the_others_read(writer: str) -> None:
    """A modality's erase and add vectors shape only the memory it updates, and only the OTHER modality
    reads that memory: if they change the score, the other modality read it."""
    regions, words, mask = _inputs()
    weights = _weights()
    matrix, bias = f"{writer}_interface", f"{writer}_bias"
    silent = weights._replace(  # erase = sigmoid(-1e9) = 0 and add = tanh(0) = 0: the update is a no-op
        **{
            matrix: getattr(weights, matrix).clone().index_fill_(0, torch.arange(5, 15), 0.0),
            bias: getattr(weights, bias)
            .clone()
            .index_fill_(0, torch.arange(5, 10), -1e9)
            .index_fill_(0, torch.arange(10, 15), 0.0),
        }
    )
    assert not torch.allclose(_scores(regions, words, mask, weights), _scores(regions, words, mask, silent))


def test_chunked_scores_are_bitwise_one_shot_with_the_default_blocks_and_close_with_others() -> None:
    regions, words, mask = _inputs(images=20, captions=70, words=5, lengths=[1 + n % 5 for n in range(70)], seed=2)
    weights = _weights(seed=3, dtype=torch.float32)
    regions, words = regions.float(), words.float()
    one_shot = aligned_memory_scores(regions, words, mask, weights, lambda_softmax=LAMBDA, sharpness=BETA)
    assert one_shot.shape == (70, 20) and one_shot.dtype == torch.float32
    assert torch.equal(_scores(regions, words, mask, weights, image_chunk=16, caption_chunk=64), one_shot)
    small = _scores(regions, words, mask, weights, image_chunk=3, caption_chunk=7)
    torch.testing.assert_close(small, one_shot, rtol=0, atol=1e-5)


def test_padded_words_are_ignored_whatever_they_hold() -> None:
    regions, words, mask = _inputs()
    weights = _weights()
    garbage = words.clone()
    garbage[~mask] = float("inf")
    torch.testing.assert_close(_scores(regions, garbage, mask, weights), _scores(regions, words, mask, weights))
    # a caption padded to more positions scores as it does unpadded
    short = _scores(regions, words[1:2, :2], mask[1:2, :2], weights)
    torch.testing.assert_close(short, _scores(regions, words, mask, weights)[1:2], rtol=0, atol=1e-12)
    empty = mask.clone()
    empty[0] = False
    with pytest.raises(ValueError, match=r"captions \[0\] have none"):
        _scores(regions, words, empty, weights)


def test_gradients_match_finite_differences_in_float64() -> None:
    regions, words, mask = _inputs(images=2, regions=2, captions=2, words=3, d=3, lengths=(3, 2))
    weights = _weights(d=3, items=2)
    inputs = (regions, words, *weights)
    for tensor in inputs:
        tensor.requires_grad_(True)

    def score(r, w, *tensors):
        return _scores(r, w, mask, MemoryWeights(*tensors))

    assert torch.autograd.gradcheck(score, inputs)


def test_the_module_plugs_into_the_interaction_pair_scoring() -> None:
    config = AlignedMemoryConfig.from_dict({"joint_dim": 6, "memory_items": 3})
    torch.manual_seed(0)
    model = AlignedMemory(config, region_dim=4, word_dim=5)
    regions, states = torch.randn(5, 3, 4), torch.randn(7, 4, 5)
    mask = torch.ones(7, 4, dtype=torch.long)
    mask[2, 2:] = 0
    states[6], mask[6] = states[0], mask[0]  # a repeated caption: scored once, tied exactly
    scores = pair_scores(model, regions, states, mask, device=torch.device("cpu"), image_chunk=2, caption_chunk=3)
    with torch.no_grad():
        direct = model.scores(regions, states, mask, image_chunk=2, caption_chunk=3)
    torch.testing.assert_close(scores, direct, rtol=0, atol=1e-6)
    assert torch.equal(scores[6], scores[0])
    header = json.loads(json.dumps(config.to_dict()))
    assert header["family"] == "acmm" and AlignedMemoryConfig.from_dict(header) == config
