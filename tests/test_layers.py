"""The layers of the package hold: imports run downwards only, and the core imports without Kedro.

Layers, bottom to top (a module may import its own package and any lower layer):

0. ``formats`` (file formats, atomic writes), ``figures`` (figure basics), ``config_tree`` (typed
   parameter blocks from dicts), the torchvision shim,
   the oneDNN ISA cap
1. ``models``, ``losses``, ``retrieval``
2. ``inference`` (devices, image loading, embedding a split), ``tokenization``, ``tracking`` (MLflow
   logging from the core: a no-op without an active run, never raising)
3. ``sources``, ``training``
4. ``tuning``, ``index`` (image collections, embedding shards, the FAISS index)
5. ``io`` (the Kedro dataset classes), ``search`` (``Searcher``: queries against an index; no Kedro)
6. ``pipelines``, and ``hooks``, ``tracking_hooks`` (Kedro hooks)
7. the entry points: ``pipeline_registry``, ``settings``, ``launch`` (torchrun), ``serve`` (the web page)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "timam"
LAYERS = {
    "formats": 0,
    "figures": 0,
    "config_tree": 0,
    "_torchvision_compat": 0,
    "_onednn_isa": 0,
    "models": 1,
    "losses": 1,
    "retrieval": 1,
    "inference": 2,
    "tokenization": 2,
    "tracking": 2,
    "sources": 3,
    "training": 3,
    "tuning": 4,
    "index": 4,
    "io": 5,
    "search": 5,
    "pipelines": 6,
    "hooks": 6,
    "pipeline_registry": 7,
    "settings": 7,
    "launch": 7,
    "serve": 7,
    "tracking_hooks": 6,
}
CORE = [
    name
    for name, layer in LAYERS.items()
    if (layer <= 4 or name == "search") and ((PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file())
]


def _unit(module: str) -> str:
    """The top-level unit of ``timam.<unit>...`` (a package or a module directly under timam)."""
    return module.split(".")[1]


def _timam_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("timam.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("timam."):
            found.append((node.lineno, node.module))
    return found


def _modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if path.relative_to(PACKAGE).parts[0] != "__init__.py")


def test_every_module_has_a_layer() -> None:
    units = {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in _modules()}
    assert units <= set(LAYERS), f"give {sorted(units - set(LAYERS))} a layer in this test and the README"


def test_imports_run_down_the_layers_only() -> None:
    upward = []
    for path in _modules():
        importer = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for line, module in _timam_imports(path):
            imported = _unit(module)
            if LAYERS[imported] > LAYERS[importer] or (LAYERS[imported] == LAYERS[importer] and imported != importer):
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert not upward, "imports that do not run down the layers:\n" + "\n".join(upward)


_BLOCK_KEDRO = """
import importlib, pkgutil, sys

class BlockKedro:
    def find_spec(self, name, path=None, target=None):
        if name == "kedro" or name.startswith(("kedro.", "kedro_")):
            raise ImportError(f"kedro is absent in this test: {name}")
        return None

sys.meta_path.insert(0, BlockKedro())
import timam
for unit in sys.argv[1:]:
    module = importlib.import_module(f"timam.{unit}")
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), prefix=f"timam.{unit}."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
assert not any(name == "kedro" or name.startswith("kedro") for name in sys.modules)
print("imported", len([m for m in sys.modules if m.startswith("timam")]), "timam modules without kedro")
"""


def test_core_imports_with_kedro_absent() -> None:
    """Every module of every core unit, in one fresh interpreter whose import of kedro fails."""
    result = subprocess.run(
        [sys.executable, "-c", _BLOCK_KEDRO, *CORE], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "without kedro" in result.stdout
