"""Kedro hooks: say how long each node took, since training and embedding dominate a run."""

from __future__ import annotations

import logging
import time
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node

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
