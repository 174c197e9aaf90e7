"""The search space: which ``params:training`` knobs a study varies, and how.

``params:tuning.search_space`` mirrors the ``training`` tree; each leaf is a knob spec::

    batch_size: {choices: [32, 64, 128]}                    # categorical
    text_optimizer: {lr: {low: 1.0e-4, high: 3.0e-3, log: true}}   # float (log-uniform)
    adversarial: {discriminator_steps: {low: 1, high: 3}}   # int (both bounds are integers)
    loss_weights: {cmpm: {fixed: 1.0}}                      # set, not searched
    samples_per_identity: {low: 2, high: 8, when: {sampler: identity}}   # only when sampler is identity

A spec may name its ``type`` (float | int | categorical | fixed) and a ``step``; ``null`` switches
a knob off (the base ``training`` value is used), which is how an environment removes a knob under
soft merging. Every knob's path must be a leaf of :class:`~timam.training.config.TrainingConfig`,
so a typo fails before any trial runs. The Optuna parameter of a knob is its dotted path
(``text_optimizer.lr``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from timam.config import flatten
from timam.training.config import TrainingConfig

SPEC_KEYS = {"type", "low", "high", "log", "step", "choices", "fixed", "when"}
KINDS = {"float", "int", "categorical", "fixed"}


@dataclass(frozen=True)
class Knob:
    """One searched (or fixed) training parameter, addressed by its dotted path."""

    path: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None
    when: dict[str, Any] = field(default_factory=dict)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "fixed":
            return self.value
        if self.kind == "categorical":
            return trial.suggest_categorical(self.path, list(self.choices))
        assert self.low is not None and self.high is not None  # a range knob (parse_search_space checks)
        if self.kind == "int":
            return trial.suggest_int(self.path, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.path, float(self.low), float(self.high), step=self.step, log=self.log)

    def applies(self, values: Mapping[str, Any]) -> bool:
        """Whether every ``when`` condition holds on the flattened training values."""
        for path, expected in self.when.items():
            allowed = expected if isinstance(expected, list | tuple) else [expected]
            if values.get(path) not in allowed:
                return False
        return True


def training_leaves() -> dict[str, Any]:
    """Every leaf of the training tree by dotted path, with its default."""
    return flatten(TrainingConfig().model_dump())


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        *groups, leaf = path.split(".")
        node = tree
        for group in groups:
            node = node.setdefault(group, {})
        node[leaf] = value
    return tree


def _is_spec(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(SPEC_KEYS & set(value))


def _knob(path: str, spec: Mapping[str, Any]) -> Knob:
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ValueError(f"tuning.search_space.{path}: unknown key(s) {unknown}; known: {sorted(SPEC_KEYS)}")
    when = dict(spec.get("when") or {})
    if "fixed" in spec:
        kind = "fixed"
    elif "choices" in spec:
        kind = "categorical"
    elif "low" in spec and "high" in spec:
        both_int = all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("low", "high"))
        kind = "int" if both_int and not isinstance(spec.get("step"), float) else "float"
    else:
        raise ValueError(f"tuning.search_space.{path}: give `choices`, `low` and `high`, or `fixed`")
    kind = spec.get("type", kind)
    if kind not in KINDS:
        raise ValueError(f"tuning.search_space.{path}.type must be one of {sorted(KINDS)}, got {kind!r}")
    if kind == "fixed":
        return Knob(path, kind, value=spec.get("fixed"), when=when)
    if kind == "categorical":
        choices = tuple(spec.get("choices") or ())
        if not choices:
            raise ValueError(f"tuning.search_space.{path}.choices is empty")
        return Knob(path, kind, choices=choices, when=when)
    low, high = spec.get("low"), spec.get("high")
    if low is None or high is None or low > high:
        raise ValueError(f"tuning.search_space.{path}: need low <= high, got low={low!r}, high={high!r}")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise ValueError(f"tuning.search_space.{path}: a log-uniform range needs low > 0")
    return Knob(path, kind, low=low, high=high, log=log, step=spec.get("step"), when=when)


def parse_search_space(tree: Mapping[str, Any] | None) -> list[Knob]:
    """Knobs from ``params:tuning.search_space``; unknown paths, groups and spec keys are errors."""
    leaves = training_leaves()
    knobs: list[Knob] = []

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if value is None:
                continue  # switched off
            if _is_spec(value):
                if path not in leaves:
                    raise ValueError(f"tuning.search_space.{path} is not a training parameter; known: {sorted(leaves)}")
                knobs.append(_knob(path, value))
            elif isinstance(value, Mapping):
                walk(value, f"{path}.")
            else:
                raise ValueError(
                    f"tuning.search_space.{path} must be a spec ({{low, high}}, {{choices}} or {{fixed}}), "
                    f"got {value!r}"
                )

    walk(tree or {}, "")
    conditional = {knob.path for knob in knobs if knob.when}
    for knob in knobs:
        for condition in knob.when:
            if condition not in leaves:
                raise ValueError(f"tuning.search_space.{knob.path}.when: {condition!r} is not a training parameter")
            if condition in conditional:
                raise ValueError(
                    f"tuning.search_space.{knob.path}.when may only refer to unconditional knobs, not {condition!r}"
                )
    return knobs


def suggest_overrides(trial: optuna.Trial, knobs: list[Knob], base_training: Mapping[str, Any]) -> dict[str, Any]:
    """One trial's training overrides (nested like ``training``): unconditional knobs first."""
    values = {**training_leaves(), **flatten(base_training)}
    chosen: dict[str, Any] = {}
    for knob in [k for k in knobs if not k.when] + [k for k in knobs if k.when]:
        if knob.applies({**values, **chosen}):
            chosen[knob.path] = knob.suggest(trial)
    return nest(chosen)
