"""UCM-Captions reads the original 256 px images by default; one global selects the 128 px copy.

The ``ucm_captions`` env's ``globals.yml`` sets ``ucm_resolution``; it names both the Parquet file
and the folder its JPEGs are cached in, so the two copies never share images.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader
from PIL import Image

from timam.hooks import check_parameters
from timam.inference.images import eval_transform, load_rgb
from timam.models.preprocessing import ImagePreprocessing
from timam.settings import CONFIG_LOADER_ARGS
from timam.sources.image_checks import apply_bad_input_policy, inspect_image
from timam.sources.ucm_captions import read_ucm_parquet

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data" / "ucm_captions"
needs_shared = pytest.mark.skipif(
    not (SHARED / "ucm_captions_256.parquet").is_file() or not (SHARED / "ucm_captions_128.parquet").is_file(),
    reason="../shared/data/ucm_captions (both Parquet copies) not present",
)
# A square image, a 253x256 one and the 247x247 one (orig_width x orig_height in the file).
SAMPLE_IDS = ["ucm_0001", "ucm_0156", "ucm_0497"]


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    """The project's conf/ without the user's conf/local (an empty one instead)."""
    root = tmp_path / "conf"
    shutil.copytree(REPO / "conf", root, ignore=shutil.ignore_patterns("local"))
    (root / "local").mkdir()
    return root


def _resolved(conf: Path) -> tuple[str, dict]:
    loader = OmegaConfigLoader(str(conf), env="ucm_captions", **CONFIG_LOADER_ARGS)
    return loader["catalog"]["raw_annotations"]["filepath"], loader["parameters"]


def _set_resolution(conf: Path, resolution: int) -> None:
    path = conf / "ucm_captions" / "globals.yml"
    text = path.read_text()
    assert "ucm_resolution: 256\n" in text
    path.write_text(text.replace("ucm_resolution: 256\n", f"ucm_resolution: {resolution}\n"))


def test_the_env_reads_the_256_px_copy_by_default(conf):
    filepath, params = _resolved(conf)
    assert filepath == "../shared/data/ucm_captions/ucm_captions_256.parquet"
    assert params["source"]["image_cache_dir"] == "data/01_raw/ucm_captions/images_256"
    assert params["model"]["image_size"] == [256, 256]
    check_parameters(params)


def test_one_global_selects_the_128_px_copy_and_its_own_image_folder(conf):
    _set_resolution(conf, 128)
    filepath, params = _resolved(conf)
    assert filepath == "../shared/data/ucm_captions/ucm_captions_128.parquet"
    assert params["source"]["image_cache_dir"] == "data/01_raw/ucm_captions/images_128"
    check_parameters(params)


@needs_shared
@pytest.mark.parametrize("resolution", [256, 128])
def test_the_resolved_file_exists_and_its_images_pass_the_checks(conf, tmp_path, resolution):
    _set_resolution(conf, resolution)
    filepath, params = _resolved(conf)
    parquet = REPO / filepath
    assert parquet.is_file()
    table = pd.read_parquet(parquet, filters=[("image_id", "in", SAMPLE_IDS)])
    assert sorted(table["image_id"]) == SAMPLE_IDS
    cache = tmp_path / Path(params["source"]["image_cache_dir"]).name
    rows = read_ucm_parquet(table, cache)
    assert len(rows) == 5 * len(SAMPLE_IDS)
    kept, quarantine = apply_bad_input_policy(rows, policy="error", source="ucm", identities_disjoint=False)
    assert quarantine.empty and len(kept) == len(rows)
    sizes = {}
    for record in table.itertuples(index=False):
        path = cache / f"{record.image_id}.jpg"
        assert inspect_image(path) is None
        with Image.open(path) as image:
            sizes[record.image_id] = image.size
        expected = (record.orig_width, record.orig_height) if resolution == 256 else (128, 128)
        assert sizes[record.image_id] == expected
        # Training and evaluation resize every image, odd-sized ones too, to the preset's size.
        assert tuple(
            eval_transform(ImagePreprocessing(size=tuple(params["model"]["image_size"])))(load_rgb(str(path))).shape
        ) == (3, 256, 256)
    if resolution == 256:
        assert sizes == {"ucm_0001": (256, 256), "ucm_0156": (253, 256), "ucm_0497": (247, 247)}
