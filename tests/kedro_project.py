"""A copy of the Kedro project in a temporary folder, and `kedro` run in it as a user would.

Each command runs in a fresh process from the copy, whose conf/local holds a tiny demo (24
identities) and two epochs unless a test gives its own, so tests never touch the repository's data/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).with_name("kedro"))

LOCAL_CATALOG = """
raw_annotations:
  type: timam.io.demo_dataset.DemoReidRawDataset
  filepath: data/01_raw/demo/reid_raw.json
  generator: {num_identities: 24, split_identities: [12, 6, 6], seed: 1}
"""
LOCAL_PARAMETERS = """
training:
  epochs: 2
  batch_size: 16
"""


def copy_project(root: Path, *, catalog: str = LOCAL_CATALOG, parameters: str = LOCAL_PARAMETERS) -> Path:
    """The project's pyproject and conf in ``root``, with ``catalog`` and ``parameters`` as conf/local."""
    shutil.copy(REPO / "pyproject.toml", root)
    (root / "src").mkdir()  # kedro wants a source dir; timam itself comes from the editable install
    shutil.copytree(REPO / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "conf" / "local" / "catalog.yml").write_text(catalog)
    (root / "conf" / "local" / "parameters.yml").write_text(parameters)
    return root


def kedro(project: Path, *args: str, succeeds: bool = True) -> subprocess.CompletedProcess:
    """``kedro <args>`` in ``project``; asserts it succeeded (or failed), showing its output if not."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KEDRO_DISABLE_TELEMETRY": "true"}
    result = subprocess.run([KEDRO, *args], cwd=project, capture_output=True, text=True, env=env, check=False)
    output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    if succeeds:
        assert result.returncode == 0, f"kedro {' '.join(args)} failed:\n{output}"
    else:
        assert result.returncode != 0, f"kedro {' '.join(args)} succeeded:\n{output}"
    return result


def checkpoint_versions(project: Path) -> list[str]:
    return sorted(p.name for p in (project / "data/06_models/demo/model_checkpoint.safetensors").iterdir())


def latest_metrics(project: Path) -> dict:
    folder = project / "data/08_reporting/demo/retrieval_metrics.json"
    latest = sorted(p.name for p in folder.iterdir())[-1]
    return json.loads((folder / latest / "retrieval_metrics.json").read_text())
