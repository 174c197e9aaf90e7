"""The GPU check: verify timam's CUDA path in at most 8 minutes, in one process with one model build.

A session that is lent a GPU runs (benchmarks/README.md, "GPU check")::

    .venv/bin/python benchmarks/gpu_check.py --device cuda --out $OUT

It runs five sections in order, each caught on its own (an error is recorded with its traceback tail
and the next section still runs), and appends one JSON line per section to ``OUT/gpu_check.jsonl``
as soon as the section ends (flushed and fsynced, so a run killed by a timeout keeps what finished):

``env``
    torch, CUDA, cuDNN and NCCL versions, the GPU and its memory, the TF32 settings read through the
    new per-backend API (``torch.backends.cuda.matmul.fp32_precision`` ...; the legacy getters raise
    once anything set the new one), ``cudnn.benchmark`` / ``deterministic``, the decoding workers the
    loop would use (``default_workers()``), CPU count, and the training knobs ``TrainingConfig`` has.
``step``
    Real training steps (``TimamTrainer.train_epoch``) of the paper configuration read from conf/paper
    through Kedro's loader: ResNet-101 at 384x128 and a bert-base-sized BERT, both trainable, random
    weights, batch 64, 64 tokens, 11,003 identities, the paper's losses and optimisers. On CUDA under
    ``torch.cuda.set_sync_debug_mode("warn")``: every host-device synchronisation is listed with the
    project line that caused it. Epochs of 1 (first, with the lazy initialisations), 1 and 2 steps:
    ``syncs_per_step`` = syncs(2 steps) - syncs(1 step), ``syncs_per_epoch`` the rest. Also the dtypes
    of the image and text embeddings and of every loss input, and each trainable parameter that has
    no gradient after the step (DDP fails on those).
``ddp1``
    A one-rank process group (NCCL through the project's "cpu:gloo,cuda:nccl" on CUDA, gloo on the
    CPU; a free port on 127.0.0.1) and the trainer under a context that counts as distributed, so
    DistributedDataParallel, the autograd all-gather and the gradient all-reduce really run: 1 step
    with BERT frozen (cached states), then the unfreeze rebuilds DDP and 3 steps train through it.
    Plus the gradient check of ``gather_with_grad``: the gradient through the gather equals the
    gradient without it. (NCCL refuses two ranks on one GPU; multi-rank equivalence is the gloo test.)
``ranking``
    ``per_query_metrics`` on the device against the CPU, for integer embeddings (products exact on
    every device: must be bitwise equal) and normalised random ones (recorded); chunk sizes 1 / 7 /
    1024 and a repeat bitwise equal; then TF32 turned on through the new API (and bf16 for oneDNN):
    it must neither crash nor change a bit, and the caller's setting must be back afterwards.
``throughput``
    Warm-up, then timed, synchronised steps through the real ``train_epoch`` (the machinery of
    training_speed.py): pairs/s, ms/step and peak MiB for A = ResNet trainable + BERT cached (the
    paper's epochs 1-5), B = both trainable (epochs 6+), C = A through the real JPEG loader (demo
    images, ``default_workers()`` workers, pinned memory), E = B with ``cudnn.benchmark``, and
    D = B with ``torch.compile`` if enough time is left. A, B, C and D run with cudnn.benchmark off
    (the training loop turns it on unless ``training.deterministic``: E is what it trains at).
    Images of A, B, D and E come from a pool in device memory (the model step alone).
``clip``
    InfoNCE training steps of a CLIP-family dual encoder (open_clip's ViT-B-16, random weights, both
    towers trainable, at 224 px, batch 128, 77 tokens, bfloat16 autocast on CUDA) through timam's
    model wrapper, the contrastive loss with its learnable temperature and AdamW: images/s, ms/step,
    peak MiB, and whether the loss and every tower gradient are finite. ``--tiny``: a 2-layer ViT at
    32 px, batch 8, 16 tokens.

The run stops itself: a deadline (``--deadline-s``, 480) is checked between sections and after every
training step; sections not started by then are recorded as skipped. A watchdog ends the process
``--grace-s`` later whatever it is doing (a hung collective, a long compile), after recording the
section it interrupted with the main thread's stack. Exit status: 0 when every section is ok, 1 when
one is not, 3 after the watchdog.

``--device cpu --tiny`` runs the same sections on tiny models (ResNet-18 at 64x32, a 2-layer
64-hidden BERT, 32 identities, batch 8, 16 tokens, 3 timed steps, bfloat16 autocast so the
float32-embedding checks mean something) in under a minute: tests/benchmarks/test_gpu_check.py runs
it, so the script does not rot without a GPU.

The last line printed is machine-readable:
``gpu_check: ok=<sections ok>/<sections> pairs_per_s_B=... syncs_per_step=... seconds=...`` followed by
the other rates and the comparison of B with the target of 1,200 training pairs/s (paper
configuration, one H100/H200).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import socket
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

import _common  # noqa: I001  (first: environment, sys.path, oneDNN ISA cap, torchvision shim)
import training_speed
from _common import REPO, TINY_BERT_CONFIG, result_line


def process_age() -> float:
    """Seconds since this process started (Linux /proc; 0 elsewhere): the deadline counts the imports."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0
    return age if 0.0 <= age < 3600.0 else 0.0


