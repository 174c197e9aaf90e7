"""``python -m timam.tuning params FILE``: a best-parameters YAML file as one ``--params`` value.

kedro run --pipelines train --params "$(python -m timam.tuning params data/06_models/demo/best_training_parameters.yml)"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from timam.tuning.study import params_argument


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m timam.tuning")
    commands = parser.add_subparsers(dest="command", required=True)
    params = commands.add_parser("params", help="print a best-parameters file as a kedro --params value")
    params.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    values = yaml.safe_load(args.file.read_text()) or {}
    if set(values) != {"training"}:
        parser.error(f"{args.file} is not a best-parameters file (expected one top-level key, training)")
    print(params_argument(values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
