"""Kedro hook: at the start of each run, remove what killed runs left (:mod:`timam.formats.cleanup`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl

from timam.formats.cleanup import ProjectFolders, project_folders, remove_stale_temporaries


class StaleTemporaryCleanupHook:
    """Sweeps the project's local folders (:func:`~timam.formats.cleanup.project_folders`: ``data/``,
    the ``caches`` of globals, each local catalog file's folder) when the pipeline starts, before any
    node writes. Only temporaries older than the run whose writer is gone are removed: another
    run's live work is kept.
    """

    def __init__(self) -> None:
        self._folders = ProjectFolders()

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        loader = context.config_loader
        self._folders = project_folders(Path(context.project_path), loader["catalog"], loader["globals"])

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        remove_stale_temporaries(self._folders.deep, shallow=self._folders.shallow, started=time.time())
