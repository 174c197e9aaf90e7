"""`search` on a tiny random model: clear errors, and rankings equal to ranking the stored embeddings
or to :class:`timam.search.Searcher` on an image index built from them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image

from timam.formats.tensor_bundle import TensorBundle
from timam.index.faiss_index import build_index, plan_index
from timam.index.store import ImageIndex, IndexManifest, collection_fingerprint
from timam.inference.device import model_to
from timam.inference.embedding import image_outputs, text_outputs
from timam.models.checkpoint import Checkpoint
from timam.models.config import ModelConfig
from timam.models.timam import TimamModel
from timam.pipelines.search.nodes import search, search_request
from timam.pipelines.search.pipeline import create_pipeline
from timam.retrieval.ranking import topk_indices
from timam.search import Searcher
from timam.search.config import SearchConfig
from timam.tokenization import load_tokenizer

TOKENIZATION = {"tokenizer": "offline:minilm", "max_length": 16}
EMBEDDING = {"device": "cpu"}
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
        num_classes=3,
        image_backbone="resnet18",
        image_library="torchvision",
        image_weights=None,
        image_size=(32, 16),
        text_encoder="fc_embed",
        vocab_size=30522,
        word_embedding_dim=8,
        lstm_hidden=8,
        embedding_dim=16,
    )
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="RANDOM weights"):
        model = model_to(TimamModel(config), CPU).eval()  # the layout the evaluate node embeds the gallery in
    checkpoint = Checkpoint(model=model, metadata={}, version="2026-01-01T00.00.00.000Z")
    tokens = load_tokenizer(TOKENIZATION["tokenizer"])(
        CAPTIONS, padding="max_length", truncation=True, max_length=16, return_tensors="pt"
    )
    provenance = {"checkpoint_version": checkpoint.version, "split": "test"}
    images = TensorBundle(
        {
            "embeddings": image_outputs(
                model, paths, project=True, batch_size=4, device=CPU, desc="images", precision="auto"
            ),
            "identity": torch.arange(6),
        },
        {**provenance, "image_paths": paths, "image_ids": [f"img{i}" for i in range(6)]},
    )
    texts = TensorBundle(
        {
            "embeddings": text_outputs(
                model,
                tokens["input_ids"],
                tokens["attention_mask"],
                project=True,
                batch_size=5,
                device=CPU,
                desc="captions",
                precision="auto",
            ),
            "identity": torch.arange(12) // 2,
            "image_index": torch.arange(12) // 2,
        },
        {**provenance, "captions": CAPTIONS, "caption_ids": [f"c{i}" for i in range(12)]},
    )
    return checkpoint, images, texts, paths


def test_text_query_ranks_the_gallery_like_the_stored_caption_embedding(setup):
    checkpoint, images, texts, paths = setup
    table, figure = search(
        checkpoint, images, texts, None, search_request({"query": "a blue bag", "top_k": 4}), TOKENIZATION, EMBEDDING
    )
    assert list(table.columns) == ["rank", "row", "path", "score"]  # the Searcher's hits table
    assert table["rank"].tolist() == [1, 2, 3, 4]
    scores, found = topk_indices(
        texts.tensors["embeddings"][[CAPTIONS.index("a blue bag")]], images.tensors["embeddings"], 4
    )
    assert table["row"].tolist() == found[0].tolist()
    assert table["path"].tolist() == [paths[int(j)] for j in found[0]]
    assert table["score"].tolist() == pytest.approx(scores[0].tolist(), abs=1e-5)
    assert isinstance(figure, Figure) and "a blue bag" in figure.subfigs[0].get_suptitle()


def test_image_query_ranks_the_captions(setup):
    checkpoint, images, texts, paths = setup
    table, _ = search(
        checkpoint,
        images,
        texts,
        None,
        search_request({"query_image": paths[2], "top_k": 20}),
        TOKENIZATION,
        EMBEDDING,
    )
    assert len(table) == 12  # top_k clipped to the 12 captions
    assert list(table.columns) == ["rank", "row", "path", "score", "caption"]  # row, path: the captioned image
    scores, found = topk_indices(images.tensors["embeddings"][[2]], texts.tensors["embeddings"], 12)
    assert table["caption"].tolist() == [CAPTIONS[int(j)] for j in found[0]]
    assert table["path"].tolist() == [paths[int(j) // 2] for j in found[0]]
    assert table["score"].tolist() == pytest.approx(scores[0].tolist(), abs=1e-5)


@pytest.mark.parametrize(
    ("query", "query_image", "message"),
    [
        (None, None, "neither search.query nor search.query_image"),
        ("a hat", "x.jpg", "both search.query and search.query_image"),
        ("  ", "", "neither"),
    ],
)
def test_exactly_one_query(query, query_image, message):
    with pytest.raises(ValueError, match=message):
        search_request({"query": query, "query_image": query_image})


def test_exactly_one_query_counts_the_queries_file(tmp_path):
    queries = tmp_path / "queries.txt"
    queries.write_text("a hat\n")
    with pytest.raises(ValueError, match="both search.query and search.queries_file were given"):
        search_request({"query": "a hat", "queries_file": str(queries)})
    with pytest.raises(ValueError, match="search.query, search.query_image and search.queries_file were all given"):
        search_request({"query": "a hat", "query_image": str(queries), "queries_file": str(queries)})
    with pytest.raises(FileNotFoundError, match="queries file .*nope.txt does not exist"):
        search_request({"queries_file": str(tmp_path / "nope.txt")})
    (tmp_path / "blank.txt").write_text("\n  \n# only a comment\n")
    with pytest.raises(ValueError, match="holds no queries"):
        search_request({"queries_file": str(tmp_path / "blank.txt")})
    (tmp_path / "table.csv").write_text("text\na hat\n")
    with pytest.raises(ValueError, match="has no 'query' column; its columns are \\['text'\\]"):
        search_request({"queries_file": str(tmp_path / "table.csv")})
    with pytest.raises(ValueError, match="search.use_index must be a valid boolean.*got .maybe."):
        search_request({"query": "a hat", "use_index": "maybe"})


def test_bad_top_k_and_unknown_keys_are_named():
    with pytest.raises(ValueError, match="search.top_k must be greater than 0, got 0"):
        search_request({"query": "a hat", "top_k": 0})
    with pytest.raises(ValueError, match="Unknown parameter search.topk; did you mean 'top_k'"):
        search_request({"query": "a hat", "topk": 3})
    assert search_request({"query": 123, "top_k": "7"}) == SearchConfig(query="123", query_image=None, top_k=7)


def test_a_missing_query_image_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"search.query_image '.*nope.jpg' does not exist"):
        search_request({"query_image": str(tmp_path / "nope.jpg")})


def test_a_folder_as_query_image_is_named(tmp_path):
    with pytest.raises(IsADirectoryError, match=rf"search.query_image '{tmp_path}' is a folder, not an image file"):
        search_request({"query_image": str(tmp_path)})


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"# timam\n\nText-image retrieval\n", r"is not an image Pillow can read \(UnidentifiedImageError"),
        (b"", r"is an empty file \(0 bytes\)"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "is not an image Pillow can read"),  # a PNG signature, then garbage
    ],
)
def test_a_file_pillow_cannot_read_is_named_before_any_worker_starts(tmp_path, monkeypatch, content, problem):
    path = tmp_path / "README.md"
    path.write_bytes(content)
    import timam.inference.embedding as embedding

    monkeypatch.setattr(embedding, "image_loader", lambda *args, **kwargs: pytest.fail("a loader was built"))
    with pytest.raises(ValueError, match=rf"search.query_image '{path}' {problem}"):
        search_request({"query_image": str(path)})


def test_embeddings_of_another_checkpoint_are_refused(setup):
    checkpoint, images, texts, _ = setup
    other = Checkpoint(model=checkpoint.model, version="2026-02-02T00.00.00.000Z")
    with pytest.raises(
        ValueError, match=r"made with checkpoint 2026-01-01.*Re-run the evaluation with this checkpoint"
    ):
        search(other, images, texts, None, search_request({"query": "a hat", "top_k": 3}), TOKENIZATION, EMBEDDING)


@pytest.fixture(scope="module")
def image_index(setup):
    """A flat index of the test gallery's embeddings, built with the setup's checkpoint."""
    checkpoint, images, _, paths = setup
    vectors = F.normalize(images.tensors["embeddings"], dim=1).numpy()
    rows = pd.DataFrame(
        {
            "path": paths,
            "size": [Path(p).stat().st_size for p in paths],
            "mtime_ns": [Path(p).stat().st_mtime_ns for p in paths],
            "caption": CAPTIONS[::2],
        }
    )
    plan = plan_index(len(paths), vectors.shape[1], memory_budget_bytes=1 << 30)
    manifest = IndexManifest(
        checkpoint_version=checkpoint.version,
        checkpoint_path=None,
        embedding_dim=vectors.shape[1],
        image_count=len(paths),
        collection_fingerprint=collection_fingerprint(rows),
        plan=plan,
        created_at="2026-01-01T00:00:00+00:00",
    )
    return ImageIndex(index=build_index(vectors, plan, show_progress=False), manifest=manifest, rows=rows)


def test_the_pipeline_reads_the_optional_search_index():
    node = next(node for node in create_pipeline().nodes if node.name == "search")
    assert "search_index" in node.inputs


def test_with_an_index_a_text_query_ranks_its_images_like_the_searcher(setup, image_index):
    checkpoint, images, texts, paths = setup
    table, figure = search(
        checkpoint,
        images,
        texts,
        image_index,
        search_request({"query": "a blue bag", "top_k": 4}),
        TOKENIZATION,
        EMBEDDING,
    )
    assert list(table.columns) == ["rank", "row", "path", "score", "caption"]
    expected = Searcher(image_index=image_index, checkpoint=checkpoint, device="cpu").by_text("a blue bag", k=4)
    assert table["row"].tolist() == [hit.row for hit in expected]
    assert table["path"].tolist() == [paths[hit.row] for hit in expected]
    # The index holds the test gallery, so the ranking is also the test-split one.
    split, _ = search(
        checkpoint, images, texts, None, search_request({"query": "a blue bag", "top_k": 4}), TOKENIZATION, EMBEDDING
    )
    assert table["path"].tolist() == split["path"].tolist()
    assert table["score"].tolist() == pytest.approx(split["score"].tolist(), abs=1e-5)
    assert isinstance(figure, Figure) and "index of 6 images" in figure.get_suptitle()


def test_with_an_index_an_image_query_ranks_images_and_finds_itself(setup, image_index):
    checkpoint, images, texts, paths = setup
    table, _ = search(
        checkpoint,
        images,
        texts,
        image_index,
        search_request({"query_image": paths[3], "top_k": 3}),
        TOKENIZATION,
        EMBEDDING,
    )
    assert table["path"].tolist()[0] == paths[3]
    assert table["score"].tolist()[0] == pytest.approx(1.0, abs=1e-5)


def test_use_index_false_searches_the_test_split_even_with_an_index(setup, image_index):
    checkpoint, images, texts, paths = setup
    request = search_request({"query_image": paths[3], "top_k": 3, "use_index": False})
    table, _ = search(checkpoint, images, texts, image_index, request, TOKENIZATION, EMBEDDING)
    without_index, _ = search(checkpoint, images, texts, None, request, TOKENIZATION, EMBEDDING)
    pd.testing.assert_frame_equal(table, without_index)  # image -> the test captions, as without an index
    assert "caption" in table and len(table) == 3


@pytest.mark.parametrize("use_index", [True, False])
@pytest.mark.parametrize("kind", ["txt", "csv"])
def test_a_queries_file_gives_one_table_equal_to_the_single_queries(setup, image_index, tmp_path, use_index, kind):
    checkpoint, images, texts, _ = setup
    queries = ["a blue bag", "a red coat", "a blue bag"]
    path = tmp_path / f"queries.{kind}"
    if kind == "txt":
        path.write_text("# queries\n" + "\n".join(queries) + "\n\n")
    else:
        pd.DataFrame({"query": queries, "note": ["x", "y", "z"]}).to_csv(path, index=False)
    index = image_index if use_index else None
    table, figure = search(
        checkpoint,
        images,
        texts,
        index,
        search_request({"queries_file": str(path), "top_k": 3}),
        TOKENIZATION,
        EMBEDDING,
    )
    assert table.columns[0] == "query" and table["query"].tolist() == [q for q in queries for _ in range(3)]
    for position, query in enumerate(queries):
        single, _ = search(
            checkpoint, images, texts, index, search_request({"query": query, "top_k": 3}), TOKENIZATION, EMBEDDING
        )
        part = table.iloc[3 * position : 3 * position + 3].reset_index(drop=True)
        assert part["path"].tolist() == single["path"].tolist()
        assert part["score"].tolist() == pytest.approx(single["score"].tolist(), abs=1e-6)
    assert len(figure.subfigs) == 2  # one block per distinct query


def test_an_index_of_another_checkpoint_is_refused_naming_both_versions(setup, image_index):
    checkpoint, images, texts, _ = setup
    other = Checkpoint(model=checkpoint.model, version="2026-03-03T00.00.00.000Z")
    with pytest.raises(
        ValueError, match=r"built with model_checkpoint version 2026-01-01.*2026-03-03.*use_index=false"
    ):
        search(other, images, texts, image_index, search_request({"query": "a hat"}), TOKENIZATION, EMBEDDING)
