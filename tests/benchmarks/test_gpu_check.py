"""benchmarks/gpu_check.py in its CPU mode (``--device cpu --tiny``): every section runs and passes, so
the script a GPU session runs does not rot between the sessions that have a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from timam import _onednn_isa

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
SECTIONS = ["env", "step", "ddp1", "ranking", "throughput", "clip"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[dict[str, dict], str]:
    """The JSON line of each section and the last line printed, from one tiny CPU run."""
    out = tmp_path_factory.mktemp("gpu_check")
    # Without ONEDNN_MAX_CPU_ISA, as a user runs it: the script's bf16 steps rely on `import timam`
    # capping oneDNN below AMX on CPUs with AMX (issue 27: NaN in step, ddp1 and throughput before).
    env = {key: value for key, value in os.environ.items() if key != "ONEDNN_MAX_CPU_ISA"}
    env.update(KEDRO_DISABLE_TELEMETRY="true", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(out)]
    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    lines = [json.loads(line) for line in (out / "gpu_check.jsonl").read_text().splitlines()]
    assert [line["section"] for line in lines] == SECTIONS
    return {line["section"]: line for line in lines}, finished.stdout.strip().splitlines()[-1]


def test_every_section_is_ok(tiny_run):
    records, _ = tiny_run
    for name, record in records.items():
        assert record["ok"] is True, (name, record.get("error"), record.get("failed_checks"), record.get("traceback"))
        assert not record.get("failed_checks"), name


def test_env_records_the_onednn_cap_that_import_timam_decided(tiny_run):
    env = tiny_run[0]["env"]
    assert env["onednn_max_cpu_isa"] == (_onednn_isa.CAP if _onednn_isa.amx_possible()[0] else None)
    assert "ONEDNN_MAX_CPU_ISA" in env["onednn_isa_decision"]


def test_step_gives_every_trainable_parameter_a_gradient_and_float32_embeddings(tiny_run):
    step = tiny_run[0]["step"]
    assert step["image_cached"] is False and step["text_cached"] is False  # backbone and BERT both trained
    assert step["trainable_without_grad"] == []
    assert step["image_embedding_dtype"] == ["float32"]
    assert step["text_embedding_dtype"] == ["float32"]
    assert step["loss_input_dtypes"] and all(dtypes == ["float32"] for dtypes in step["loss_input_dtypes"].values())
    if step.get("compute_dtype") is not None:  # the bf16 autocast path really ran (--tiny on the CPU)
        assert step["compute_dtype"] == "bfloat16"


def test_ddp1_trains_through_the_unfreeze_and_the_gather_keeps_the_gradient(tiny_run):
    ddp1 = tiny_run[0]["ddp1"]
    assert ddp1["backend"] == "gloo"
    assert ddp1["gather"]["gradient_equal"] is True
    assert ddp1["unfrozen"]["ddp"] is True and ddp1["unfrozen"]["rebuilt"] is True
    assert ddp1["trainable_without_grad"] == []


def test_ranking_is_bitwise_equal(tiny_run):
    ranking = tiny_run[0]["ranking"]
    assert ranking["bitwise_equal"] is True
    for case in ("integer", "float"):
        assert ranking[case]["chunks_bitwise_equal"] is True
        assert ranking[case]["tf32_bitwise_equal"] is True
        assert ranking[case]["tf32_setting_restored"] is True
    assert ranking["integer"]["cpu_bitwise_equal"] is True


def test_throughput_measures_every_variant_but_compile(tiny_run):
    variants = tiny_run[0]["throughput"]["variants"]
    for name in ("A", "B", "C", "E"):
        assert variants[name]["ok"] is True, variants[name].get("error")
        assert variants[name]["pairs_per_s"] > 0
    assert variants["A"]["text_cached"] is True and variants["B"]["text_cached"] is False
    assert "skipped" in variants["D"]  # torch.compile: only on CUDA without --tiny


def test_last_line_is_machine_readable(tiny_run):
    _, last = tiny_run
    name, _, rest = last.partition(": ")
    values = dict(item.split("=", 1) for item in rest.split())
    assert name == "gpu_check"
    assert list(values)[:4] == ["ok", "pairs_per_s_B", "syncs_per_step", "seconds"]
    assert values["ok"] == f"{len(SECTIONS)}/{len(SECTIONS)}"
    assert float(values["pairs_per_s_B"]) > 0 and float(values["seconds"]) > 0
    assert values["syncs_per_step"] == "na"  # counted on CUDA only
    assert values["device"] == "cpu" and values["mode"] == "tiny"


@pytest.fixture(scope="module")
def gpu_check_module():
    """The script as a module (its _common import sets environment defaults: put them back after)."""
    saved = dict(os.environ)
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
        os.environ.clear()
        os.environ.update(saved)
    return gpu_check


def _synchronising_call() -> None:
    warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)


def test_sync_points_are_counted_per_line_and_other_warnings_kept(gpu_check_module):
    """What the step section does on CUDA, fed a stand-in for the sync warning on the CPU: every
    occurrence counts (no once-per-line filtering), attributed to the repository line that caused it;
    a warning from torch's C++ side comes through the same hook and is kept apart."""
    recorder = gpu_check_module.SyncPoints(torch.device("cpu"), enabled=True)
    with recorder.recording():
        for _ in range(3):
            _synchronising_call()
        torch.add(torch.ones(2), torch.ones(2), out=torch.empty(3))  # C++ TORCH_WARN: "resized"
    assert recorder.count == 3
    [site] = recorder.listing()
    assert site["count"] == 3
    assert site["at"].startswith("tests/benchmarks/test_gpu_check.py:")
    assert "warnings.warn" in site["code"]
    assert len(recorder.other_warnings) == 1 and "resized" in recorder.other_warnings[0]
    assert gpu_check_module.SyncPoints(torch.device("cpu")).count is None  # not counted off CUDA


def test_clip_runs_infonce_steps_of_a_dual_encoder_with_finite_loss_and_gradients(tiny_run):
    clip = tiny_run[0]["clip"]
    assert (clip["model"], clip["batch"], clip["image_size"]) == ("gpu-check-tiny-clip", 8, [32, 32])
    assert clip["checks"] == {"loss_finite": True, "gradients_finite": True}
    assert clip["images_per_s"] > 0 and clip["peak_mib"] > 0 and clip["loss_first_last"][0] > 0
