"""benchmarks/hamming_speed.py --tiny runs in seconds, checks itself against a brute force, ends with its line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "hamming_speed.py"
KEYS = [
    "n",
    "bits",
    "exact_p50_ms",
    "exact_p99_ms",
    "exact_qps",
    "exact_mb",
    "ns_per_code",
    "ns_per_code_1t",
    "ivf_recall10",
]


def run_tiny(*extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def last_line(finished: subprocess.CompletedProcess) -> dict[str, str]:
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    name, _, rest = finished.stdout.strip().splitlines()[-1].partition(": ")
    assert name == "hamming"
    return dict(item.split("=", 1) for item in rest.split(" "))


def test_tiny_run_checks_exact_search_and_ends_with_the_hamming_line(tmp_path):
    real = tmp_path / "codes.npy"
    np.save(real, np.random.default_rng(0).integers(0, 256, (3000, 8), dtype=np.uint8))
    finished = run_tiny("--real", str(real))
    values = last_line(finished)
    assert list(values)[: len(KEYS)] == KEYS
    assert int(values["n"]) == 20_000 and int(values["bits"]) == 64
    assert 0 < float(values["exact_p50_ms"]) <= float(values["exact_p99_ms"])
    assert 0.9 <= float(values["ivf_recall10"]) <= 1.0
    assert values["ivf_plan"].startswith("BIVF") and values["plan"] == "BFlat"
    assert float(values["ivf_build_s"]) >= 0 and 0 < float(values["peak_mb"])
    assert values["targets_met"] in {"true", "false"}
    out = finished.stdout
    assert "equals the numpy brute force on 5 queries" in out and "nprobe" in out
    assert f"[real {real} exact] equals the numpy brute force" in out  # the real codes were measured too
