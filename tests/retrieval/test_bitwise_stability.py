"""Scores and metrics keep their bits whatever the device settings: exact float32 products, ordered sums."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from timam.retrieval.ranking import ranking_metrics, scoring, similarity
from timam.retrieval.ranking.scoring import exact_float32_products

BACKENDS = {"cuda": torch.backends.cuda.matmul, "mkldnn": torch.backends.mkldnn.matmul}


@pytest.fixture
def restore_precision() -> Iterator[None]:
    saved = {name: backend.fp32_precision for name, backend in BACKENDS.items()}
    legacy = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(legacy)
    for name, backend in BACKENDS.items():
        backend.fp32_precision = saved[name]


def _spy_products(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """Record both backends' setting during every product the scorer runs."""
    seen: list[dict[str, str]] = []
    product = scoring._GalleryScorer._product

    def recording(self: scoring._GalleryScorer, *args: object) -> torch.Tensor:
        seen.append({name: backend.fp32_precision for name, backend in BACKENDS.items()})
        return product(self, *args)

    monkeypatch.setattr(scoring._GalleryScorer, "_product", recording)
    return seen


def _embeddings() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    texts, images = torch.randn(40, 16, generator=generator), torch.randn(10, 16, generator=generator)
    return texts, images, torch.arange(40) % 10, torch.arange(10)


@pytest.mark.usefixtures("restore_precision")
def test_new_api_tf32_neither_crashes_ranking_nor_reaches_its_products(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    seen = _spy_products(monkeypatch)
    ranking_metrics(*_embeddings(), ks=(1,))
    similarity(*_embeddings()[:2])
    assert seen and all(flags == {"cuda": "ieee", "mkldnn": "ieee"} for flags in seen)
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"  # the caller's setting is back
    assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"


@pytest.mark.usefixtures("restore_precision")
def test_legacy_api_setting_is_restored_and_still_readable(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_float32_matmul_precision("high")
    seen = _spy_products(monkeypatch)
    ranking_metrics(*_embeddings(), ks=(1,))
    assert seen and all(flags["cuda"] == "ieee" for flags in seen)
    assert torch.get_float32_matmul_precision() == "high"


@pytest.mark.usefixtures("restore_precision")
def test_context_restores_even_when_the_product_fails() -> None:
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    with pytest.raises(RuntimeError, match="boom"), exact_float32_products():
        raise RuntimeError("boom")
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"


def test_ordered_segment_sums_equal_cpu_index_add_bit_for_bit() -> None:
    """The CUDA path of the mINP sums, run here: the same bits as the CPU's sequential index_add_."""
    from timam.retrieval.ranking.tie_rules import _padded_segment_sums

    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 40, (300,), generator=generator)
    owner = torch.repeat_interleave(torch.arange(300), lengths)
    position = torch.arange(owner.numel()) - (torch.cumsum(lengths, 0) - lengths)[owner]
    values = torch.rand(owner.numel(), generator=generator, dtype=torch.float64) * 10.0 ** torch.randint(
        -8, 3, (owner.numel(),), generator=generator
    )
    expected = torch.zeros(300, dtype=torch.float64).index_add_(0, owner, values)
    assert torch.equal(_padded_segment_sums(values, owner, position, 300), expected)
