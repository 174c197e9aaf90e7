"""Kedro hooks: check every parameter block when a run starts, and say how long each node took.

``ParameterCheckHook`` builds each typed parameter block from the merged parameters (base, env,
``--params``) as soon as the context exists -- before any node runs, under ``kedro run`` and under
``timam.launch`` alike -- so a misspelt key stops the run at once, naming the nearest known key.
``NodeTimingHook`` logs each node's duration, since training and embedding dominate a run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node

if TYPE_CHECKING:
    from timam.config import ParameterBlock

logger = logging.getLogger(__name__)


class NodeTimingHook:
    """Logs each node's start and its wall-clock duration when it finishes."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    @hook_impl
    def before_node_run(self, node: Node, inputs: dict[str, Any]) -> None:
        self._started[node.name] = time.perf_counter()
        logger.info("Node %s: started", node.name)

    @hook_impl
    def after_node_run(self, node: Node, outputs: dict[str, Any]) -> None:
        seconds = time.perf_counter() - self._started.pop(node.name, time.perf_counter())
        logger.info("Node %s: finished in %.1f s", node.name, seconds)


# Top-level keys that moved into a block, with their new place.
MOVED_PARAMETERS = {"query": "search.query", "query_image": "search.query_image", "top_k": "search.top_k"}


def parameter_blocks() -> dict[str, type[ParameterBlock]]:
    """Each top-level parameter block and its model: the run-start check, the configuration
    reference and the YAML-equals-default test all read this one list."""
    # Imported here: the Kedro CLI imports this module (through settings) for every command.
    from timam.evaluation.config import CompareConfig, EvaluationConfig
    from timam.index.config import IndexConfig
    from timam.inference.config import EmbeddingConfig
    from timam.models.config import ModelConfig
    from timam.search.config import SearchConfig
    from timam.sources.config import SourceConfig
    from timam.studies.ablation import AblationConfig
    from timam.studies.families import FamiliesConfig
    from timam.tokenization import TokenizationConfig
    from timam.tracking.config import TrackingConfig
    from timam.training.config import TrainingConfig
    from timam.tuning.study import TuningSettings

    return {
        "source": SourceConfig,
        "tokenization": TokenizationConfig,
        "model": ModelConfig,
        "training": TrainingConfig,
        "embedding": EmbeddingConfig,
        "evaluation": EvaluationConfig,
        "search": SearchConfig,
        "compare": CompareConfig,
        "tuning": TuningSettings,
        "ablation": AblationConfig,
        "families": FamiliesConfig,
        "index": IndexConfig,
        "tracking": TrackingConfig,
    }


def _build_block(name: str, params: Mapping[str, Any], base_ok: bool) -> object:
    """Block ``name`` built from the whole parameter tree, with the checks that need other blocks.

    ``base_ok`` says whether ``model`` and ``training`` built: only then are the ablation variants
    and the families rows merged into them and checked (else each would repeat the base block's error).
    """
    from timam.config import build
    from timam.models.config import check_model_parameters
    from timam.studies.ablation import ablation_config
    from timam.studies.families import families_config
    from timam.tuning.study import tuning_settings

    values = params.get(name)
    if name == "model":
        check_model_parameters(values)  # the class count comes from the data
        return None
    if name == "tuning":
        return tuning_settings(values)  # its search space names training knobs
    if name == "ablation" and base_ok:
        return ablation_config(values, model=params.get("model"), training=params.get("training") or {})
    if name == "families" and base_ok:
        config = families_config(values)
        for row in config.rows:
            config.row_parameters(row, params.get("model") or {}, params.get("training") or {}, seed=0)
        return config
    return build(parameter_blocks()[name], values, name)


def check_parameters(params: Mapping[str, Any]) -> None:
    """Build every typed parameter block of ``params``; one ValueError lists every problem found."""
    from timam.config import unknown_keys_error

    blocks = parameter_blocks()
    problems = [
        f'params {name} is now {moved}: use --params "{moved}=..." (or set it under `{moved.split(".")[0]}:` in YAML)'
        for name, moved in MOVED_PARAMETERS.items()
        if name in params
    ]
    unknown = [name for name in params if name not in blocks and name not in MOVED_PARAMETERS]
    if unknown:
        problems.append(str(unknown_keys_error("", unknown, blocks)))
    failed: set[str] = set()
    for name in blocks:
        try:
            _build_block(name, params, not failed & {"model", "training"})
        except (ValueError, TypeError) as error:
            failed.add(name)
            text = str(error)
            problems.append(text if name in text else f"params {name}: {text}")
    if problems:
        raise ValueError("Parameters rejected before any node ran:\n- " + "\n- ".join(problems))


class ParameterCheckHook:
    """Rejects bad parameters when the run starts (see :func:`check_parameters`)."""

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        check_parameters(context.params)


class TrainingStateHook:
    """Deletes a training run's resume state once the catalog has saved every output of the node
    that trained it (the checkpoint and its history), not before: the node returns before Kedro
    saves them, so a kill during that save leaves the state, and the rerun rebuilds the checkpoint
    from it instead of training from epoch 1. The state to delete is the one the saved checkpoint
    names (its ``training.state_path``: each ablation or families row has its own)."""

    def __init__(self) -> None:
        self._saved: dict[str, set[str]] = {}
        self._states: dict[str, Any] = {}  # node name -> the checkpoint whose state waits for deletion

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Node) -> None:
        from timam.models.checkpoint import Checkpoint
        from timam.training.resume import discard_state_of

        saved = self._saved.setdefault(node.name, set())
        saved.add(dataset_name)
        if isinstance(data, Checkpoint):
            self._states[node.name] = data
        if node.name in self._states and saved >= set(node.outputs):
            discard_state_of(self._states.pop(node.name))
            del self._saved[node.name]
