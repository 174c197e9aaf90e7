"""The attribute figure renders a panel per image, colours each predicted attribute by its truth, and
draws an unreadable image as a placeholder."""

from __future__ import annotations

from PIL import Image

from tests.png import save_png
from timam.figures.attributes import RIGHT, WRONG, AttributeExample, attribute_examples_figure


def test_each_image_gets_its_predicted_attributes_coloured_by_the_truth(tmp_path) -> None:
    path = tmp_path / "person.png"
    Image.new("RGB", (20, 40), "red").save(path)
    examples = [
        AttributeExample(str(path), predicted=["gender=male", "upper=coat"], true=["gender=male", "upper=jacket"]),
        AttributeExample(str(tmp_path / "missing.png"), predicted=["gender=female"], true=["gender=female"]),
    ]
    figure = attribute_examples_figure(examples, title="demo")
    texts = {text.get_text(): text.get_color() for ax in figure.axes for text in ax.texts}
    assert texts["gender=male"] == RIGHT and texts["upper=coat"] == WRONG
    assert "missed: upper=jacket" in texts and texts["gender=female"] == RIGHT
    assert any("image not found" in text for text in texts)
    assert save_png(figure, tmp_path).size[0] > 0
