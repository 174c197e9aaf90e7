"""``Searcher`` on a tiny real index: rankings equal timam's exact ranking, inputs are checked, mismatches refused."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.search.tiny_index import CAPTIONS, CHECKPOINT_VERSION, INDEX_VERSION, build_tiny_index
from timam.inference.embedding import text_outputs
from timam.models.checkpoint import UnreadableCheckpointError, read_checkpoint
from timam.retrieval.ranking import topk_indices
from timam.search import Searcher, UnusableImageError, hits_table
from timam.tokenization import load_tokenizer

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_index(tmp_path_factory.mktemp("search"))


@pytest.fixture(scope="module")
def searcher(tiny):
    return Searcher.open(tiny.root, device="cpu")


def _indexed_vectors(searcher: Searcher) -> torch.Tensor:
    index = searcher.image_index.index
    return torch.from_numpy(index.reconstruct_n(0, index.ntotal))


def _embedded_text(searcher: Searcher, texts: list[str]) -> torch.Tensor:
    """The query embedding computed the long way: tokenizer, text encoder, L2 norm."""
    tokens = load_tokenizer("offline:minilm")(
        texts, padding="max_length", truncation=True, max_length=64, return_tensors="pt"
    )
    embedded = text_outputs(
        searcher.checkpoint.model,
        tokens["input_ids"].to(torch.int32),
        tokens["attention_mask"].to(torch.int8),
        project=True,
        batch_size=8,
        device=CPU,
        desc="test",
        show_progress=False,
        precision="auto",
    )
    return F.normalize(embedded, dim=1)


def test_open_finds_the_same_index_from_a_root_a_version_folder_a_folder_or_a_version(tiny, tmp_path):
    folders = {
        Searcher.open(tiny.root, device="cpu").index_name,
        Searcher.open(tiny.root / INDEX_VERSION, device="cpu").index_name,
        Searcher.open(tiny.folder, device="cpu").index_name,
    }
    assert folders == {f"index {tiny.folder}"}
    project = tiny.root.parent.parent / "project"
    (project / "data/07_model_output/demo").mkdir(parents=True)
    (project / "data/07_model_output/demo/image_index").symlink_to(tiny.root)
    by_version = Searcher.open(INDEX_VERSION, project=project, device="cpu")
    latest = Searcher.open(None, project=project, device="cpu")
    assert by_version.index_version == latest.index_version == INDEX_VERSION
    assert latest.checkpoint_version == CHECKPOINT_VERSION
    with pytest.raises(FileNotFoundError, match=rf"no index version '2020-01-01'.*newest first: {INDEX_VERSION}"):
        Searcher.open("2020-01-01", project=project)
    with pytest.raises(FileNotFoundError, match="holds no image index"):
        Searcher.open(tmp_path)
    with pytest.raises(FileNotFoundError, match="no image index under"):
        Searcher.open(None, project=tmp_path)


def test_text_search_is_the_exact_ranking_of_the_indexed_embeddings(searcher):
    hits = searcher.by_text("a blue sky", k=4)
    scores, rows = topk_indices(_embedded_text(searcher, ["a blue sky"]), _indexed_vectors(searcher), 4)
    assert [hit.row for hit in hits] == rows[0].tolist()
    assert [hit.score for hit in hits] == pytest.approx(scores[0].tolist(), abs=1e-5)
    assert [hit.rank for hit in hits] == [1, 2, 3, 4]
    assert all(hit.path == searcher.path(hit.row) and hit.caption == CAPTIONS[hit.row] for hit in hits)


def test_a_repeated_text_query_is_embedded_once(tiny):
    searcher = Searcher.open(tiny.root, device="cpu")
    first = searcher.by_text("two airplanes parked", k=3)
    assert searcher.encoder.text_forward_passes == 1
    assert searcher.by_text("two airplanes parked", k=3) == first
    table = searcher.by_texts(["two airplanes parked", "a grey road", "a grey road"], k=2)
    assert searcher.encoder.text_forward_passes == 2  # only "a grey road" was new
    assert list(table.columns) == ["query", "rank", "row", "path", "score", "caption"]
    assert table["query"].tolist() == ["two airplanes parked"] * 2 + ["a grey road"] * 4
    road = searcher.by_text("a grey road", k=2)
    assert table["row"].tolist()[2:4] == [hit.row for hit in road] == table["row"].tolist()[4:6]


@pytest.mark.parametrize("row", [0, 3, 5])
def test_an_indexed_image_finds_itself_first_from_a_path_bytes_or_a_pil_image(searcher, tiny, row):
    path = tiny.images[row]
    with open(path, "rb") as handle:
        data = handle.read()
    for source in (path, data, Image.open(io.BytesIO(data))):
        hits = searcher.by_image(source, k=3)
        assert hits[0].row == row and hits[0].path == path
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert hits[1].score < hits[0].score


def test_captions_for_an_image_rank_the_collections_captions(searcher, tiny):
    hits = searcher.captions_for_image(tiny.images[1], k=10)
    assert len(hits) == len(CAPTIONS)  # k clipped to the captioned rows
    image = torch.from_numpy(searcher.encoder.images([Image.open(tiny.images[1])]))
    scores, rows = topk_indices(image, _embedded_text(searcher, CAPTIONS), len(CAPTIONS))
    assert [hit.row for hit in hits] == rows[0].tolist()
    assert [hit.caption for hit in hits] == [CAPTIONS[row] for row in rows[0].tolist()]
    assert [hit.score for hit in hits] == pytest.approx(scores[0].tolist(), abs=1e-5)


def test_k_is_checked_and_clipped_to_the_index(searcher):
    assert len(searcher.by_text("a wall", k=100)) == searcher.size == 6
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            searcher.by_text("a wall", k=bad)
    with pytest.raises(ValueError, match="non-empty string"):
        searcher.by_text("   ")
    with pytest.raises(IndexError, match="row 6 is not a row"):
        searcher.path(6)


def test_an_index_without_captions_says_so(tmp_path):
    tiny = build_tiny_index(tmp_path, count=3, captions=False)
    searcher = Searcher.open(tiny.folder, device="cpu")
    assert not searcher.has_captions
    hits = searcher.by_text("a wall", k=2)
    assert [hit.caption for hit in hits] == [None, None]
    assert list(hits_table(hits).columns) == ["rank", "row", "path", "score"]
    with pytest.raises(ValueError, match="has no captions"):
        searcher.captions_for_image(tiny.images[0])


def test_another_checkpoint_is_refused_naming_both_versions(tiny, tmp_path):
    other = read_checkpoint(tiny.checkpoint, version="2026-05-05T00.00.00.000Z")
    with pytest.raises(ValueError, match=rf"built with model_checkpoint version {CHECKPOINT_VERSION}.*2026-05-05"):
        Searcher.open(tiny.root, other)
    copy = tmp_path / "copy.safetensors"  # the same weights outside Kedro's layout: no version
    copy.write_bytes(tiny.checkpoint.read_bytes())
    with pytest.raises(ValueError, match="version unversioned"):
        Searcher.open(tiny.root, copy)


def test_read_checkpoint_takes_the_version_from_kedros_layout_and_never_unpickles(tiny, tmp_path):
    checkpoint = read_checkpoint(tiny.checkpoint)
    assert checkpoint.version == CHECKPOINT_VERSION
    assert checkpoint.model.config.embedding_dim == 16
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"weights": np.zeros(3)}))
    with pytest.raises(UnreadableCheckpointError, match="never unpickles"):
        read_checkpoint(evil)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "empty file"),
        (b"# not an image\n", "not an image Pillow can read"),
        ("truncated", "not an image Pillow can read"),
    ],
)
def test_bad_query_images_are_named(searcher, tiny, tmp_path, content, message):
    path = tmp_path / "query.png"
    if content == "truncated":
        content = open(tiny.images[0], "rb").read()[:-40]
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UnusableImageError, match=message):
        searcher.by_image(path)
    if content:
        with pytest.raises(UnusableImageError, match=message):
            searcher.by_image(content)


def test_an_image_with_too_many_pixels_is_refused_before_decoding(searcher):
    buffer = io.BytesIO()
    Image.new("1", (9000, 5000)).save(buffer, format="PNG")  # 45 MP that compress to a few kB
    assert buffer.tell() < 100_000
    with pytest.raises(UnusableImageError, match="9000x5000 pixels, more than the 16,000,000 allowed"):
        searcher.by_image(buffer.getvalue())
