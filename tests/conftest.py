"""Test-wide setup: offline hubs, no telemetry, and torchvision importable before anything else."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
# No ONEDNN_MAX_CPU_ISA here: importing timam (below) caps oneDNN below AMX itself on CPUs with AMX,
# so the CPU bf16 tests check the protection users get (tests/test_onednn_isa.py).

from timam._torchvision_compat import ensure_torchvision_importable  # noqa: E402

ensure_torchvision_importable()
