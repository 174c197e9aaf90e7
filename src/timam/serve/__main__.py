"""``python -m timam.serve [--host ...] [--port ...] [--index ...]``: the same as ``timam serve``."""

import sys

from timam.serve.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
