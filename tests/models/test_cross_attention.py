"""SCAN stacked cross-attention scores against a step-by-step reference, one pair and one query at a time."""

import itertools
import math

import pytest
import torch

from timam.models.cross_attention import (
    DIRECTIONS,
    POOLINGS,
    chunked_cross_attention_scores,
    cross_attention_scores,
)

CASES = list(itertools.product(DIRECTIONS, POOLINGS))


def inputs(n_images=3, n_regions=5, n_captions=4, n_words=6, d=8, lengths=(6, 3, 1, 4), dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    regions = torch.randn(n_images, n_regions, d, generator=g, dtype=dtype)
    words = torch.randn(n_captions, n_words, d, generator=g, dtype=dtype)
    mask = torch.arange(n_words)[None, :] < torch.tensor(lengths)[:, None]
    return regions, words, mask


def unit(x):
    return x / x.norm()


def reference_pair(regions, words, *, direction, lambda_softmax, pooling, lambda_lse, eps=1e-8):
    """S(I, T) for one image's regions (n_regions, d) and one caption's REAL words (length, d), by the equations."""
    image = [unit(r) for r in regions]
    caption = [unit(w) for w in words]
    queries, context = (caption, image) if direction == "t2i" else (image, caption)
    s = torch.stack([torch.stack([q @ c for c in context]) for q in queries])  # s[q, c] = cos(q, c)
    clipped = s.clamp_min(0)
    relevance = []
    for q, query in enumerate(queries):
        s_bar = torch.stack(
            [
                clipped[q, c] / torch.sqrt(sum(clipped[p, c] ** 2 for p in range(len(queries))) + eps)
                for c in range(len(context))
            ]
        )  # for each context item, normalised over the queries
        alpha = torch.exp(lambda_softmax * s_bar) / torch.exp(lambda_softmax * s_bar).sum()
        attended = sum(alpha[c] * context[c] for c in range(len(context)))
        relevance.append(query @ attended / (query.norm() * attended.norm()))
    r = torch.stack(relevance)
    if pooling == "lse":
        return torch.log(torch.exp(lambda_lse * r).sum()) / lambda_lse
    return r.mean()


def reference(regions, words, mask, **kwargs):
    return torch.stack(
        [
            torch.stack([reference_pair(regions[i], words[c][mask[c]], **kwargs) for i in range(regions.shape[0])])
            for c in range(words.shape[0])
        ]
    )


@pytest.mark.parametrize("direction,pooling", CASES)
@pytest.mark.parametrize("lambda_softmax,lambda_lse", [(9.0, 6.0), (4.0, 20.0), (0.5, 1.0)])
def test_matches_the_step_by_step_reference(direction, pooling, lambda_softmax, lambda_lse):
    regions, words, mask = inputs()
    kwargs = dict(direction=direction, lambda_softmax=lambda_softmax, pooling=pooling, lambda_lse=lambda_lse)
    expected = reference(regions, words, mask, **kwargs)
    got = cross_attention_scores(regions, words, mask, **kwargs)
    assert got.shape == (4, 3) and got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    got32 = cross_attention_scores(regions.float(), words.float(), mask.long(), **kwargs)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32, expected.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("direction,pooling", CASES)
def test_padding_changes_nothing(direction, pooling):
    regions, words, mask = inputs(n_words=4, lengths=(4, 3, 1, 2), dtype=torch.float32)
    kwargs = dict(direction=direction, lambda_softmax=9.0, pooling=pooling, lambda_lse=6.0)
    base = cross_attention_scores(regions, words, mask, **kwargs)
    junk = torch.randn(4, 3, 8) * 100
    junk[0, 0, 0], junk[1, 1, 1] = float("nan"), float("inf")
    padded_words = torch.cat([words, junk], dim=1)
    padded_words[2, 1:4] = -words[2, 0]  # padding slots of a real caption, anti-aligned garbage
    padded_mask = torch.cat([mask, torch.zeros(4, 3, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(
        cross_attention_scores(regions, padded_words, padded_mask, **kwargs), base, rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("direction,pooling", CASES)
def test_gradcheck(direction, pooling):
    regions, words, mask = inputs(n_images=2, n_regions=3, n_captions=2, n_words=3, d=4, lengths=(3, 2))
    regions.requires_grad_(True)
    words.requires_grad_(True)

    def scores(r, w):
        return cross_attention_scores(
            r, w, mask, direction=direction, lambda_softmax=5.0, pooling=pooling, lambda_lse=3.0
        )

    assert torch.autograd.gradcheck(scores, (regions, words))


def test_low_precision_inputs_are_scored_in_float32():
    regions, words, mask = inputs(dtype=torch.float32)
    kwargs = dict(direction="t2i", lambda_softmax=9.0, pooling="lse", lambda_lse=6.0)
    full = cross_attention_scores(regions, words, mask, **kwargs)
    for dtype in (torch.float16, torch.bfloat16):
        low = cross_attention_scores(regions.to(dtype), words.to(dtype), mask, **kwargs)
        assert low.dtype == torch.float32
        torch.testing.assert_close(low, full, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("direction,pooling", CASES)
def test_chunked_equals_one_shot(direction, pooling):
    # more than one default block of 64 images x 256 captions in each direction
    n_captions, n_images = 300, 70
    lengths = [1 + i % 4 for i in range(n_captions)]
    regions, words, mask = inputs(n_images, 3, n_captions, 4, 6, lengths, dtype=torch.float32, seed=1)
    kwargs = dict(direction=direction, lambda_softmax=9.0, pooling=pooling, lambda_lse=6.0)
    with torch.no_grad():
        one_shot = cross_attention_scores(regions, words, mask, **kwargs)
        assert torch.equal(chunked_cross_attention_scores(regions, words, mask, **kwargs), one_shot)
        assert torch.equal(
            chunked_cross_attention_scores(regions, words, mask, image_chunk=64, caption_chunk=256, **kwargs), one_shot
        )
        odd = chunked_cross_attention_scores(regions, words, mask, image_chunk=29, caption_chunk=111, **kwargs)
        torch.testing.assert_close(odd, one_shot, rtol=1e-6, atol=1e-6)  # other blocks: equal to rounding
        whole = chunked_cross_attention_scores(regions, words, mask, image_chunk=1000, caption_chunk=1000, **kwargs)
        torch.testing.assert_close(whole, one_shot, rtol=1e-6, atol=1e-6)
    sub = slice(0, 5), slice(0, 4)  # and the blocks are right, not just consistent
    expected = reference(regions[sub[1]].double(), words[sub[0]].double(), mask[sub[0]], **kwargs)
    torch.testing.assert_close(one_shot[sub].double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("direction,pooling", CASES)
def test_all_negative_cosines_are_finite(direction, pooling):
    d = 8
    axis = torch.zeros(d)
    axis[0] = 1.0
    g = torch.Generator().manual_seed(3)
    regions = axis + 0.1 * torch.randn(2, 4, d, generator=g)
    words = -axis + 0.1 * torch.randn(2, 3, d, generator=g)  # every cosine with every region < 0
    mask = torch.tensor([[True, True, True], [True, False, False]])
    assert (torch.einsum("ird,cwd->ciwr", regions, words) < 0).all()
    regions.requires_grad_(True)
    kwargs = dict(direction=direction, lambda_softmax=9.0, pooling=pooling, lambda_lse=6.0)
    got = cross_attention_scores(regions, words, mask, **kwargs)
    assert torch.isfinite(got).all() and (got < 0).all()
    got.sum().backward()
    assert torch.isfinite(regions.grad).all()
    expected = reference(regions.detach().double(), words.double(), mask, **kwargs)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_empty_sets_give_an_empty_matrix():
    regions, words, mask = inputs(dtype=torch.float32)
    kwargs = dict(direction="t2i", lambda_softmax=9.0, pooling="avg", lambda_lse=6.0)
    assert cross_attention_scores(regions[:0], words, mask, **kwargs).shape == (4, 0)
    assert cross_attention_scores(regions, words[:0], mask[:0], **kwargs).shape == (0, 3)


def test_bad_arguments_raise():
    regions, words, mask = inputs(dtype=torch.float32)
    ok = dict(direction="t2i", lambda_softmax=9.0, pooling="lse", lambda_lse=6.0)

    def call(r=regions, w=words, m=mask, chunked=False, **changes):
        fn = chunked_cross_attention_scores if chunked else cross_attention_scores
        return fn(r, w, m, **{**ok, **changes})

    with pytest.raises(ValueError, match="direction must be one of"):
        call(direction="both")
    with pytest.raises(ValueError, match="pooling must be one of"):
        call(pooling="max")
    with pytest.raises(ValueError, match="feature size d"):
        call(w=words[..., :5])
    with pytest.raises(ValueError, match="word_mask must be"):
        call(m=mask[:, :3])
    with pytest.raises(ValueError, match="regions must be"):
        call(r=regions[0])
    with pytest.raises(ValueError, match=r"captions \[1\] have none"):
        call(m=torch.cat([mask[:1], torch.zeros(1, 6, dtype=torch.bool), mask[2:]]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        call(m=mask.long() * 2)
    with pytest.raises(ValueError, match="floating point"):
        call(r=regions.long())
    with pytest.raises(ValueError, match="lambda_softmax"):
        call(lambda_softmax=0.0)
    with pytest.raises(ValueError, match="lambda_lse"):
        call(lambda_lse=-1.0)
    with pytest.raises(ValueError, match="lambda_lse"):
        call(lambda_lse=math.inf)
    call(pooling="avg", lambda_lse=0.0)  # unused by "avg"
    with pytest.raises(ValueError, match="eps"):
        call(eps=0.0)
    with pytest.raises(ValueError, match="image_chunk"):
        call(chunked=True, image_chunk=0)
    with pytest.raises(ValueError, match="caption_chunk"):
        call(chunked=True, caption_chunk=2.5)
