"""Run the ``train_model`` node on several processes: ``torchrun --nproc_per_node N -m timam.launch``.

``kedro run`` runs every node in one process, and N copies of it would each save their own
checkpoint version. This entry point runs only the training node on every rank, reads its inputs
through the project's catalog (run ``kedro run --pipelines prepare`` first), and saves the
checkpoint and history from rank 0 only, as a new version that ``kedro run --pipelines evaluate``
then picks up. ``--env`` and ``--params`` mean what they mean to ``kedro run``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, cast

import torch.distributed as dist
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.pipeline import Node
from omegaconf import OmegaConf

from timam.models.checkpoint import Checkpoint
from timam.training.distributed import context_from_environment
from timam.training.resume import discard_state_of

logger = logging.getLogger("timam.launch")  # not __name__: run with -m it is "__main__"


def runtime_parameters(text: str) -> dict[str, Any]:
    """``"training.epochs=30,model.lstm_hidden=256"`` -> nested parameters, as ``kedro run --params``."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        if "=" not in item or not item.partition("=")[0].strip():
            raise SystemExit(f"--params item {item!r} must read key=value, e.g. training.epochs=30")
    if not items:
        return {}
    return cast(dict[str, Any], OmegaConf.to_container(OmegaConf.from_dotlist(items)))


def training_node() -> Node:
    """The ``train`` pipeline's ``train_model`` node: its inputs and outputs come from the pipeline."""
    return next(node for node in pipelines["train"].nodes if node.name == "train_model")


def save_outputs(catalog: Any, outputs: dict[str, Any]) -> None:
    """Save the training node's outputs, then delete the resume state (as ``TrainingStateHook`` does
    under ``kedro run``): a kill during the save leaves the state for the rerun to finish from."""
    for name, data in outputs.items():
        catalog.save(name, data)
    for data in outputs.values():
        if isinstance(data, Checkpoint):
            discard_state_of(data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=None, help="Kedro environment, e.g. paper or ucm_captions")
    parser.add_argument("--params", default="", help="parameter overrides, as for kedro run")
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="Kedro project root (default: here)")
    args = parser.parse_args(argv)

    context = context_from_environment()
    bootstrap_project(args.project)
    with KedroSession.create(
        project_path=args.project, env=args.env, runtime_params=runtime_parameters(args.params)
    ) as session:
        assert isinstance(session, KedroSession)  # create() is typed as returning the abstract session
        catalog = session.load_context().catalog
        if not context.is_main:  # after the session has applied conf/logging.yml
            logging.getLogger().setLevel(logging.WARNING)
            for name in ("timam", "kedro"):
                logging.getLogger(name).setLevel(logging.WARNING)
        node = training_node()
        outputs = node.run({name: catalog.load(name) for name in node.inputs})
        if context.is_main:
            save_outputs(catalog, outputs)
            logger.info("Saved %s (%d ranks)", ", ".join(outputs), context.world_size)
    if context.active:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
