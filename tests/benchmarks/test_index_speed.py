"""benchmarks/index_speed.py --tiny runs in seconds and ends with its machine-readable line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "index_speed.py"
KEYS = ["n", "recall10", "p50_ms", "p99_ms", "build_s", "mem_mb"]


def test_tiny_run_ends_with_the_index_line():
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    finished = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    last = finished.stdout.strip().splitlines()[-1]
    name, _, rest = last.partition(": ")
    assert name == "index"
    values = dict(item.split("=", 1) for item in rest.split(" "))
    assert list(values)[: len(KEYS)] == KEYS  # the order: n recall10 p50_ms p99_ms build_s mem_mb
    assert int(values["n"]) == 5000
    assert 0.8 <= float(values["recall10"]) <= 1.0
    assert 0 < float(values["p50_ms"]) <= float(values["p99_ms"])
    assert float(values["build_s"]) >= 0 and 0 < float(values["mem_mb"]) < 10
    assert "Refine(SQ8)" in values["plan"]  # --tiny puts 5,000 vectors above its flat_max: the approximate path
    assert values["targets_met"] in {"true", "false"}
    assert "exact flat floor" in finished.stdout and "nprobe" in finished.stdout