IMPORTED_AT = process_age()
STARTED = time.perf_counter() - IMPORTED_AT
SECTIONS = ("env", "step", "ddp1", "ranking", "throughput", "clip")
TARGET_PAIRS_PER_S = 1200.0
EPOCH = 10**6  # past the adversarial warm-up epochs (as training_speed.run_epochs): every weighted term is on
TRACEBACK_CHARS = 3000
# What --tiny changes in conf/paper's model block (the rest, e.g. torchvision and the transformer, stays).
TINY_MODEL = {
    "image_backbone": "resnet18",
    "image_size": [64, 32],
    "image_weights": None,
    "lstm_hidden": 32,
    "embedding_dim": 32,
    "transformer_config": TINY_BERT_CONFIG,
}
# The clip section's --tiny tower pair: open_clip's own config format, registered through its API.
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
# Throughput variants: name -> (what, (image backbone, text model) freeze epochs, images, cudnn.benchmark, compile).
VARIANTS = {
    "A": ("ResNet trainable, BERT cached (paper epochs 1-5)", (0, None), "pool", False, False),
    "B": ("ResNet and BERT trainable (paper epochs 6+)", (0, 0), "pool", False, False),
    "C": ("A through the real JPEG loader", (0, None), "files", False, False),
    "E": ("B with cudnn.benchmark", (0, 0), "pool", True, False),
    "D": ("B with torch.compile (backbone and transformer)", (0, 0), "pool", False, True),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--out", required=True, help="folder for gpu_check.jsonl (created)")
    parser.add_argument("--tiny", action="store_true", help="tiny models (the CPU test; seconds, not minutes)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--deadline-s", type=float, default=480.0, help="no section or step starts after this")
    parser.add_argument("--grace-s", type=float, default=30.0, help="the watchdog ends the run this long after")
    parser.add_argument("--steps", type=int, default=None, help="timed throughput steps (default 30, --tiny 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps before each (default 3, --tiny 1)")
    parser.add_argument("--pool", type=int, default=256, help="distinct random images held in device memory")
    parser.add_argument(
        "--compile", choices=("auto", "on", "off"), default="auto", help="D: auto = on CUDA without --tiny, if time"
    )
    parser.add_argument("--compile-min-s", type=float, default=150.0, help="auto runs D only with this much left")
    parser.add_argument(
        "--precision", default=None, help="training.precision (default: the config's; --tiny on the CPU: bfloat16)"
    )
    parser.add_argument("--deterministic", action="store_true", help="training.deterministic: true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.sections.split(",")) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {SECTIONS}")
    return args


# ----------------------------------------------------------------------------- deadline and journal


class DeadlineReached(RuntimeError):
    """The run's deadline passed: the section stops here."""


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    @staticmethod
    def elapsed() -> float:
        return time.perf_counter() - STARTED

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def check(self, where: str) -> None:
        if self.left() <= 0:
            raise DeadlineReached(f"{where}: the {self.seconds:.0f} s deadline passed ({self.elapsed():.0f} s)")


def clean(value: Any) -> Any:
    """JSON-safe: floats to 6 significant digits, NaN and infinities as null, dtypes, devices and
    paths as text, tuples as lists."""
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [clean(item) for item in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, torch.dtype):
        return dtype_name(value)
    return str(value)


class Journal:
    """``gpu_check.jsonl``: one line per section, on disk (flushed and fsynced) as soon as it is written."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "gpu_check.jsonl"
        self.path.write_text("")
        self.lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(clean(record), allow_nan=False)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def traceback_tail() -> str:
    return traceback.format_exc()[-TRACEBACK_CHARS:]


# ----------------------------------------------------------------------------- small helpers


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Same keys, dtypes, shapes and bytes (so -0.0 differs from 0.0 and NaN equals itself)."""
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key].detach().cpu().contiguous(), b[key].detach().cpu().contiguous()
        if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x.view(torch.uint8), y.view(torch.uint8)):
            return False
    return True


def differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, Any]:
    """How far apart two per-query results are: queries with any differing value, largest difference."""
    differing = torch.zeros(len(next(iter(a.values()))), dtype=torch.bool)
    largest = 0.0
    for key in a:
        gap = (a[key].detach().cpu() - b[key].detach().cpu()).abs()
        differing |= gap > 0
        largest = max(largest, float(gap.max()) if gap.numel() else 0.0)
    return {"queries_differing": int(differing.sum()), "max_abs_diff": largest}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def relative(filename: str) -> str:
    """A frame's file, relative to the repository, or from its package folder for installed code."""
    path = Path(filename)
    with contextlib.suppress(ValueError, OSError):
        return str(path.resolve().relative_to(REPO))
    marker = "site-packages/"
    return filename.split(marker, 1)[1] if marker in filename else filename


def is_project(filename: str) -> bool:
    """timam's own code (src/timam, or an installed timam)."""
    return relative(filename).startswith(("src/timam/", "timam/"))


def in_repository(filename: str) -> bool:
    """Anything in the repository: timam, these benchmarks, the tests."""
    with contextlib.suppress(ValueError, OSError):
        Path(filename).resolve().relative_to(REPO)
        return True
    return False


def trainable_without_grad(model: nn.Module, objective: nn.Module) -> list[str]:
    named = [*model.named_parameters(), *(("objective." + n, p) for n, p in objective.named_parameters())]
    return [name for name, parameter in named if parameter.requires_grad and parameter.grad is None]


def nccl_version() -> str | None:
    try:
        version = torch.cuda.nccl.version()
    except Exception:  # noqa: BLE001  (no NCCL in this build)
        return None
    return ".".join(str(part) for part in version) if isinstance(version, tuple) else str(version)


FP32_PRECISION_SETTINGS = {
    "cuda.matmul": lambda: torch.backends.cuda.matmul,
    "cudnn.conv": lambda: torch.backends.cudnn.conv,
    "cudnn.rnn": lambda: torch.backends.cudnn.rnn,
    "cudnn": lambda: torch.backends.cudnn,
    "mkldnn.matmul": lambda: torch.backends.mkldnn.matmul,
    "global": lambda: torch.backends,
}


def fp32_precisions() -> dict[str, str | None]:
    """Every ``fp32_precision`` of the new API this torch has (never the legacy getters, which raise
    "mix of legacy and new APIs" once anything set the new one)."""
    values: dict[str, str | None] = {}
    for name, backend in FP32_PRECISION_SETTINGS.items():
        try:
            values[name] = getattr(backend(), "fp32_precision", None)
        except Exception:  # noqa: BLE001
            values[name] = None
    return values


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


