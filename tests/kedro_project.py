"""A copy of the Kedro project in a temporary folder, and `kedro` run in it as a user would.

Each command runs in a fresh process from the copy, whose conf/local holds the test's tiny demo and
parameters, so tests never touch the repository's data/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).with_name("kedro"))


def copy_project(root: Path, *, catalog: str, parameters: str) -> Path:
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
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KEDRO_DISABLE_TELEMETRY": "true", "TQDM_DISABLE": "1"}
    result = subprocess.run([KEDRO, *args], cwd=project, capture_output=True, text=True, env=env, check=False)
    if succeeds:
        assert result.returncode == 0, (
            f"kedro {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    else:
        assert result.returncode != 0, f"kedro {' '.join(args)} succeeded:\n{result.stdout[-3000:]}"
    return result
