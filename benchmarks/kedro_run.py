"""Wall time of ``kedro run`` end to end on the demo data, per node and in total.

Run: ``.venv/bin/python benchmarks/kedro_run.py [--pipelines NAME] [--params "k=v,..."]
[--demo-identities N] [--generate] [--keep]``.

The project (pyproject.toml + conf, without conf/local) is copied into a scratch directory with an
empty src/ (timam comes from the installed package), as tests/pipelines/test_kedro_project.py does,
so the repository's data/ is never touched. ``kedro run`` then runs there in a fresh process with
HF_HUB_OFFLINE=1, KEDRO_DISABLE_TELEMETRY=true and a plain logging config (one line per record, no
wrapping), and the "Node X: finished in Y s" lines of ``timam.hooks.NodeTimingHook`` are parsed.

Raw data: by default the project's generated demo (``data/01_raw/demo``) is copied in, so the
one-off generation is not timed; without one, or with ``--generate``, the run generates it when it
loads ``raw_annotations`` (timed in the total, outside every node). ``--demo-identities N`` writes
a conf/local catalog for a smaller generated demo (N identities split 1/2, 1/4, rest into
train/val/test) for quick checks. ``--params`` is passed to ``kedro run --params`` as is (e.g.
``training.epochs=1``); ``--pipelines`` likewise (default: the default pipeline, train + evaluate).

Reading the output: a table of nodes in run order with seconds and share of the total, then
``total_s`` (the subprocess's wall time: Python + Kedro start-up, catalog, nodes, saving),
``nodes_s`` (their sum; the hook prints 0.1 s resolution) and ``overhead_s`` = total - nodes.
The last line is ``kedro_run: total_s=... nodes_s=... overhead_s=... <node>_s=... rc=...``.
Needs kedro (CPU machine only).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, result_line  # noqa: E402

NODE_LINE = re.compile(r"Node (\S+): finished in ([0-9.]+) s")
LOGGING = """version: 1
disable_existing_loggers: false
formatters:
  plain:
    format: "%(asctime)s %(levelname)s %(name)s: %(message)s"
handlers:
  console:
    class: logging.StreamHandler
    level: INFO
    formatter: plain
    stream: ext://sys.stdout
loggers:
  kedro: {level: INFO}
  timam: {level: INFO}
root:
  handlers: [console]
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", default=None, help="passed to kedro run --pipelines")
    parser.add_argument("--params", default=None, help='passed to kedro run --params, e.g. "training.epochs=1"')
    parser.add_argument("--demo-identities", type=int, default=None, help="generate a smaller demo of N identities")
    parser.add_argument("--generate", action="store_true", help="generate the demo inside the run (timed)")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch project and its log")
    return parser.parse_args()


def scratch_project(root: Path, args: argparse.Namespace) -> str:
    """Copy the project into ``root``; return how the raw demo data is provided."""
    shutil.copy(REPO / "pyproject.toml", root)
    (root / "src").mkdir()
    shutil.copytree(REPO / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "bench_logging.yml").write_text(LOGGING)
    if args.demo_identities:
        n = args.demo_identities
        train, val = n // 2, n // 4
        (root / "conf" / "local" / "catalog.yml").write_text(
            "raw_annotations:\n"
            "  type: timam.io.demo_dataset.DemoReidRawDataset\n"
            "  filepath: data/01_raw/demo/reid_raw.json\n"
            f"  generator: {{num_identities: {n}, split_identities: [{train}, {val}, {n - train - val}], seed: 1}}\n"
        )
        return f"generated in the run ({n} identities: {train}/{val}/{n - train - val})"
    demo = REPO / "data" / "01_raw" / "demo"
    if not args.generate and (demo / "reid_raw.json").is_file():
        shutil.copytree(demo, root / "data" / "01_raw" / "demo")
        return f"copied from {demo} (generation not timed)"
    return "generated in the run (default demo)"


def kedro_command() -> list[str]:
    script = Path(sys.executable).with_name("kedro")
    return [str(script)] if script.exists() else [sys.executable, "-m", "kedro"]


def main() -> None:
    args = parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="timam-kedro-run-"))
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise SystemExit(f"--workdir {root} must be empty")
    try:
        raw = scratch_project(root, args)
        command = [*kedro_command(), "run"]
        if args.pipelines:
            command += ["--pipelines", args.pipelines]
        if args.params:
            command += ["--params", args.params]
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "KEDRO_DISABLE_TELEMETRY": "true",
            "KEDRO_LOGGING_CONFIG": str(root / "bench_logging.yml"),
            "COLUMNS": "200",
            "TQDM_DISABLE": "1",
        }
        print(
            f"project: {root} (raw data {raw}); load {' '.join(Path('/proc/loadavg').read_text().split()[:3])}, "
            f"cpu count {os.cpu_count()}"
        )
        print("command: kedro " + " ".join(command[command.index("run") :]))
        start = time.perf_counter()
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
        total = time.perf_counter() - start
        log = result.stdout + result.stderr
        (root / "kedro_run.log").write_text(log)
        nodes = [(name, float(seconds)) for name, seconds in NODE_LINE.findall(log)]
        if result.returncode != 0:
            print(log[-4000:])
            print(f"kedro run failed with exit code {result.returncode}")
        width = max([len(n) for n, _ in nodes] + [5])
        print(f"{'node':<{width}}  {'seconds':>8}  {'share':>6}")
        for name, seconds in nodes:
            print(f"{name:<{width}}  {seconds:8.1f}  {100 * seconds / total:5.1f}%")
        nodes_s = sum(s for _, s in nodes)
        print(f"{'nodes':<{width}}  {nodes_s:8.1f}  {100 * nodes_s / total:5.1f}%")
        print(f"{'total':<{width}}  {total:8.1f}  (overhead outside nodes {total - nodes_s:.1f} s)")
        if args.keep:
            print(f"kept {root} (log: {root / 'kedro_run.log'})")
        print(
            result_line(
                "kedro_run",
                total_s=total,
                nodes_s=nodes_s,
                overhead_s=total - nodes_s,
                **{f"{name}_s": seconds for name, seconds in nodes},
                pipelines=args.pipelines or "__default__",
                params=args.params,
                rc=result.returncode,
            )
        )
        if result.returncode != 0:
            sys.exit(result.returncode)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