class SyncPoints:
    """Host-device synchronisations of the block (CUDA only): ``torch.cuda.set_sync_debug_mode("warn")``
    turns each into a warning, recorded (every one: filter "always") with the stack it came from."""

    def __init__(self, device: torch.device, *, enabled: bool | None = None) -> None:
        self.device = device
        self.enabled = device.type == "cuda" if enabled is None else enabled  # enabled on the CPU: the test's
        self.sites: list[tuple[str, str, str]] = []  # (project line, its code, the call inside torch)
        self.other_warnings: list[str] = []

    @contextlib.contextmanager
    def recording(self) -> Iterator[SyncPoints]:
        if not self.enabled:
            yield self
            return
        cuda = self.device.type == "cuda"
        with warnings.catch_warnings(record=True) as log:
            warnings.simplefilter("always")
            # record=True logs (message, file, line) only; showwarning replaced inside the same context
            # also sees the stack, so each sync is attributed to the project line that caused it.
            warnings.showwarning = self._capture
            previous = torch.cuda.get_sync_debug_mode() if cuda else None
            if cuda:
                torch.cuda.set_sync_debug_mode("warn")
            try:
                yield self
            finally:
                if previous is not None:
                    torch.cuda.set_sync_debug_mode(previous)
        self.other_warnings += [f"{relative(w.filename)}:{w.lineno}: {w.message}"[:300] for w in log]

    def _capture(self, message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        text = str(message)
        if "synchroniz" not in text:
            self.other_warnings.append(f"{relative(filename)}:{lineno}: {category.__name__}: {text}"[:300])
            return
        stack = [frame for frame in traceback.extract_stack()[:-1] if not frame.filename.endswith("warnings.py")]
        project = [frame for frame in stack if is_project(frame.filename)] or [
            frame for frame in stack if in_repository(frame.filename)
        ]
        where = project[-1] if project else stack[-1]
        self.sites.append(
            (f"{relative(where.filename)}:{where.lineno}", (where.line or "").strip(), f"{relative(filename)}:{lineno}")
        )

    @property
    def count(self) -> int | None:
        return len(self.sites) if self.enabled else None

    def listing(self) -> list[dict[str, Any]]:
        counts = Counter(self.sites)
        return [{"count": n, "at": at, "code": code, "op": op} for (at, code, op), n in counts.most_common()]


class LossInputs:
    """The dtypes of everything the loss terms see: the embeddings handed to ``objective.terms``, the
    inputs of every ``*_loss`` function the objective calls and of its loss modules."""

    def __init__(self, objective: nn.Module) -> None:
        self.objective = objective
        self.dtypes: dict[str, list[str]] = {}

    def _record(self, name: str, values: Any) -> None:
        for value in values:
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                seen = self.dtypes.setdefault(name, [])
                if dtype_name(value.dtype) not in seen:
                    seen.append(dtype_name(value.dtype))

    @contextlib.contextmanager
    def recording(self) -> Iterator[LossInputs]:
        import timam.training.objective as objective_module

        patched: dict[str, Callable] = {}

        def wrap(name: str, function: Callable) -> Callable:
            def recorded(*args: Any, **kwargs: Any) -> Any:
                self._record(name, [*args, *kwargs.values()])
                return function(*args, **kwargs)

            return recorded

        for name, function in list(vars(objective_module).items()):
            if name.endswith("_loss") and callable(function) and not isinstance(function, type):
                patched[name] = function
                setattr(objective_module, name, wrap(name, function))
        hooks = [
            module.register_forward_pre_hook(
                lambda _module, args, kwargs, name=name: self._record(name, [*args, *kwargs.values()]),
                with_kwargs=True,
            )
            for name, module in self.objective.named_children()
        ]
        terms = self.objective.terms

        def recorded_terms(image_emb: torch.Tensor, text_emb: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self._record("image_embedding", [image_emb])
            self._record("text_embedding", [text_emb])
            return terms(image_emb, text_emb, *args, **kwargs)

        self.objective.terms = recorded_terms  # an instance attribute shadows the method
        try:
            yield self
        finally:
            del self.objective.terms
            for hook in hooks:
                hook.remove()
            for name, function in patched.items():
                setattr(objective_module, name, function)


def plain_batchnorm(module: nn.Module) -> int:
    """Turn SyncBatchNorm layers back into BatchNorm2d holding the same parameters and buffers
    (ddp1 may convert the shared model's backbone; later sections measure the plain one)."""
    reverted = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.SyncBatchNorm):
            plain = nn.BatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            for key, value in [*child.named_parameters(recurse=False), *child.named_buffers(recurse=False)]:
                setattr(plain, key, value)
            plain.train(child.training)
            setattr(module, name, plain)
            reverted += 1
        else:
            reverted += plain_batchnorm(child)
    return reverted


# ----------------------------------------------------------------------------- the check


@dataclasses.dataclass
class Setup:
    """What the training sections share: the one model build, its config values and synthetic data."""

    model: nn.Module
    values: dict[str, Any]
    knobs: dict[str, Any]
    batch: int
    seq_len: int
    num_classes: int
    split: Any  # placeholder image paths: images come from ``pool``
    pool: torch.Tensor
    build_s: float
    files_split: Any = None  # the demo's JPEG files (throughput C), made on first use
    description: dict[str, Any] = dataclasses.field(default_factory=dict)


class GpuCheck:
    def __init__(self, args: argparse.Namespace) -> None:
        from timam.training.loop import seed_everything

        self.args = args
        self.tiny = args.tiny
        device = _common.pick(args.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())  # DDP wants an explicit index
        self.device = device
        self.deadline = Deadline(args.deadline_s)
        self.journal = Journal(Path(args.out))
        self.sections = [name for name in SECTIONS if name in args.sections.split(",")]
        self.records: dict[str, dict[str, Any]] = {}
        self.current: str | None = None
        self.finished = threading.Event()
        self.stopped = False
        self.steps = args.steps or (3 if self.tiny else 30)
        self.warmup = args.warmup if args.warmup is not None else (1 if self.tiny else 3)
        self.generator = seed_everything(args.seed)
        self._setup: Setup | None = None
        self._setup_error: BaseException | None = None
        self._trainer_class: type | None = None

    # ------------------------------------------------------------------ running

    def run(self) -> int:
        watchdog = threading.Thread(target=self._watchdog, name="gpu_check watchdog", daemon=True)
        watchdog.start()
        print(_common.device_info(self.device))
        print(f"gpu_check: mode {'tiny' if self.tiny else 'paper'}, deadline {self.args.deadline_s:.0f} s, "
              f"lines to {self.journal.path}")  # fmt: skip
        for name in self.sections:
            self._section(name, getattr(self, f"section_{name}"))
        self.finished.set()
        watchdog.join()  # a daemon thread still waiting when the interpreter exits can abort it (seen: SIGABRT)
        print(self.final_line())
        return 0 if all(record["ok"] for record in self.records.values()) else 1

    def _section(self, name: str, body: Callable[[], dict[str, Any]]) -> None:
        started = self.deadline.elapsed()
        record: dict[str, Any] = {"section": name, "ok": False, "started_s": started}
        if self.deadline.left() <= 0:
            record.update(skipped=True, error=f"not started: the {self.args.deadline_s:.0f} s deadline had passed")
        else:
            self.current = name
            try:
                values = body()
                checks = values.pop("checks", {})
                failed = [check for check, passed in checks.items() if not passed]
                record.update(ok=not failed, checks=checks, failed_checks=failed, **values)
            except Exception as error:  # noqa: BLE001  (a section's failure is a result; the next one runs)
                record.update(error=f"{type(error).__name__}: {error}"[:1000], traceback=traceback_tail())
                record["deadline"] = isinstance(error, DeadlineReached)
            finally:
                self.current = None
        record["seconds"] = self.deadline.elapsed() - started
        with self.journal.lock:
            if self.stopped:  # the watchdog already wrote this section's line and the final line
                return
            self.records[name] = record
            self.journal.append(record)
        status = "ok" if record["ok"] else ("skipped" if record.get("skipped") else "FAILED")
        detail = record.get("error") or ", ".join(record.get("failed_checks", []))
        print(f"[{name}] {status} in {record['seconds']:.1f} s{': ' + detail if detail else ''}", flush=True)

    def _watchdog(self) -> None:
        """End the run ``--grace-s`` after the deadline, whatever the main thread is doing, keeping the
        journal whole: the interrupted section with the main thread's stack, the rest skipped."""
        if self.finished.wait(max(0.0, self.deadline.left() + self.args.grace_s)):
            return
        frame = sys._current_frames().get(threading.main_thread().ident or -1)
        stack = "".join(traceback.format_stack(frame))[-TRACEBACK_CHARS:] if frame is not None else ""
        with self.journal.lock:
            self.stopped = True
            for name in self.sections:
                if name in self.records:
                    continue
                record: dict[str, Any] = {"section": name, "ok": False, "deadline": True}
                if name == self.current:
                    record.update(error=f"stopped by the watchdog at {self.deadline.elapsed():.0f} s", stack=stack)
                else:
                    record.update(skipped=True, error="not started: the watchdog ended the run")
                self.records[name] = record
                self.journal.append(record)
        print(f"[{self.current}] STOPPED by the watchdog; main thread at:\n{stack}", flush=True)
        print(self.final_line(), flush=True)
        os._exit(3)

    def final_line(self) -> str:
        ok = sum(1 for record in self.records.values() if record["ok"])
        variants = self.records.get("throughput", {}).get("variants", {})

        def rate(name: str) -> float | None:
            return variants.get(name, {}).get("pairs_per_s")

        b = rate("B")
        return result_line(
            "gpu_check",
            ok=f"{ok}/{len(self.sections)}",
            pairs_per_s_B=b,
            syncs_per_step=self.records.get("step", {}).get("syncs_per_step"),
            seconds=self.deadline.elapsed(),
            pairs_per_s_A=rate("A"),
            pairs_per_s_C=rate("C"),
            pairs_per_s_E=rate("E"),
            pairs_per_s_D=rate("D"),
            target_pairs_per_s=TARGET_PAIRS_PER_S,
            B_meets_target=None if self.tiny or b is None else b >= TARGET_PAIRS_PER_S,
            device=self.device.type,
            mode="tiny" if self.tiny else "paper",
            failed=",".join(name for name, record in self.records.items() if not record["ok"]) or None,
            out=self.journal.path,
        )

    # ------------------------------------------------------------------ shared pieces

    def setup(self) -> Setup:
        """The one model build (and its data), on first use; a failed build fails every later user at once."""
        if self._setup_error is not None:
            raise RuntimeError(f"the model build failed earlier: {self._setup_error}") from self._setup_error
        if self._setup is None:
            try:
                self._setup = self._build()
            except BaseException as error:
                self._setup_error = error
                raise
        return self._setup

    def _build(self) -> Setup:
        from timam.inference.device import model_to
        from timam.models.config import ModelConfig
        from timam.models.timam import TimamModel
        from timam.training.config import TrainingConfig

        started = time.perf_counter()
        values = _common.training_values("paper")
        fields = set(TrainingConfig.model_fields)
        knobs: dict[str, Any] = {}
        precision = self.args.precision or ("bfloat16" if self.tiny and self.device.type == "cpu" else None)
        if precision is not None:
            if "precision" not in fields:
                raise ValueError(f"--precision {precision}: this TrainingConfig has no precision field")
            values["precision"] = precision
        if self.args.deterministic:
            if "deterministic" not in fields:
                raise ValueError("--deterministic: this TrainingConfig has no deterministic field")
            values["deterministic"] = True
        defaults = TrainingConfig()
        for knob in ("precision", "deterministic", "sync_batchnorm", "cache_device"):
            if knob in fields:
                knobs[knob] = values.get(knob, getattr(defaults, knob))
        if self.tiny:
            num_classes, batch, seq_len = 32, 8, 16
            values["batch_size"] = batch
            model_values = {**_common.project_parameters("paper")["model"], **TINY_MODEL, "num_classes": num_classes}
            model = TimamModel(ModelConfig.from_dict(model_values), pretrained=False)
        else:
            num_classes, batch = _common.CUHK_PEDES_TRAIN_IDENTITIES, int(values["batch_size"])
            seq_len = int(_common.project_parameters("paper")["tokenization"]["max_length"])
            model, _ = _common.build_model("paper", num_classes=num_classes)
        model = model_to(model, self.device)  # channels_last convolutions, as the training loop has them
        bench_args = argparse.Namespace(seq_len=seq_len, num_classes=num_classes, pool=max(self.args.pool, batch))
        captions = max(self.steps, self.warmup, 4) * batch
        placeholders = [f"i{i}.jpg" for i in range(max(1, captions // 2))]
        split = training_speed.make_split(model, captions, placeholders, bench_args, self.generator, self.device)
        training_speed.fill_cache(split, model, self.generator)
        pool = training_speed.random_pool(model, bench_args, self.device, self.generator)
        mc, text = model.config, model.text_encoder.transformer.config
        description = {
            "image": f"{mc.image_library} {mc.image_backbone} {mc.image_size[0]}x{mc.image_size[1]}",
            "text": f"BERT {text.hidden_size}-d x {text.num_hidden_layers} layers (random weights)",
            "heads": f"BiLSTM {mc.lstm_hidden}, FC {mc.embedding_dim}, {mc.num_classes} classes",
            "batch": batch,
            "tokens": int(split.input_ids.shape[1]),
            "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        }
        setup = Setup(model, values, knobs, batch, seq_len, num_classes, split, pool, 0.0, description=description)
        setup.build_s = time.perf_counter() - started
        setup.description["bench_args"] = vars(bench_args)
        return setup

    def files_split(self, setup: Setup) -> Any:
        if setup.files_split is None:
            files = _common.image_files(None)
            captions = len(setup.split.data.caption_ids)
            paths = _common.cycle(files, max(1, captions // 2))
            bench_args = argparse.Namespace(**setup.description["bench_args"])
            setup.files_split = training_speed.make_split(
                setup.model, captions, paths, bench_args, self.generator, self.device
            )
            training_speed.fill_cache(setup.files_split, setup.model, self.generator)
        return setup.files_split

    def config(self, setup: Setup, freeze: tuple[int | None, int | None]):
        from timam.training.config import training_config

        image, text = freeze
        return training_config({**setup.values, "freeze": {"image_backbone_epochs": image, "text_model_epochs": text}})

    def kernels(self, config) -> contextlib.AbstractContextManager:
        """The kernel settings the training loop holds while it trains (cudnn.benchmark on unless
        ``training.deterministic``), where this trainer has them."""
        try:
            from timam.training.determinism import kernel_settings
        except ImportError:
            return contextlib.nullcontext()
        return kernel_settings(bool(getattr(config, "deterministic", False)))

    def trainer_class(self) -> type:
        """training_speed's BenchTrainer (the real TimamTrainer, ``limit`` batches an epoch) whose images
        come from the pool in contiguous slices (no host-indexed gather: no sync that training lacks)
        and which checks the deadline after every step."""
        if self._trainer_class is None:
            bench_trainer, _ = training_speed.make_trainer_classes()
            deadline = self.deadline

            class CheckTrainer(bench_trainer):  # type: ignore[misc, valid-type]
                pool: torch.Tensor | None = None

                def image_stream(self, shares):
                    if self.pool is None or self.image_cached:
                        yield from super().image_stream(shares)
                        return
                    start = 0
                    for captions in shares:
                        if start + len(captions) > len(self.pool):
                            start = 0
                        yield self.pool[start : start + len(captions)]
                        start += len(captions)

                def train_epoch(self, epoch, generator, progress=None, after_step=None):
                    def checked(state) -> None:
                        deadline.check("training step")
                        if after_step is not None:
                            after_step(state)

                    return super().train_epoch(epoch, generator, progress, checked)

            self._trainer_class = CheckTrainer
        return self._trainer_class

    def trainer(self, setup: Setup, config, split=None, context=None, *, pool: bool = True):
        trainer = self.trainer_class()(
            setup.model, split or setup.split, split or setup.split, config, self.device, context
        )
        trainer.pool = setup.pool if pool else None
        return trainer

    # ------------------------------------------------------------------ sections

    def section_env(self) -> dict[str, Any]:
        import torchvision
        import transformers

        from timam import _onednn_isa
        from timam.inference.embedding import default_workers
        from timam.training.config import TrainingConfig

        out: dict[str, Any] = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "mode": "tiny" if self.tiny else "paper",
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "transformers": transformers.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "nccl": nccl_version(),
            "device": str(self.device),
            "fp32_precision": fp32_precisions(),
            "cudnn_enabled": torch.backends.cudnn.enabled,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
            "onednn_max_cpu_isa": os.environ.get(_onednn_isa.VARIABLE),  # set by `import timam` on AMX CPUs
            "onednn_isa_decision": _onednn_isa.decision,
            "workers": default_workers(),
            "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch_threads": torch.get_num_threads(),
            "training_fields": sorted(
                knob
                for knob in ("precision", "deterministic", "sync_batchnorm", "cache_device")
                if knob in TrainingConfig.model_fields
            ),
            "deadline_s": self.args.deadline_s,
            "imports_s": IMPORTED_AT,
        }
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            free, total = torch.cuda.mem_get_info(self.device)
            out["gpu"] = {
                "name": props.name,
                "count": torch.cuda.device_count(),
                "capability": f"{props.major}.{props.minor}",
                "multiprocessors": props.multi_processor_count,
                "memory_mib": total / 2**20,
                "free_mib": free / 2**20,
            }
            out["bf16_supported"] = torch.cuda.is_bf16_supported()
        print(f"  torch {out['torch']}, CUDA {out['cuda']}, cuDNN {out['cudnn']}, NCCL {out['nccl']}, "
              f"{out.get('gpu', {}).get('name', 'no GPU')}, fp32_precision {out['fp32_precision']}, "
              f"workers {out['workers']} of {out['cpu_count']} cores")  # fmt: skip
        return out

    def section_step(self) -> dict[str, Any]:
        setup = self.setup()
        config = self.config(setup, (0, 0))
        out: dict[str, Any] = {"model": setup.description, "model_build_s": setup.build_s, "knobs": setup.knobs}
        with self.kernels(config):
            trainer = self.trainer(setup, config)
            trainer.set_epoch(1)
            out.update(image_cached=trainer.image_cached, text_cached=trainer.text_cached)
            out["cudnn_benchmark"] = torch.backends.cudnn.benchmark  # as the training loop sets it
            with LossInputs(trainer.objective).recording() as inputs:
                epochs = {}
                for name, steps in (("first", 1), ("one_step", 1), ("two_steps", 2)):
                    self.deadline.check(f"step, epoch {name}")
                    trainer.limit = steps
                    _common.sync(self.device)
                    started = time.perf_counter()
                    with SyncPoints(self.device).recording() as syncs:
                        losses = trainer.train_epoch(EPOCH, self.generator)
                    _common.sync(self.device)
                    epochs[name] = {"steps": steps, "seconds": time.perf_counter() - started, "syncs": syncs}
            missing = trainable_without_grad(setup.model, trainer.objective)
        one, two = epochs["one_step"]["syncs"], epochs["two_steps"]["syncs"]
        per_step = None if one.count is None else two.count - one.count
        image_dtypes, text_dtypes = inputs.dtypes.get("image_embedding", []), inputs.dtypes.get("text_embedding", [])
        out.update(
            precision=getattr(config, "precision", None),
            compute_dtype=self._compute_dtype(config),
            sync_debug=self.device.type == "cuda",
            syncs_per_step=per_step,
            syncs_per_epoch=None if per_step is None else one.count - per_step,
            syncs_first_epoch=epochs["first"]["syncs"].count,
            sync_points=two.listing(),
            sync_points_first_epoch=epochs["first"]["syncs"].listing(),
            other_warnings=two.other_warnings[:20],
            step_s={name: epoch["seconds"] / epoch["steps"] for name, epoch in epochs.items()},
            image_embedding_dtype=image_dtypes,
            text_embedding_dtype=text_dtypes,
            loss_input_dtypes=inputs.dtypes,
            trainable_parameters_m=sum(p.numel() for p in setup.model.parameters() if p.requires_grad) / 1e6,
            trainable_without_grad=missing,
            losses=losses,
        )
        out["checks"] = {
            "both_trainable": not trainer.image_cached and not trainer.text_cached,
            "every_trainable_parameter_has_a_gradient": not missing,
            "embeddings_float32": image_dtypes == ["float32"] and text_dtypes == ["float32"],
            "loss_inputs_float32": bool(inputs.dtypes) and all(d == ["float32"] for d in inputs.dtypes.values()),
            "losses_finite": all(math.isfinite(value) for value in losses.values()),
        }
        print(f"  {setup.description['image']}, {setup.description['text']}, batch {setup.batch}; "
              f"{out['step_s']['two_steps'] * 1000:.0f} ms/step; syncs/step {per_step}, "
              f"embeddings {image_dtypes}/{text_dtypes}, without gradient {len(missing)}")  # fmt: skip
        for site in out["sync_points"][:12]:
            print(f"    sync x{site['count']} at {site['at']}  {site['code'][:70]}  ({site['op']})")
        return out

    def _compute_dtype(self, config) -> str | None:
        """The dtype the backbone and the transformer run in (``training.precision``), where timam has it."""
        try:
            from timam.inference.device import compute_dtype
        except ImportError:
            return None
        return dtype_name(compute_dtype(self.device, getattr(config, "precision", "auto")))

    def section_ddp1(self) -> dict[str, Any]:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        from timam.training.distributed import DistributedContext, gather_with_grad

        class OneRankContext(DistributedContext):
            """Rank 0 of 1 that counts as distributed: DDP, the gather and the all-reduces run."""

            @property
            def active(self) -> bool:
                return True

        setup = self.setup()
        cuda = self.device.type == "cuda"
        backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"  # what context_from_environment joins
        port = free_port()
        if cuda:
            torch.cuda.set_device(self.device)
        out: dict[str, Any] = {"backend": backend, "port": port, "nccl": nccl_version() if cuda else None}
        started = time.perf_counter()
        dist.init_process_group(
            backend=backend,
            init_method=f"tcp://127.0.0.1:{port}",
            rank=0,
            world_size=1,
            timeout=datetime.timedelta(seconds=120),
        )
        out["init_s"] = time.perf_counter() - started
        context = OneRankContext(rank=0, world_size=1, local_rank=self.device.index or 0)
        try:
            # The autograd all-gather: through it or not, the same gradient (one rank: bitwise).
            rows = torch.randn(setup.batch, setup.model.config.embedding_dim, device=self.device, requires_grad=True)

            def loss_of(embeddings: torch.Tensor) -> torch.Tensor:
                similarity = embeddings @ embeddings.T / 0.1
                return -similarity.log_softmax(dim=1).diagonal().sum() + embeddings.pow(3).sum()

            gathered = gather_with_grad(rows, context)
            through = torch.autograd.grad(loss_of(gathered), rows)[0]
            direct = torch.autograd.grad(loss_of(rows), rows)[0]
            out["gather"] = {
                "forward_equal": torch.equal(torch.as_tensor(gathered).detach(), rows.detach()),
                "gradient_equal": torch.equal(through, direct),
                "max_abs_diff": float((through - direct).abs().max()),
            }
            config = self.config(setup, (0, 1))  # BERT frozen in epoch 1, trained from epoch 2
            with self.kernels(config):
                trainer = self.trainer(setup, config, context=context)
                trainer.set_epoch(1)
                frozen_wrapper = trainer.forward_encoders
                trainer.limit = 1
                frozen_losses = trainer.train_epoch(EPOCH, self.generator)
                out["frozen"] = {
                    "text_cached": trainer.text_cached,
                    "ddp": isinstance(frozen_wrapper, DistributedDataParallel),
                    "losses": frozen_losses,
                }
                trainer.set_epoch(2)
                wrapper = trainer.forward_encoders
                trainer.limit = 3
                losses = trainer.train_epoch(EPOCH, self.generator)
                module = wrapper.module if isinstance(wrapper, DistributedDataParallel) else wrapper
                out["unfrozen"] = {
                    "steps": 3,
                    "text_cached": trainer.text_cached,
                    "ddp": isinstance(wrapper, DistributedDataParallel),
                    "rebuilt": wrapper is not frozen_wrapper,
                    "trainable_parameters_m": sum(p.numel() for p in module.parameters() if p.requires_grad) / 1e6,
                    "sync_batchnorm_layers": sum(isinstance(m, nn.SyncBatchNorm) for m in setup.model.modules()),
                    "losses": losses,
                }
                missing = trainable_without_grad(setup.model, trainer.objective)
                out["trainable_without_grad"] = missing
        finally:
            dist.destroy_process_group()
            out["batchnorm_layers_reverted"] = plain_batchnorm(setup.model.image_encoder.backbone)
        out["checks"] = {
            "gather_forward_equal": out["gather"]["forward_equal"],
            "gather_gradient_equal": out["gather"]["gradient_equal"],
            "ddp_wraps_the_frozen_epoch": out["frozen"]["ddp"] and out["frozen"]["text_cached"],
            "ddp_rebuilt_at_the_unfreeze": out["unfrozen"]["ddp"] and out["unfrozen"]["rebuilt"],
            "bert_trains_after_the_unfreeze": not out["unfrozen"]["text_cached"],
            "every_trainable_parameter_has_a_gradient": not missing,
            "losses_finite": all(math.isfinite(v) for v in [*frozen_losses.values(), *losses.values()]),
        }
        print(f"  {backend}: init {out['init_s']:.1f} s, gather gradient equal {out['gather']['gradient_equal']}, "
              f"3 unfrozen steps, loss {losses.get('loss_total', float('nan')):.3f}")  # fmt: skip
        return out

    def section_ranking(self) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(self.args.seed)
        queries, gallery = (150, 60) if self.tiny else (1500, 3072)
        query_labels = torch.randint(0, gallery // 3, (queries,), generator=generator)
        gallery_labels = torch.arange(gallery) // 3  # identities of three images each

        def with_duplicates(rows: torch.Tensor, every: int) -> torch.Tensor:
            rows[1::every] = rows[0::every][: len(rows[1::every])]  # exact duplicates: exact ties
            return rows

        int_dim, float_dim = (16, 32) if self.tiny else (64, 512)
        datasets = {
            # Small integers: every product is an exact float32 integer on any device, TF32 included.
            "integer": (
                with_duplicates(torch.randint(-3, 4, (queries, int_dim), generator=generator).float(), 4),
                with_duplicates(torch.randint(-3, 4, (gallery, int_dim), generator=generator).float(), 5),
                False,
            ),
            "float": (
                with_duplicates(torch.randn(queries, float_dim, generator=generator), 4),
                with_duplicates(torch.randn(gallery, float_dim, generator=generator), 5),
                True,
            ),
        }
        out: dict[str, Any] = {"queries": queries, "gallery": gallery, "device": str(self.device)}
        checks: dict[str, bool] = {}
        for name, (query_emb, gallery_emb, normalize) in datasets.items():
            inputs = (query_emb, gallery_emb, query_labels, gallery_labels, normalize)
            result = self._ranking_case(name, inputs)
            out[name] = result
            for key in ("chunks_bitwise_equal", "repeat_bitwise_equal", "tf32_bitwise_equal", "tf32_setting_restored"):
                checks[f"{name}_{key}"] = result[key]
            # Exact products: the device must equal the CPU bit for bit. Random floats: cuBLAS and oneDNN
            # round differently, so near-ties may order differently there: recorded, not required.
            if name == "integer":
                checks["integer_cpu_bitwise_equal"] = result["cpu_bitwise_equal"]
            print(f"  {name}: chunks 1/7/1024 equal {result['chunks_bitwise_equal']}, TF32 on equal "
                  f"{result['tf32_bitwise_equal']}, vs CPU equal {result['cpu_bitwise_equal']} "
                  f"({result['vs_cpu']['queries_differing']} of {queries} queries differ)")  # fmt: skip
        out["bitwise_equal"] = all(checks.values())
        out["checks"] = checks
        return out

    def _ranking_case(self, name: str, inputs: tuple) -> dict[str, Any]:
        from timam.retrieval.ranking import per_query_metrics

        query_emb, gallery_emb, query_labels, gallery_labels, normalize = inputs

        def metrics(device: torch.device, chunk: int) -> dict[str, torch.Tensor]:
            self.deadline.check(f"ranking {name}")
            return per_query_metrics(
                query_emb.to(device),
                gallery_emb.to(device),
                query_labels.to(device),
                gallery_labels.to(device),
                chunk_size=chunk,
                normalize=normalize,
            )

        reference = metrics(torch.device("cpu"), 1024)
        chunks = {chunk: metrics(self.device, chunk) for chunk in (1024, 7, 1)}
        repeat = metrics(self.device, 1024)
        # TF32 on through the new API, as a caller may leave it (and bf16 products for oneDNN, the
        # CPU's counterpart): scoring must force exact float32 and put the caller's setting back.
        backends = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.mkldnn.matmul)
        reduced = ("tf32", "tf32", "bf16")
        saved = [backend.fp32_precision for backend in backends]
        try:
            for backend, value in zip(backends, reduced, strict=True):
                backend.fp32_precision = value
            tf32 = {chunk: metrics(self.device, chunk) for chunk in (1024, 7)}
            after = [backend.fp32_precision for backend in backends]
        finally:
            for backend, value in zip(backends, saved, strict=True):
                backend.fp32_precision = value
        return {
            "normalize": normalize,
            "chunks_bitwise_equal": all(bitwise_equal(chunks[1024], chunks[chunk]) for chunk in (7, 1)),
            "repeat_bitwise_equal": bitwise_equal(chunks[1024], repeat),
            "tf32_bitwise_equal": all(bitwise_equal(chunks[1024], values) for values in tf32.values()),
            "tf32_setting_restored": after == list(reduced),
            "cpu_bitwise_equal": bitwise_equal(reference, chunks[1024]),
            "vs_cpu": differences(reference, chunks[1024]),
            "mean_R@1": float(chunks[1024]["R@1"].mean()),
        }

    def section_throughput(self) -> dict[str, Any]:
        setup = self.setup()
        kind = _common.peak_memory_kind(self.device)
        out: dict[str, Any] = {"steps": self.steps, "warmup": self.warmup, "batch": setup.batch, "peak_kind": kind}
        out["deterministic"] = bool(setup.knobs.get("deterministic", False))
        variants: dict[str, dict[str, Any]] = {}
        out["variants"] = variants
        print(f"  {'':2} {'pairs/s':>9} {'ms/step':>8} {'peak MiB':>9}  variant")
        for name, (what, freeze, images, benchmark, compiled) in VARIANTS.items():
            row: dict[str, Any] = {"what": what, "cudnn_benchmark": benchmark, "compile": compiled, "images": images}
            variants[name] = row
            if compiled and not self._compile_wanted(row):
                print(f"  {name}: skipped ({row['skipped']})")
                continue
            try:
                self.deadline.check(f"throughput {name}")
                config = self.config(setup, freeze)
                split = self.files_split(setup) if images == "files" else setup.split
                trainer = self.trainer(setup, config, split, pool=images == "pool")
                trainer.set_epoch(1)
                row.update(image_cached=trainer.image_cached, text_cached=trainer.text_cached)
                if images == "files":
                    from timam.inference.embedding import default_workers

                    row["workers"] = default_workers()
                with self.kernels(config), cudnn_benchmark(benchmark):
                    if compiled:
                        setup.model.image_encoder.backbone.compile()
                        setup.model.text_encoder.transformer.compile()
                    warmup_s, seconds, losses = training_speed.run_epochs(
                        trainer, self.steps, self.warmup, self.device, self.generator
                    )
                row.update(
                    ok=True,
                    seconds=seconds,
                    warmup_s=warmup_s,
                    ms_per_step=1000 * seconds / self.steps,
                    pairs_per_s=_common.rate(self.steps * setup.batch, seconds),
                    peak_mib=_common.peak_memory_mb(self.device),
                    loss_total=losses.get("loss_total"),
                )
                if compiled and self.warmup:
                    row["compile_s"] = max(0.0, warmup_s - self.warmup * seconds / self.steps)
                expected_text_cached = freeze[1] is None
                row["cache_as_expected"] = not trainer.image_cached and trainer.text_cached == expected_text_cached
                print(f"  {name}: {row['pairs_per_s']:9.1f} {row['ms_per_step']:8.1f} {row['peak_mib']:9.0f}  {what}",
                      flush=True)  # fmt: skip
            except Exception as error:  # noqa: BLE001  (one variant's failure; the next still runs)
                row.update(ok=False, error=f"{type(error).__name__}: {error}"[:1000], traceback=traceback_tail())
                row["deadline"] = isinstance(error, DeadlineReached)
                print(f"  {name}: FAILED {row['error']}", flush=True)
            finally:
                trainer = None  # noqa: F841  (free the optimiser state before the next variant)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        out["target_pairs_per_s"] = TARGET_PAIRS_PER_S
        for row in variants.values():
            rate = row.get("pairs_per_s")
            row["vs_target"] = None if rate is None else rate / TARGET_PAIRS_PER_S
        checks: dict[str, bool] = {}
        for name, row in variants.items():
            if not row.get("skipped"):
                checks[f"{name}_ran"] = bool(row.get("ok"))
            if row.get("ok"):
                checks[f"{name}_caches_as_expected"] = bool(row.get("cache_as_expected"))
        out["checks"] = checks
        b = variants["B"].get("pairs_per_s")
        if not self.tiny and b is not None:
            print(f"  B: {b:.0f} pairs/s = {b / TARGET_PAIRS_PER_S:.2f} x the target of {TARGET_PAIRS_PER_S:.0f}")
        return out

    def section_clip(self) -> dict[str, Any]:
        from timam.inference.device import autocast
        from timam.losses import LogitScale, info_nce_loss
        from timam.models.dual_encoder import DualEncoderConfig, DualEncoderModel

        name, batch, tokens = ("ViT-B-16", 128, 77)
        if self.tiny:
            import open_clip

            folder = Path(tempfile.mkdtemp(prefix="gpu-check-clip-"))
            (folder / "gpu-check-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
            open_clip.add_model_config(folder)
            name, batch, tokens = ("gpu-check-tiny-clip", 8, TINY_CLIP["text_cfg"]["context_length"])
        torch.manual_seed(0)
        model = DualEncoderModel(DualEncoderConfig(model_name=name)).to(self.device).train()
        scale = LogitScale().to(self.device)
        optimizer = torch.optim.AdamW([*model.parameters(), *scale.parameters()], lr=1e-5)
        size = model.config.image_size
        images = torch.randn(batch, 3, *size, device=self.device)
        ids = torch.randint(1, 49000, (batch, tokens), device=self.device)
        ids[:, -1] = 49407  # the end-of-text token the text tower pools at
        mask = torch.ones_like(ids)
        precision = "auto" if self.device.type == "cuda" else "float32"

        def step() -> float:
            with autocast(self.device, precision):
                image_features = model.image_encoder.features(images)
                text_states = model.text_encoder.word_states(ids, mask)
            image_emb = model.image_encoder.projection(image_features.float())
            text_emb = model.text_encoder.encode_states(text_states, mask)
            loss = sum(info_nce_loss(image_emb, text_emb, scale()))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scale.clamp_()
            return float(loss.detach())

        for _ in range(self.warmup):
            self.deadline.check("clip warm-up")
            step()
        _common.reset_peak(self.device)
        losses = []
        started = time.perf_counter()
        for _ in range(self.steps):
            self.deadline.check("clip steps")
            losses.append(step())
        _common.sync(self.device)
        seconds = time.perf_counter() - started
        gradients_finite = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
        out = {
            "model": name,
            "image_size": list(size),
            "batch": batch,
            "tokens": tokens,
            "steps": self.steps,
            "precision": precision,
            "images_per_s": _common.rate(self.steps * batch, seconds),
            "ms_per_step": 1000 * seconds / self.steps,
            "peak_mib": _common.peak_memory_mb(self.device),
            "loss_first_last": [losses[0], losses[-1]],
            "checks": {"loss_finite": all(math.isfinite(v) for v in losses), "gradients_finite": gradients_finite},
        }
        print(f"  {name} at {size[0]} px, batch {batch}: {out['images_per_s']:.1f} images/s, "
              f"{out['ms_per_step']:.0f} ms/step, peak {out['peak_mib']:.0f} MiB")  # fmt: skip
        return out

    def _compile_wanted(self, row: dict[str, Any]) -> bool:
        choice = self.args.compile
        if choice == "off":
            row["skipped"] = "--compile off"
        elif choice == "auto" and (self.tiny or self.device.type != "cuda"):
            row["skipped"] = "--compile auto compiles only on CUDA without --tiny (minutes on a CPU)"
        elif choice == "auto" and self.deadline.left() < self.args.compile_min_s:
            row["skipped"] = f"{self.deadline.left():.0f} s left < --compile-min-s {self.args.compile_min_s:.0f}"
        return "skipped" not in row


def main(argv: list[str] | None = None) -> int:
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    return GpuCheck(parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
