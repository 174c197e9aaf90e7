"""CPU bfloat16 is safe by itself: importing timam caps oneDNN below AMX on CPUs that have it.

The AMX failure itself (oneDNN issue 5717) needs an Intel CPU with AMX; these tests simulate one
with a cpuinfo file (``TIMAM_CPUINFO``) and run every child without the variable, so nothing from
the test suite's own environment stands in for the product's protection.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from timam import _onednn_isa
from timam._onednn_isa import CAP, VARIABLE, amx_possible, cap_onednn_isa, cpu_bfloat16_problem, cpu_flags

REPO = Path(__file__).resolve().parents[1]
SAPPHIRE_RAPIDS_FLAGS = "fpu sse4_1 avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8"
ZEN_FLAGS = "fpu sse4_1 avx avx2 avx512f avx512bw avx512_bf16"


def cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / f"cpuinfo-{len(flags)}"
    path.write_text(f"processor\t: 0\nmodel name\t: test CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n", encoding="utf-8")
    return path


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment without any oneDNN cap, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if key != VARIABLE}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]), **extra)
    return env


def run_child(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )


# ----------------------------------------------------------------------------- the decision


def test_flags_are_read_from_the_cpuinfo_file(tmp_path):
    assert "amx_bf16" in (cpu_flags(cpuinfo(tmp_path, SAPPHIRE_RAPIDS_FLAGS)) or ())
    assert cpu_flags(cpuinfo(tmp_path, ZEN_FLAGS)) == frozenset(ZEN_FLAGS.split())
    assert cpu_flags(tmp_path / "absent") is None


def test_an_unreadable_cpuinfo_counts_as_amx_on_x86_only(tmp_path):
    assert amx_possible(tmp_path / "absent", machine="x86_64")[0] is True
    assert amx_possible(tmp_path / "absent", machine="AMD64")[0] is True  # Windows' spelling
    assert amx_possible(tmp_path / "absent", machine="arm64")[0] is False


def test_the_cap_is_set_only_where_amx_is_and_never_over_a_users_value(tmp_path):
    amx, no_amx = cpuinfo(tmp_path, SAPPHIRE_RAPIDS_FLAGS), cpuinfo(tmp_path, ZEN_FLAGS)
    environ: dict[str, str] = {}
    assert "amx_bf16" in cap_onednn_isa(environ, amx) and environ == {VARIABLE: CAP}
    environ = {}
    assert "no AMX" in cap_onednn_isa(environ, no_amx) and environ == {}
    environ = {VARIABLE: "AVX2"}
    assert "kept" in cap_onednn_isa(environ, amx) and environ == {VARIABLE: "AVX2"}


@pytest.mark.parametrize("value", [None, "ALL", "DEFAULT", "AVX512_CORE_AMX", "avx10_1_512_amx", " AVX2", "bogus"])
def test_cpu_bfloat16_is_refused_where_onednn_may_still_pick_amx(tmp_path, value):
    environ = {} if value is None else {VARIABLE: value}
    problem = cpu_bfloat16_problem(environ, cpuinfo(tmp_path, SAPPHIRE_RAPIDS_FLAGS))
    assert problem is not None
    assert "oneDNN issue 5717" in problem and f"{VARIABLE}" in problem and "float32" in problem


@pytest.mark.parametrize("value", [CAP, "avx512_core_bf16", "AVX2", "AVX10_1_512"])
def test_cpu_bfloat16_is_allowed_below_amx_or_without_it(tmp_path, value):
    assert cpu_bfloat16_problem({VARIABLE: value}, cpuinfo(tmp_path, SAPPHIRE_RAPIDS_FLAGS)) is None
    assert cpu_bfloat16_problem({VARIABLE: "ALL"}, cpuinfo(tmp_path, ZEN_FLAGS)) is None


# ----------------------------------------------------------------------------- real child processes

_REPORT = """
import json, os, subprocess, sys
import timam
from timam import _onednn_isa
grandchild = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('ONEDNN_MAX_CPU_ISA'))"],
                            capture_output=True, text=True, check=True).stdout.strip()
print(json.dumps({"value": os.environ.get("ONEDNN_MAX_CPU_ISA"), "decision": _onednn_isa.decision,
                  "grandchild": grandchild}))
