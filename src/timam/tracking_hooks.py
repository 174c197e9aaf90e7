"""kedro-mlflow's hook, made safe for long runs and aware of checkpoints, variants and trials.

kedro-mlflow (``conf/<env>/mlflow.yml``) opens one MLflow run per ``kedro run`` and logs every
``params:`` input of the nodes. :class:`TimamMlflowHook` subclasses its hook (registered in
``settings.py`` in place of the plugin's auto-registered one) to add what the plugin cannot do:

- join an evaluate-only run (``--pipelines evaluate``, ``--load-versions model_checkpoint:<v>``) to
  the run that trained the checkpoint it scores, keeping that run's name, command and parameters
  (a changed one becomes a ``rerun.`` tag); a checkpoint no run trained gets a new run tagged with
  its version;
- one nested run per ablation variant or families row and seed (tagged ``variant`` and ``seed``);
  tuning trials open their own nested runs in :mod:`timam.tuning.objective`;
- from the data as it is saved: the checkpoint version and best epoch as tags, test metrics (every
  tie rule, both directions, mR) as metrics, the best tuned parameters as parameters, and every
  dataset whose catalog entry says ``metadata: {mlflow: {artifact: true}}`` as an artifact;
- never breaking a run: an unreachable tracking server, or any failing call, gives one warning and
  the run goes on untracked; under torchrun only rank 0 tracks.

Why not kedro-mlflow's ``MlflowArtifactDataset`` for the artifacts: with Kedro 1.x it cannot wrap a
versioned dataset (it builds the inner dataset with a save version of its own, and the catalog of a
``kedro run`` refuses it with ``VersionAlreadyExistsError``), a failed upload fails the save, and it
uploads the local path of the file, which an ``s3://`` catalog does not have.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import tempfile
import urllib.request
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import mlflow
from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractDataset, CatalogProtocol, DataCatalog
from kedro.pipeline import Node, Pipeline
from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from timam.tracking.config import tracking_config
from timam.tracking.log import (
    PARAM_VALUE_LIMIT,
    WHERE_THE_NUMBERS_ARE,
    flat_values,
    guarded,
    log_metrics,
    log_params,
    metric_name,
    numeric_leaves,
    set_tags,
)

logger = logging.getLogger(__name__)

CHECKPOINT = "model_checkpoint"
MLFLOW_METADATA_KEYS = {"artifact", "artifact_path"}  # a catalog entry's metadata: {mlflow: {...}}
_VARIANT_RUN = re.compile(r"^(?P<study>ablation|families)\.(?P<variant>.+)_seed(?P<seed>\d+)$")


def tracking_server_reachable(uri: str, timeout: float = 3.0) -> bool:
    """A quick ``/health`` probe for HTTP stores; local stores (SQLite, files) count as reachable."""
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            return 200 <= response.status < 300
    except OSError:
        return False


def _split(dataset_name: str) -> tuple[str | None, str]:
    namespace, _, name = dataset_name.rpartition(".")
    return namespace or None, name


def check_mlflow_metadata(conf_catalog: Mapping[str, Any]) -> None:
    """Refuse a misspelt ``metadata.mlflow`` in the catalog before any node runs (it would silently
    track nothing)."""
    for name, entry in conf_catalog.items():
        metadata = entry.get("metadata") if isinstance(entry, Mapping) else None
        declared = metadata.get("mlflow") if isinstance(metadata, Mapping) else None
        if declared is None:
            continue
        if (
            not isinstance(declared, Mapping)
            or set(declared) - MLFLOW_METADATA_KEYS
            or not isinstance(declared.get("artifact"), bool)
        ):
            raise ValueError(
                f"Catalog entry {name!r}: metadata.mlflow must be a mapping with artifact: true|false and an "
                f"optional artifact_path (got {declared!r}); fix it in conf/<env>/catalog*.yml."
            )
        if declared["artifact"] and "filepath" not in entry:
            raise ValueError(
                f"Catalog entry {name!r}: only a dataset saved to one file (a `filepath`) can be an MLflow "
                "artifact; set metadata.mlflow.artifact: false or remove it."
            )


class TimamMlflowHook(MlflowHook):
    """The kedro-mlflow hook with timam's runs, tags and artifacts; off for the whole run on failure."""

    run_id: str | None  # the plugin's: the pipeline's run, None while none is open

    def __init__(self) -> None:
        super().__init__()
        self._off = False
        self._catalog: CatalogProtocol | None = None
        self._log_checkpoint = False
        self._variant_runs: dict[str, str] = {}  # namespace of an ablation variant or families row -> run id
        self._configured_run_id: str | None = None
        self._joined_params: dict[str, str] | None = None  # the training run's parameters, on a joined rerun

    def _turn_off(self, why: str) -> None:
        if not self._off:
            logger.warning("MLflow tracking is off for this run: %s; %s", why, WHERE_THE_NUMBERS_ARE)
        self._off = True
        self.run_id = None

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        self._off, self._joined_params = False, None  # settings.HOOKS holds one instance per process
        if os.environ.get("RANK", "0") != "0":
            self._off = True  # torchrun: rank 0 tracks for every rank
            return
        # A server that goes away mid-run must cost seconds per call, not MLflow's minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self._log_checkpoint = tracking_config(context.params.get("tracking")).log_checkpoint
        uri = self._tracking_uri(context)
        if not tracking_server_reachable(str(uri)):
            self._turn_off(f"the tracking server {uri} does not answer")
            return
        try:
            super().after_context_created(context)
        except Exception as error:
            self._turn_off(f"setting up {uri or 'the tracking store'} failed ({error})")
            return
        self._configured_run_id = self.mlflow_config.tracking.run.id

    @staticmethod
    def _tracking_uri(context: KedroContext) -> str:
        """``server.mlflow_tracking_uri`` of mlflow.yml, else MLFLOW_TRACKING_URI ("" when neither)."""
        loader = context.config_loader
        patterns = getattr(loader, "config_patterns", {})
        patterns.setdefault("mlflow", ["mlflow*", "mlflow*/**", "**/mlflow*"])  # what kedro-mlflow adds
        try:
            configured = (loader["mlflow"].get("server") or {}).get("mlflow_tracking_uri")
        except Exception:
            configured = None  # no mlflow.yml: kedro-mlflow's defaults
        return str(configured or os.environ.get("MLFLOW_TRACKING_URI", ""))

    @hook_impl
    def after_catalog_created(
        self,
        catalog: CatalogProtocol,
        conf_catalog: dict[str, Any],
        conf_creds: dict[str, Any],
        parameters: dict[str, Any],
        save_version: str,
        load_versions: dict[str, str],
    ) -> None:
        check_mlflow_metadata(conf_catalog)
        self._catalog = catalog
        if not self._off:
            super().after_catalog_created(catalog, conf_catalog, conf_creds, parameters, save_version, load_versions)

    def _tracks(self, run_params: Mapping[str, Any]) -> bool:
        """kedro-mlflow's rule: a run makes no MLflow run when each of its pipelines is listed in
        mlflow.yml's ``tracking.disable_tracking.pipelines``."""
        names = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
        return not all(name in self.mlflow_config.tracking.disable_tracking.pipelines for name in names)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: CatalogProtocol) -> None:
        if self._off:
            return
        tracked = self._tracks(run_params)
        scored = self._scored_checkpoint(pipeline, catalog) if tracked else None
        trained_it = self._run_of_checkpoint(scored) if scored else None
        if self._configured_run_id is None:  # a run id set in mlflow.yml wins
            self.mlflow_config.tracking.run.id = trained_it.info.run_id if trained_it else None  # None: a new run
        if trained_it is not None and self.mlflow_config.tracking.run.name is None:
            self.mlflow_config.tracking.run.name = trained_it.info.run_name  # kedro-mlflow renames it otherwise
        try:
            super().before_pipeline_run(run_params, pipeline, catalog)
        except Exception as error:
            self._turn_off(f"starting the run failed ({error})")
            return
        if self.run_id is None:  # tracking disabled for this pipeline in mlflow.yml
            return
        if trained_it is not None:
            self._keep_training_tags(trained_it.data.tags)
            self._joined_params = dict(trained_it.data.params)
            logger.info("MLflow: this run joins run %s, which trained checkpoint %s", self.run_id, scored)
        elif scored:
            set_tags({"checkpoint_version": scored}, run_id=self.run_id)

    def _keep_training_tags(self, before: Mapping[str, str]) -> None:
        """kedro-mlflow tags the run with this command's settings; on a joined training run those go
        under ``rerun.`` and the training's own values stay."""
        with guarded("keep the training run's tags"):
            client, run_id = MlflowClient(), str(self.run_id)
            for key, value in client.get_run(run_id).data.tags.items():
                if key.startswith("mlflow.") or before.get(key) == value:
                    continue
                client.set_tag(run_id, f"rerun.{key}", value)
                if key in before:
                    client.set_tag(run_id, key, before[key])
                else:
                    client.delete_tag(run_id, key)

    def _scored_checkpoint(self, pipeline: Pipeline, catalog: CatalogProtocol) -> str | None:
        """The version of the checkpoint a pipeline loads without training it (evaluate-only runs)."""
        if CHECKPOINT not in pipeline.inputs():
            return None
        with guarded("resolve the checkpoint version"):
            return str(catalog[CHECKPOINT].resolve_load_version())
        return None

    def _run_of_checkpoint(self, version: str) -> Run | None:
        """The run that trained checkpoint ``version``, if this experiment has it."""
        with guarded("find the run of the checkpoint"):
            experiment = mlflow.get_experiment_by_name(self.mlflow_config.tracking.experiment.name)
            if experiment is None:
                return None
            runs = MlflowClient().search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.checkpoint_version = '{version}' and tags.trained_checkpoint = 'true'",
                max_results=1,
            )
            return runs[0] if runs else None
        return None

    @hook_impl
    def before_node_run(self, node: Node, catalog: CatalogProtocol, inputs: dict[str, Any], is_async: bool) -> None:
        if self._off:
            return
        with guarded("before_node_run"):
            if self._joined_params is None:
                super().before_node_run(node, catalog, inputs, is_async)
            else:  # MLflow refuses to change a logged parameter: the joined run gets only new ones
                super().before_node_run(node, catalog, {}, is_async)
                self._log_rerun_params(inputs, self._joined_params)
            self._enter_variant_run(node, inputs)

    def _log_rerun_params(self, inputs: Mapping[str, Any], known: dict[str, str]) -> None:
        """A joined run keeps the training's parameters (``known``, updated here): a new one is
        logged, a changed one becomes the tag ``rerun.<name>``."""
        given = {key.removeprefix("params:"): value for key, value in inputs.items() if key.startswith("params:")}
        flat = {metric_name(key): str(value)[:PARAM_VALUE_LIMIT] for key, value in flat_values(given).items()}
        new = {key: value for key, value in flat.items() if key not in known}
        log_params(new, run_id=self.run_id)
        known.update(new)
        set_tags({f"rerun.{key}": value for key, value in flat.items() if known[key] != value}, run_id=self.run_id)

    def _enter_variant_run(self, node: Node, inputs: Mapping[str, Any]) -> None:
        """Make an ablation variant's (or families row's) nested run active while its nodes run."""
        match = _VARIANT_RUN.match(node.namespace or "")
        if match is None or self.run_id is None:
            return
        namespace = node.namespace or ""
        run_id = self._variant_runs.get(namespace)
        if run_id is None:
            tags = {"variant": match["variant"], "seed": match["seed"]}
            run = mlflow.start_run(run_name=namespace.removeprefix(f"{match['study']}."), nested=True, tags=tags)
            self._variant_runs[namespace] = run_id = run.info.run_id
        else:
            mlflow.start_run(run_id=run_id, nested=True)
        for name, value in inputs.items():
            _, base = _split(name)
            if base in {"model_parameters", "training_parameters"} and isinstance(value, Mapping):
                log_params(value, prefix=base.removesuffix("_parameters"), run_id=run_id)

    def _leave_variant_run(self, node: Node, status: str) -> None:
        """Back to the pipeline's run; a later node of the variant reopens its run."""
        if node.namespace in self._variant_runs:
            with guarded("end the variant run"):
                mlflow.end_run(status)

    @hook_impl
    def after_node_run(self, node: Node) -> None:
        if not self._off:
            self._leave_variant_run(node, "FINISHED")

    @hook_impl
    def on_node_error(self, node: Node) -> None:
        if not self._off:
            self._leave_variant_run(node, "FAILED")

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Node) -> None:
        if self._off or self.run_id is None:
            return
        namespace, name = _split(dataset_name)
        run_id = self._variant_runs.get(namespace or "", self.run_id)
        with guarded(f"log {dataset_name}"):
            if name == CHECKPOINT:
                self._record_checkpoint(dataset_name, data, run_id)
            elif name == "retrieval_metrics" and isinstance(data, Mapping):
                log_metrics(self._test_metrics(data), run_id=run_id)
            elif name == "best_training_parameters" and isinstance(data, Mapping):
                log_params(data, prefix="best", run_id=run_id)
        with guarded(f"log {dataset_name} as an artifact"):
            self._log_artifact(dataset_name, data, run_id)

    @staticmethod
    def _test_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
        """``test.text_to_image.expected.R1`` ..., ``test.mR.expected``, ``test.chance_t2i_R1``,
        ``test.cost.score_ms_per_query``."""
        picked = {key: metrics[key] for key in ("results", "mR", "protocol_results", "cost") if key in metrics}
        flat = numeric_leaves({"test": picked})
        flat = {key.replace("test.results.", "test."): value for key, value in flat.items()}
        if "chance_t2i_R@1" in metrics:
            flat.update(numeric_leaves({"test": {"chance_t2i_R@1": metrics["chance_t2i_R@1"]}}))
        return flat

    def _record_checkpoint(self, dataset_name: str, checkpoint: Any, run_id: str) -> None:
        """Tag the run with the best epoch, and with the version when the checkpoint is the catalog's
        versioned ``model_checkpoint`` (an ablation variant's stays in memory)."""
        metadata = getattr(checkpoint, "metadata", {}) or {}
        if metadata.get("best_epoch") is not None:
            set_tags({"best_epoch": metadata["best_epoch"]}, run_id=run_id)
        if dataset_name != CHECKPOINT or self._catalog is None:
            return
        version = str(self._catalog[dataset_name].resolve_save_version())
        set_tags({"checkpoint_version": version, "trained_checkpoint": "true"}, run_id=run_id)

    def _log_artifact(self, dataset_name: str, data: Any, run_id: str) -> None:
        """Log ``data`` as the catalog entry declares (``metadata: {mlflow: {artifact: true,
        artifact_path: ...}}``), under its file's name (``retrieval_metrics.json``, whatever the
        version folder); checkpoint weights only with ``params:tracking.log_checkpoint``.

        The data is written once more, by the entry's own dataset type and arguments, into a
        temporary folder: the artifact holds the catalog file's bytes wherever the catalog keeps it
        (a local version folder, ``s3://``...)."""
        if not isinstance(self._catalog, DataCatalog):
            return
        config = copy.deepcopy(self._catalog.config_resolver.resolve_pattern(dataset_name))
        declared = (config.get("metadata") or {}).get("mlflow") or {}
        if not declared.get("artifact") or (_split(dataset_name)[1] == CHECKPOINT and not self._log_checkpoint):
            return
        for local_only in ("versioned", "credentials"):
            config.pop(local_only, None)
        with tempfile.TemporaryDirectory(prefix="timam-artifact-") as folder:
            path = Path(folder) / PurePosixPath(str(config["filepath"])).name
            config["filepath"] = str(path)
            AbstractDataset.from_config(dataset_name, config).save(data)
            MlflowClient().log_artifact(run_id, str(path), artifact_path=declared.get("artifact_path"))

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: CatalogProtocol) -> None:
        if self._off:
            return
        self._end_variant_runs("FINISHED")
        with guarded("end the run"):
            super().after_pipeline_run(run_params, pipeline, catalog)

    @hook_impl
    def on_pipeline_error(
        self, error: Exception, run_params: dict[str, Any], pipeline: Pipeline, catalog: CatalogProtocol
    ) -> None:
        if self._off:
            return
        self._end_variant_runs("FAILED")
        with guarded("close the failed run"):
            super().on_pipeline_error(error, run_params, pipeline, catalog)

    def _end_variant_runs(self, status: str) -> None:
        with guarded("end the variant runs"):
            client = MlflowClient()
            for run_id in self._variant_runs.values():
                client.set_terminated(run_id, status)
        self._variant_runs.clear()
