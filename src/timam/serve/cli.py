"""The ``timam`` console script: ``timam serve [--host 127.0.0.1] [--port 8000] [--index PATH|VERSION]``.

Bound to 127.0.0.1 unless ``--host`` says otherwise: the page shows the collection's paths and
thumbnails, which are nobody else's business by default. Requests must name the server by a name it
was bound to (see :class:`timam.serve.guard.HostPolicy`; ``--allow-host`` adds one).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from timam.serve.checks import MB, Limits

logger = logging.getLogger("timam.serve")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="timam", description="timam command line")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="search an image index in the browser",
        description="Serve a search page and JSON API over an image index built by `kedro run --pipelines index`.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--index",
        default=None,
        help="index folder, dataset root (data/07_model_output/<dataset>/image_index: its newest version) or a "
        "version string; default: the newest index of any dataset in this project",
    )
    serve.add_argument(
        "--checkpoint", default=None, help="checkpoint file (default: the one the index's manifest names)"
    )
    serve.add_argument(
        "--tokenizer", default=None, help="an index that does not record its tokenizer (older indexes): this one"
    )
    serve.add_argument(
        "--max-length", type=int, default=None, help="an index that does not record its token length: this one"
    )
    serve.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    serve.add_argument("--project", default=".", help="project folder that relative paths start at (default .)")
    serve.add_argument("--max-k", type=int, default=100, help="most results per query (default 100)")
    serve.add_argument("--max-upload-mb", type=float, default=10, help="largest query image upload (default 10 MB)")
    serve.add_argument(
        "--max-image-queries",
        type=int,
        default=Limits.image_queries,
        help=f"image queries decoded at once; more wait, then get a 503 (default {Limits.image_queries})",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=Limits.body_timeout_s,
        help=f"seconds a request body may take to arrive (default {Limits.body_timeout_s:g})",
    )
    serve.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another name clients may reach the server by (repeatable; '*' turns the Host check off)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from timam.search import Searcher
    from timam.serve.app import create_app
    from timam.serve.guard import HostPolicy
    from timam.serve.server import server_config

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        limits = Limits(
            max_k=args.max_k,
            default_k=min(Limits.default_k, args.max_k),
            max_upload_bytes=int(args.max_upload_mb * MB),
            image_queries=args.max_image_queries,
            body_timeout_s=args.body_timeout,
        )
    except ValueError as error:
        raise SystemExit(
            f"timam serve: {error} (--max-k, --max-upload-mb, --max-image-queries, --body-timeout)"
        ) from None
    try:
        searcher = Searcher.open(
            args.index,
            args.checkpoint,
            project=args.project,
            tokenizer=args.tokenizer,
            max_length=args.max_length,
            device=args.device,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"timam serve: {error}", file=sys.stderr)
        return 2
    described = searcher.describe()
    logger.info(
        "Serving %s (%d images, checkpoint %s) on http://%s:%d",
        described["index"],
        described["images"],
        described["checkpoint_version"],
        args.host,
        args.port,
    )
    hosts = HostPolicy.for_bind(args.host, args.allow_host)
    logger.info("Requests must name the server as one of its own: %s", hosts.describe())
    app = create_app(searcher, limits=limits, host=args.host, allow_hosts=tuple(args.allow_host))
    uvicorn.Server(server_config(app, host=args.host, port=args.port, log_level=args.log_level)).run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    raise AssertionError(f"unknown command {args.command}")  # argparse refuses unknown commands first