"""


def test_importing_timam_on_an_amx_cpu_sets_the_cap_for_the_process_and_its_children(tmp_path):
    done = run_child(_REPORT, child_env(TIMAM_CPUINFO=str(cpuinfo(tmp_path, SAPPHIRE_RAPIDS_FLAGS))))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["value"] == CAP and report["grandchild"] == CAP
    assert "amx_bf16" in report["decision"] and "5717" in report["decision"]


def test_importing_timam_keeps_a_users_own_value_and_leaves_a_cpu_without_amx_alone(tmp_path):
    amx = str(cpuinfo(tmp_path, SAPPHIRE_RAPIDS_FLAGS))
    done = run_child(_REPORT, child_env(TIMAM_CPUINFO=amx, **{VARIABLE: "AVX2"}))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["value"] == "AVX2"
    done = run_child(_REPORT, child_env(TIMAM_CPUINFO=str(cpuinfo(tmp_path, ZEN_FLAGS))))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["value"] is None


_ISA_AFTER_IMPORT = """
import os
import torch
import timam  # torch, torchvision and the timam package are loaded: has oneDNN fixed its ISA yet?
os.environ["ONEDNN_MAX_CPU_ISA"] = "SSE41"
images = torch.randn(2, 16, 32, 32).contiguous(memory_format=torch.channels_last)
weight = torch.randn(8, 16, 3, 3).contiguous(memory_format=torch.channels_last)
torch.nn.functional.conv2d(images, weight)
"""


@pytest.mark.skipif(
    platform.machine().lower() not in {"x86_64", "amd64"} or not torch.backends.mkldnn.is_available(),
    reason="oneDNN's x64 ISA names need an x86 CPU and a torch built with oneDNN",
)
def test_onednn_reads_the_cap_at_its_first_primitive_after_timam_is_imported():
    """What the design rests on: a value set once torch and timam are imported still takes effect."""
    done = run_child(_ISA_AFTER_IMPORT, child_env(ONEDNN_VERBOSE="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    isa_lines = [line for line in done.stdout.splitlines() if ",info,cpu,isa:" in line]
    assert isa_lines and isa_lines[0].endswith("SSE4.1"), done.stdout[:2000]
    assert ",convolution,jit:sse41," in done.stdout  # the convolution really ran with the capped ISA


_BF16_STEP = """
import json, os, tempfile
from pathlib import Path
from tests.training.test_trainer_step import ALL_TERMS, make_trainer, one_step
with tempfile.TemporaryDirectory() as folder:
    values = {**ALL_TERMS, "precision": "bfloat16", "freeze": {"image_backbone_epochs": 0, "text_model_epochs": 0}}
    trainer, generator = make_trainer(Path(folder), values)
    losses = one_step(trainer, generator)
print(json.dumps({"losses": {k: float(v) for k, v in losses.items()}, "value": os.environ.get("ONEDNN_MAX_CPU_ISA")}))
"""


def test_a_cpu_bfloat16_training_step_is_finite_without_the_variable():
    """The CPU bf16 path (both encoders trainable) in a child without ONEDNN_MAX_CPU_ISA, on this
    machine's real CPU flags: on a CPU with AMX this is the NaN of issue 27 unless timam caps oneDNN."""
    done = run_child(_BF16_STEP, child_env())
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["losses"] and all(math.isfinite(value) and abs(value) < 1e6 for value in report["losses"].values())
    assert report["value"] == (CAP if _onednn_isa.amx_possible()[0] else None)


def test_a_users_value_that_allows_amx_refuses_cpu_bfloat16_naming_the_fix(tmp_path):
    code = (
        "import torch\nfrom timam.inference.device import compute_dtype\n"
        "print(compute_dtype(torch.device('cpu'), 'float32'))\n"
        "compute_dtype(torch.device('cpu'), 'bfloat16')\n"
    )
    env = child_env(TIMAM_CPUINFO=str(cpuinfo(tmp_path, SAPPHIRE_RAPIDS_FLAGS)), **{VARIABLE: "ALL"})
    done = run_child(code, env)
    assert done.returncode != 0 and "torch.float32" in done.stdout  # float32 is never refused
    assert "RuntimeError: bfloat16 on the CPU is refused" in done.stderr
    assert f"{VARIABLE}='ALL'" in done.stderr and CAP in done.stderr and "5717" in done.stderr
