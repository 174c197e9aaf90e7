"""Kedro project settings."""

from timam.hooks import NodeTimingHook

HOOKS = (NodeTimingHook(),)

# Dataset environments (conf/<env>/) override single parameters, not whole blocks: with "soft"
# merging, `model: {image_size: [224, 224]}` in an env keeps every other model parameter of base.
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft"},
}
