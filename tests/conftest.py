"""Test-wide setup: offline hubs, no telemetry, and torchvision importable before anything else."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
# `make test` runs the suite in one pytest worker per core (pytest-xdist): each worker, and the
# `kedro run`s its tests start, computes on one thread, so two workers do not fight over two cores.
if "PYTEST_XDIST_WORKER" in os.environ:
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
# No ONEDNN_MAX_CPU_ISA here: importing timam (below) caps oneDNN below AMX itself on CPUs with AMX,
# so the CPU bf16 tests check the protection users get (tests/test_onednn_isa.py).

from timam._torchvision_compat import ensure_torchvision_importable  # noqa: E402

ensure_torchvision_importable()
