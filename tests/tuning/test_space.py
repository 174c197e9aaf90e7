"""The search space, the settings, the --params formatting and the figures (no training)."""

from __future__ import annotations

import io

import optuna
import pytest
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from tests.tuning.tiny_study import shipped_search_space
from timam.config import deep_merge
from timam.figures.tuning import optimisation_history_figure, parameter_importance_figure
from timam.training.config import training_config
from timam.tuning import params_argument, parse_search_space, suggest_overrides, tuning_settings

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sample(space: dict, base: dict | None = None, n: int = 1, seed: int = 0) -> list[dict]:
    knobs = parse_search_space(space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(suggest_overrides(trial, knobs, base or {}))
        study.tell(trial, 0.0)
    return out


def test_shipped_space_always_gives_a_valid_training_config():
    for overrides in sample(shipped_search_space(), n=40):
        config = training_config(overrides)
        assert 1e-4 <= config.text_optimizer.lr <= 3e-3 and 1e-4 <= config.image_optimizer.lr <= 3e-3
        assert 0 <= config.loss_weights.identification <= 2 and config.loss_weights.cmpm == 1.0
        assert 0 <= config.loss_weights.adversarial <= 1 and 0 <= config.loss_weights.cmpc <= 1
        assert 0 <= config.adversarial.label_smoothing <= 0.3
        assert config.adversarial.discriminator_steps in (1, 2, 3)
        assert config.batch_size in (32, 64, 128)
        assert ("samples_per_identity" in overrides) == (config.sampler == "identity")
        if config.sampler == "identity":
            assert 2 <= config.samples_per_identity <= 8


def test_kinds_are_inferred_and_null_switches_a_knob_off():
    knobs = {
        k.path: k
        for k in parse_search_space(
            {
                "batch_size": {"choices": [8, 16]},
                "adversarial": {
                    "discriminator_steps": {"low": 1, "high": 3},
                    "label_smoothing": {"low": 0, "high": 0.3},
                },
                "text_optimizer": {"lr": {"low": 1e-4, "high": 1e-3, "log": True}, "name": None},
                "loss_weights": {"cmpm": {"fixed": 2.0}, "cmpc": None},
            }
        )
    }
    assert {p: k.kind for p, k in knobs.items()} == {
        "batch_size": "categorical",
        "adversarial.discriminator_steps": "int",
        "adversarial.label_smoothing": "float",
        "text_optimizer.lr": "float",
        "loss_weights.cmpm": "fixed",
    }


def test_conditional_knob_follows_the_base_value_when_not_searched():
    space = {"samples_per_identity": {"low": 2, "high": 4, "when": {"sampler": "identity"}}}
    assert sample(space, base={"sampler": "random"}) == [{}]
    assert set(sample(space, base={"sampler": "identity"})[0]) == {"samples_per_identity"}


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"learning_rate": {"low": 0.1, "high": 1.0}}, "not a training parameter"),
        ({"loss_weights": {"cmpm_": {"fixed": 1.0}}}, "not a training parameter"),
        ({"loss_weights": {"low": 0.0, "high": 1.0}}, "not a training parameter"),  # a group, not a leaf
        ({"batch_size": {"choices": [8], "chioces": [16]}}, "unknown key"),
        ({"batch_size": {"low": 16, "high": 8}}, "low <= high"),
        ({"text_optimizer": {"lr": {"low": 0.0, "high": 1e-3, "log": True}}}, "low > 0"),
        ({"batch_size": 64}, "must be a spec"),
        ({"batch_size": {"choices": []}}, "empty"),
        ({"samples_per_identity": {"low": 2, "high": 4, "when": {"samplr": "identity"}}}, "not a training parameter"),
        (
            {
                "sampler": {"choices": ["random"], "when": {"batch_size": 8}},
                "samples_per_identity": {"low": 2, "high": 4, "when": {"sampler": "identity"}},
            },
            "unconditional",
        ),
    ],
)
def test_bad_search_space_fails_before_any_trial(space, message):
    with pytest.raises(ValueError, match=message):
        parse_search_space(space)


def test_unknown_tuning_parameters_are_errors():
    with pytest.raises(ValueError, match="tuning.n_trails"):
        tuning_settings({"n_trails": 3})
    with pytest.raises(ValueError, match="tuning.pruner.warmup"):
        tuning_settings({"pruner": {"warmup": 1}})
    with pytest.raises(ValueError, match="median"):
        tuning_settings({"pruner": {"name": "hyperband"}})


def test_params_argument_round_trips_through_kedro_dotlist():
    best = {
        "training": {
            "text_optimizer": {"lr": 1e-05},
            "sampler": "identity",
            "batch_size": 64,
            "loss_weights": {"cmpm": 1.0, "adversarial": 0.25},
            "shared_classifier": False,
            "freeze": {"text_model_epochs": None, "image_backbone_epochs": 2},
        }
    }
    argument = params_argument(best)
    assert "training.text_optimizer.lr=1.0e-05" in argument
    assert OmegaConf.to_container(OmegaConf.from_dotlist(argument.split(","))) == best
    with pytest.raises(ValueError, match="comma"):
        params_argument({"training": {"device": "a,b"}})


def test_merging_keeps_the_base():
    base = {"epochs": 15, "loss_weights": {"identification": 1.0, "cmpm": 1.0}}
    merged = deep_merge(base, {"loss_weights": {"cmpm": 2.0}})
    assert merged == {"epochs": 15, "loss_weights": {"identification": 1.0, "cmpm": 2.0}}
    assert base["loss_weights"]["cmpm"] == 1.0


def _study(values: list[float | None]) -> optuna.Study:
    study = optuna.create_study(direction="maximize", study_name="figures")
    for number, value in enumerate(values):
        trial = study.ask()
        trial.suggest_float("text_optimizer.lr", 1e-4, 1e-3, log=True)
        trial.suggest_categorical("sampler", ["random", "identity"])
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value + number)
    return study


@pytest.mark.parametrize("values", [[], [None], [10.0], [None, 10.0]])
def test_figures_with_too_few_completed_trials_say_so(values):
    for figure in (optimisation_history_figure(_study(values)), parameter_importance_figure(_study(values))):
        assert isinstance(figure, Figure)
        figure.savefig(io.BytesIO(), format="png")


def test_figures_of_a_study_render_without_changing_global_style():
    import matplotlib

    style = dict(matplotlib.rcParams)
    study = _study([10.0, 20.0, 15.0, None, 30.0, 12.0])
    for figure in (optimisation_history_figure(study), parameter_importance_figure(study)):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        assert buffer.getvalue().startswith(b"\x89PNG")
        assert "'figures': 6 trial(s), 5 completed" in figure.get_suptitle()
    assert dict(matplotlib.rcParams) == style
