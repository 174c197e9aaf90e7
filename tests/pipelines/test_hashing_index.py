"""The index pipeline and the searcher take a hashing checkpoint: codes stored as packed bits in a
binary index, queries packed the same way, an indexed image found first at Hamming distance 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.pipelines.test_index_pipeline import TOKENIZATION, VERSION, params, run_index
from tests.tiny_model import random_tiny_model
from timam.index.store import load_image_index, save_image_index
from timam.models.attribute_family import AttributeHashingModel
from timam.models.attribute_hashing import AttributeHashingConfig
from timam.models.checkpoint import Checkpoint
from timam.pipelines.evaluate.nodes import embed_test_split
from timam.retrieval.hamming import pack_codes
from timam.search import Searcher

BITS = 128


@pytest.fixture(scope="module")
def checkpoint() -> Checkpoint:
    """Untrained AgNet-style heads on the offline encoders (EfficientNet-Lite0 at 32 px, MiniLM).

    The image attribute predictor is re-drawn with larger weights: at the default initialisation the
    sigmoid of nearly equal logits gives every noise image the same code, which would test nothing."""
    torch.manual_seed(0)
    config = AttributeHashingConfig(
        image_size=(32, 32),
        num_attributes=6,
        code_bits=BITS,
        attribute_hidden=16,
        hash_hidden=16,
    )
    model = AttributeHashingModel(config).eval()
    for layer in model.heads.image_predictor:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=10 / layer.in_features**0.5)
            torch.nn.init.zeros_(layer.bias)
    return Checkpoint(model=model, metadata={}, version=VERSION)


def test_an_indexed_image_searched_for_itself_comes_first_at_hamming_distance_0(checkpoint, tmp_path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        paths.append(photos / f"{i:02d}.png")
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(paths[-1])
    image_index, vectors, _ = run_index(checkpoint, params(photos, tmp_path / "shards"))
    manifest = image_index.manifest
    assert (manifest.code_bits, manifest.embedding_dim, manifest.plan.kind) == (BITS, BITS, "binary_flat")
    codes = pack_codes(torch.from_numpy(vectors)).numpy()
    assert codes.shape == (6, BITS // 8) and image_index.index.ntotal == 6
    first_with_code = {}
    for row, code in enumerate(codes):
        first_with_code.setdefault(code.tobytes(), row)
    assert len(first_with_code) == 6, "distinct codes: each image must come first, not after a lower row"
    save_image_index(str(tmp_path / "index"), image_index)
    searcher = Searcher(image_index=load_image_index(tmp_path / "index"), checkpoint=checkpoint, device="cpu")
    for row, path in enumerate(paths):
        hits = searcher.by_image(str(path), k=6)
        # First at distance 0; an image sharing its code with a lower row comes right after it (ties by row).
        assert hits[0].score == 0.0 and hits[0].row == first_with_code[codes[row].tobytes()]
        assert row in [hit.row for hit in hits if hit.score == 0.0]
        assert all(hit.score == round(hit.score) for hit in hits)  # -distance: integers
    text_hits = searcher.by_text("a woman in a red coat", k=6)
    distances = [-hit.score for hit in text_hits]
    assert distances == sorted(distances) and all(0 <= d <= BITS and d == int(d) for d in distances)
    for first, second in zip(text_hits, text_hits[1:], strict=False):  # ties by lower row, as the evaluation
        assert first.score > second.score or first.row < second.row


def test_a_float_checkpoint_cannot_query_a_binary_index(checkpoint, tmp_path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (32, 32), "red").save(photos / "00.png")
    image_index, _, _ = run_index(checkpoint, params(photos, tmp_path / "shards"))
    with pytest.warns(UserWarning, match="RANDOM weights"):
        floats = Checkpoint(model=random_tiny_model(), metadata={}, version=VERSION)
    with pytest.raises(ValueError, match="holds packed hash codes"):
        Searcher(image_index=image_index, checkpoint=floats, device="cpu", tokenizer=TOKENIZATION["tokenizer"])


def test_the_evaluate_pipeline_refuses_a_hashing_checkpoint_and_names_where_it_is_scored(checkpoint) -> None:
    with pytest.raises(ValueError, match=r"attribute-hashing model.*Hamming.*--pipelines families.*agnet_hash"):
        embed_test_split(checkpoint, None, None, {}, {})  # refused before it reads anything
