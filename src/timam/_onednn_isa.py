"""Keep oneDNN's AMX kernels away from bfloat16 on the CPU, decided before oneDNN starts.

On Intel CPUs with AMX (Sapphire Rapids and later) the AMX bf16 brgemm kernels of the oneDNN that
torch 2.13 ships (v3.12) leak NaN or garbage from other rows into output rows whose inputs are
clean (oneDNN issue 5717, fixed upstream by oneDNN pull request 5723): ``training.precision:
bfloat16`` on such a CPU stops on a NaN loss, and a bf16 embedding would be silently wrong. Capping
oneDNN at ``AVX512_CORE_BF16`` keeps bf16 on its AVX-512 kernels; float32 never uses AMX, so it
loses nothing. On a CPU without AMX the cap changes nothing, so it is set only where AMX may be.

oneDNN reads ``ONEDNN_MAX_CPU_ISA`` once, at its first ISA query (the first oneDNN primitive torch
creates), not when torch is imported, and torch has no public call that sets the cap at run time
(oneDNN's ``set_max_cpu_isa`` is not exposed). So ``timam/__init__.py`` calls :func:`cap_onednn_isa`
before anything else: every entry point (``kedro run``, the benchmarks, ``timam serve``, the tests)
imports timam before its first tensor operation, and child processes inherit the variable. Code that
runs torch CPU operations *before* importing timam (a notebook cell) gets no cap from this module.

A value the user set is never changed; :func:`cpu_bfloat16_problem` says why CPU bf16 is refused
when that value lets oneDNN use AMX. ``TIMAM_CPUINFO`` names another file to read the CPU flags
from (default ``/proc/cpuinfo``), so a CPU with AMX can be simulated on one without.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping
from pathlib import Path

VARIABLE = "ONEDNN_MAX_CPU_ISA"
CAP = "AVX512_CORE_BF16"
CPUINFO_VARIABLE = "TIMAM_CPUINFO"
AMX_FLAG = "amx_bf16"
# oneDNN's x64 ISA names below AMX (oneDNN's "CPU Dispatcher Control" page; it ignores case but not
# spaces). ALL, DEFAULT, every *_AMX* name and anything oneDNN does not know (it then keeps its
# default) allow AMX.
BELOW_AMX = frozenset(
    {
        "SSE41",
        "AVX",
        "AVX2",
        "AVX2_VNNI",
        "AVX2_VNNI_2",
        "AVX512_CORE",
        "AVX512_CORE_VNNI",
        "AVX512_CORE_BF16",
        "AVX512_CORE_FP16",
        "AVX10_1_512",
    }
)
_X86 = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})

decision = "not decided yet: cap_onednn_isa() has not run"


def cpuinfo_path() -> Path:
    return Path(os.environ.get(CPUINFO_VARIABLE) or "/proc/cpuinfo")


def cpu_flags(cpuinfo: Path | None = None) -> frozenset[str] | None:
    """The feature flags of the first CPU in ``cpuinfo`` (Linux format), or None when unreadable."""
    try:
        text = (cpuinfo or cpuinfo_path()).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def amx_possible(cpuinfo: Path | None = None, machine: str | None = None) -> tuple[bool, str]:
    """Whether oneDNN may pick AMX kernels here, and how that was decided (for the log line)."""
    flags = cpu_flags(cpuinfo)
    where = str(cpuinfo or cpuinfo_path())
    if flags is not None:
        if AMX_FLAG in flags:
            return True, f"this CPU has AMX ({AMX_FLAG} in {where})"
        return False, f"this CPU has no AMX (no {AMX_FLAG} in {where})"
    machine = (machine or platform.machine()).lower()
    if machine in _X86:
        return True, f"the CPU flags are unreadable ({where}) on an x86 CPU, which may have AMX"
    return False, f"{machine or 'this'} CPU is not x86: oneDNN has no AMX kernels here"


def cap_onednn_isa(
    environ: MutableMapping[str, str] | None = None, cpuinfo: Path | None = None, machine: str | None = None
) -> str:
    """Set ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` where AMX may be and the user set nothing.

    Returns (and keeps in :data:`decision`) the sentence that says what was done and why.
    """
    global decision
    environ = os.environ if environ is None else environ
    amx, why = amx_possible(cpuinfo, machine)
    if VARIABLE in environ:
        decision = f"kept the {VARIABLE}={environ[VARIABLE]} set before timam was imported ({why})"
    elif amx:
        environ[VARIABLE] = CAP
        decision = (
            f"set {VARIABLE}={CAP} because {why}: oneDNN's AMX bf16 kernels can turn CPU bfloat16 "
            "results into NaN (oneDNN issue 5717)"
        )
    else:
        decision = f"left {VARIABLE} unset: {why}"
    return decision


def cpu_bfloat16_problem(
    environ: MutableMapping[str, str] | None = None, cpuinfo: Path | None = None, machine: str | None = None
) -> str | None:
    """Why bfloat16 on this CPU would be unsafe now (an AMX-enabling cap), or None when it is safe."""
    environ = os.environ if environ is None else environ
    amx, why = amx_possible(cpuinfo, machine)
    value = environ.get(VARIABLE)
    if not amx or (value is not None and value.upper() in BELOW_AMX):
        return None
    setting = f"{VARIABLE}={value!r}" if value is not None else f"{VARIABLE} unset"
    return (
        f"bfloat16 on the CPU is refused: {why} and {setting} lets oneDNN use its AMX bf16 kernels, which "
        "in the oneDNN torch ships can leak NaN or garbage into unrelated rows (oneDNN issue 5717). "
        f"Start Python with {VARIABLE} unset (timam then sets {CAP}) or set to {CAP}, "
        "or use training.precision: float32."
    )
