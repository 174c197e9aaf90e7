"""Kedro project settings."""

from timam.hooks import NodeTimingHook

HOOKS = (NodeTimingHook(),)
