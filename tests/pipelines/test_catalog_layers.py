"""Every catalog entry of every env builds and names its kedro-viz layer, the one its data folder names."""

from __future__ import annotations

from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog

CONF = Path(__file__).resolve().parents[2] / "conf"
ENVS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in {"base", "local"})
LAYERS = {"raw", "intermediate", "primary", "feature", "model_input", "models", "model_output", "reporting"}
FOLDER_LAYER = {"02_intermediate": "intermediate", "04_feature": "feature", "06_models": "models",
                "07_model_output": "model_output", "08_reporting": "reporting"}  # fmt: skip


@pytest.mark.parametrize("env", ["base", *ENVS])
def test_every_entry_builds_with_a_layer(env: str) -> None:
    loader = OmegaConfigLoader(conf_source=str(CONF), base_env="base", default_run_env=env)
    entries = loader["catalog"]
    catalog = DataCatalog.from_config({k: v for k, v in entries.items() if "{" not in k})
    for name, entry in entries.items():
        layer = entry.get("metadata", {}).get("kedro-viz", {}).get("layer")
        assert layer in LAYERS, f"{env}: {name} has no kedro-viz layer"
        folder = next((part for part in Path(str(entry.get("filepath", ""))).parts if part in FOLDER_LAYER), None)
        assert folder is None or FOLDER_LAYER[folder] == layer, f"{env}: {name} lives in {folder}, layer {layer}"
        if "{" not in name:
            assert catalog.get(name).metadata["kedro-viz"]["layer"] == layer
