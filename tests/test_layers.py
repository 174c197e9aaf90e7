"""The layers of the package hold: every package has a layer, and the core imports without Kedro.

The layer rules themselves are import-linter contracts in pyproject.toml (``make lint`` runs
``lint-imports``): imports run down the layers only, and the core never imports Kedro. This test
keeps the contract whole (a new package must be given a layer) and proves the second rule in a
real interpreter whose import of Kedro fails.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "timam"
CONTRACTS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _contract(kind: str) -> dict:
    return next(contract for contract in CONTRACTS if contract["type"] == kind)


def _layered_units() -> set[str]:
    return {unit.strip() for layer in _contract("layers")["layers"] for unit in layer.split("|")}


def test_every_package_and_module_has_a_layer() -> None:
    units = {
        path.name.removesuffix(".py")
        for path in PACKAGE.iterdir()
        if (path.is_dir() and (path / "__init__.py").exists()) or (path.suffix == ".py" and path.name != "__init__.py")
    }
    assert units == _layered_units(), (
        f"give {sorted(units - _layered_units())} a layer in pyproject.toml's import-linter contract; "
        f"remove {sorted(_layered_units() - units)}"
    )


def test_the_core_is_everything_below_the_kedro_io_layer_and_search() -> None:
    layers = [[unit.strip() for unit in layer.split("|")] for layer in _contract("layers")["layers"]]
    io_layer = next(index for index, layer in enumerate(layers) if "io" in layer)
    shims = {"_torchvision_compat", "_onednn_isa"}  # run at import, before any of the core
    expected = {f"timam.{unit}" for layer in layers[io_layer + 1 :] for unit in layer if unit not in shims}
    expected.add("timam.search")
    assert set(_contract("forbidden")["source_modules"]) == expected


_BLOCK_KEDRO = """
import importlib, pkgutil, sys

class BlockKedro:
    def find_spec(self, name, path=None, target=None):
        if name == "kedro" or name.startswith(("kedro.", "kedro_")):
            raise ImportError(f"kedro is absent in this test: {name}")
        return None

sys.meta_path.insert(0, BlockKedro())
import timam
for name in sys.argv[1:]:
    module = importlib.import_module(name)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), prefix=f"{name}."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
assert not any(name == "kedro" or name.startswith("kedro") for name in sys.modules)
print("imported", len([m for m in sys.modules if m.startswith("timam")]), "timam modules without kedro")
"""


def test_core_imports_with_kedro_absent() -> None:
    """Every module of every core unit, in one fresh interpreter whose import of kedro fails."""
    core = _contract("forbidden")["source_modules"]
    result = subprocess.run(
        [sys.executable, "-c", _BLOCK_KEDRO, *core], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "without kedro" in result.stdout
