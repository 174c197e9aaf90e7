"""Figures render to non-empty PNGs of the expected size from tiny fake inputs."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.png import figure_size, save_png
from timam.figures.ranking import (
    ImageQueryExample,
    RankedCaption,
    RankedImage,
    TextQueryExample,
    image_query_figure,
    recall_curve_figure,
    text_query_figure,
)
from timam.figures.style import message_figure


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, colour in enumerate(["red", "green", "blue", "yellow", "purple", "orange"]):
        path = folder / f"person_{i}.jpg"
        Image.new("RGB", (40, 80), colour).save(path)
        paths.append(str(path))
    return paths


def test_recall_curvesave_png(tmp_path):
    curves = {"text_to_image": [10 + k for k in range(50)], "image_to_text": [20 + k for k in range(50)]}
    chance = {"text_to_image": [k / 2 for k in range(50)], "image_to_text": [k / 3 for k in range(50)]}
    figure = recall_curve_figure(curves, chance=chance, title="demo")
    assert save_png(figure, tmp_path).size == figure_size(figure) == (800, 500)
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == [
        "text \u2192 image (R@1 10.0, R@5 14.0, R@10 19.0)",
        "text \u2192 image, chance",
        "image \u2192 text (R@1 20.0, R@5 24.0, R@10 29.0)",
        "image \u2192 text, chance",
    ]


def test_text_query_grid_marks_hits_and_target(tmp_path, image_paths):
    examples = [
        TextQueryExample(
            caption=f"a person in {colour} clothes, walking " * 4,
            target_path=image_paths[i],
            results=[RankedImage(path, 0.9 - 0.1 * r, hit=(r == i)) for r, path in enumerate(image_paths[:5])],
        )
        for i, colour in enumerate(["red", "green", "blue"])
    ]
    figure = text_query_figure(examples, title="t2i")
    image = save_png(figure, tmp_path)
    assert image.size == figure_size(figure)
    assert image.size[0] >= 6 * 150  # described image + five results per row
    edge_colours = {ax.spines["top"].get_edgecolor() for sub in figure.subfigs for ax in sub.axes}
    assert len(edge_colours) == 3  # blue target, green hit, red miss


def test_image_query_grid(tmp_path, image_paths):
    examples = [
        ImageQueryExample(
            path=path, results=[RankedCaption(f"caption {r} " * 30, 0.5 - r / 10, hit=r == 0) for r in range(5)]
        )
        for path in image_paths[:2]
    ]
    figure = image_query_figure(examples, title="i2t")
    assert save_png(figure, tmp_path).size == figure_size(figure)


def test_missing_image_becomes_a_placeholder(tmp_path):
    example = TextQueryExample(caption="nobody", results=[RankedImage(str(tmp_path / "gone.jpg"), 0.1, hit=None)])
    figure = text_query_figure([example])
    save_png(figure, tmp_path)
    texts = [t.get_text() for sub in figure.subfigs for ax in sub.axes for t in ax.texts]
    assert any("image not found" in text for text in texts)


def test_message_figure_png(tmp_path):
    save_png(message_figure("nothing here"), tmp_path, "message.png")
