"""`search` on a tiny random model: clear errors, and rankings equal to ranking the stored embeddings."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from timam.formats.tensor_bundle import TensorBundle
from timam.models.checkpoint import Checkpoint
from timam.models.config import ModelConfig
from timam.models.timam import TimamModel
from timam.pipelines.search.nodes import search, search_request
from timam.retrieval.ranking import topk_indices
from timam.tokenization import load_tokenizer
from timam.inference.device import model_to
from timam.inference.embedding import image_outputs, text_outputs

TOKENIZATION = {"tokenizer": "offline:minilm", "max_length": 16}
EVALUATION = {"device": "cpu"}
CAPTIONS = [f"a {colour} {thing}" for colour in ("red", "green", "blue") for thing in ("coat", "shirt", "bag", "hat")]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gallery")
    paths = []
    for i in range(6):
        path = folder / f"{i}.jpg"
        Image.new("RGB", (16, 32), (40 * i, 255 - 40 * i, 90)).save(path)
        paths.append(str(path))
    config = ModelConfig(
        num_classes=3, image_backbone="resnet18", image_library="torchvision", image_weights=None, image_size=(32, 16),
        text_encoder="fc_embed", vocab_size=30522, word_embedding_dim=8, lstm_hidden=8, embedding_dim=16,
    )
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="RANDOM weights"):
        model = model_to(TimamModel(config), CPU).eval()  # the layout the evaluate node embeds the gallery in
    checkpoint = Checkpoint(model=model, metadata={}, version="2026-01-01T00.00.00.000Z")
    tokens = load_tokenizer(TOKENIZATION["tokenizer"])(CAPTIONS, padding="max_length", truncation=True,
                                                       max_length=16, return_tensors="pt")
    provenance = {"checkpoint_version": checkpoint.version, "split": "test"}
    images = TensorBundle(
        {"embeddings": image_outputs(model, paths, project=True, batch_size=4, device=CPU, desc="images"),
         "identity": torch.arange(6)},
        {**provenance, "image_paths": paths, "image_ids": [f"img{i}" for i in range(6)]},
    )
    texts = TensorBundle(
        {"embeddings": text_outputs(model, tokens["input_ids"], tokens["attention_mask"], project=True, batch_size=5,
                                    device=CPU, desc="captions"),
         "identity": torch.arange(12) // 2, "image_index": torch.arange(12) // 2},
        {**provenance, "captions": CAPTIONS, "caption_ids": [f"c{i}" for i in range(12)]},
    )
    return checkpoint, images, texts, paths


def test_text_query_ranks_the_gallery_like_the_stored_caption_embedding(setup):
    checkpoint, images, texts, paths = setup
    table, figure = search(checkpoint, images, texts, search_request("a blue bag", None, 4), TOKENIZATION, EVALUATION)
    assert list(table.columns) == ["rank", "path", "image_id", "score"]
    assert table["rank"].tolist() == [1, 2, 3, 4]
    scores, found = topk_indices(texts.tensors["embeddings"][[CAPTIONS.index("a blue bag")]], images.tensors["embeddings"], 4)
    assert table["path"].tolist() == [paths[int(j)] for j in found[0]]
    assert table["score"].tolist() == pytest.approx(scores[0].tolist(), abs=1e-5)
    assert isinstance(figure, Figure) and "a blue bag" in figure.subfigs[0].get_suptitle()


def test_image_query_ranks_the_captions(setup):
    checkpoint, images, texts, paths = setup
    table, _ = search(checkpoint, images, texts, search_request(None, paths[2], 20), TOKENIZATION, EVALUATION)
    assert len(table) == 12  # top_k clipped to the 12 captions
    assert list(table.columns) == ["rank", "caption", "caption_id", "image_path", "score"]
    scores, found = topk_indices(images.tensors["embeddings"][[2]], texts.tensors["embeddings"], 12)
    assert table["caption"].tolist() == [CAPTIONS[int(j)] for j in found[0]]
    assert table["score"].tolist() == pytest.approx(scores[0].tolist(), abs=1e-5)


@pytest.mark.parametrize(
    ("query", "query_image", "message"),
    [(None, None, "neither query nor query_image"), ("a hat", "x.jpg", "both query and query_image"), ("  ", "", "neither")],
)
def test_exactly_one_query(query, query_image, message):
    with pytest.raises(ValueError, match=message):
        search_request(query, query_image, 10)


def test_missing_image_and_bad_top_k_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg' does not exist"):
        search_request(None, str(tmp_path / "nope.jpg"), 10)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        search_request("a hat", None, 0)
    assert search_request(123, None, "7") == {"query": "123", "query_image": None, "top_k": 7}


def test_embeddings_of_another_checkpoint_are_refused(setup):
    checkpoint, images, texts, _ = setup
    other = Checkpoint(model=checkpoint.model, version="2026-02-02T00.00.00.000Z")
    with pytest.raises(ValueError, match=r"made with checkpoint 2026-01-01.*Re-run the evaluation with this checkpoint"):
        search(other, images, texts, search_request("a hat", None, 3), TOKENIZATION, EVALUATION)
