"""Saving a figure the way the catalog does, for the figure tests."""

from __future__ import annotations

from kedro_datasets.matplotlib import MatplotlibDataset
from matplotlib.figure import Figure
from PIL import Image

from timam.figures.style import DPI


def save_png(figure: Figure, tmp_path, name: str = "figure.png") -> Image.Image:
    """Save through the Kedro dataset the catalog uses; return the decoded PNG."""
    path = tmp_path / name
    MatplotlibDataset(filepath=str(path)).save(figure)
    assert path.stat().st_size > 2000
    image = Image.open(path)
    image.load()
    assert image.format == "PNG"
    return image


def figure_size(figure: Figure) -> tuple[int, int]:
    width, height = figure.get_size_inches()
    return round(width * DPI), round(height * DPI)
