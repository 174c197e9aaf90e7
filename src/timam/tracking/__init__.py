"""MLflow logging from the core: per-epoch metrics, nested runs, metric trees.

Every function here is a no-op without an active MLflow run (tests, ``kedro run`` with tracking
disabled, torchrun ranks other than 0) and never raises: a tracking failure gives one warning and
the run goes on, since the catalog keeps every number anyway. Kedro's side (which run, parameters,
tags, artifacts) is in :mod:`timam.tracking_hooks`.
"""
