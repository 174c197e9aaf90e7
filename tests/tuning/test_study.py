"""A tiny Optuna study end to end: the node, SQLite storage, resume, pruning, the best-parameters file."""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
import yaml
from kedro.config import OmegaConfigLoader
from kedro_datasets.yaml import YAMLDataset
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from tests.training.tiny_run import tiny_captions
from tests.tuning.tiny_study import MODEL, REPO, TRAINING, shipped_search_space
from timam.config import deep_merge
from timam.inference.split_data import split_data
from timam.models.config import ModelConfig
from timam.pipelines.tune.nodes import tune_hyperparameters
from timam.pipelines.tune.pipeline import create_pipeline
from timam.training.config import training_config
from timam.training.loop import train_timam
from timam.tuning import TuningWorker, open_study, params_argument, run_worker, tuning_settings
from timam.tuning.__main__ import main as tuning_cli

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*RANDOM weights.*",
    "ignore::optuna.exceptions.ExperimentalWarning",
    "ignore:Target and region quantiles select the same set:UserWarning",  # importance of 3 tiny trials
    "ignore:Heartbeat of storage is supposed to be used with Study.optimize:UserWarning",
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a busy 2-core machine, two threads contend and run ~50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return tiny_captions(tmp_path_factory.mktemp("tiny_demo"))


def tuning(storage: str | None, n_trials: int, **extra) -> dict:
    return {
        "study_name": "tiny",
        "storage": storage,
        "n_trials": n_trials,
        "epochs": 2,
        "worker": "w0",
        "sampler": {"seed": 0, "n_startup_trials": 2},
        "pruner": {"n_startup_trials": 3, "n_warmup_steps": 1},
        "search_space": shipped_search_space(),
        **extra,
    }


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('study') / 'sub' / 'optuna.db'}"


@pytest.fixture(scope="module")
def node_outputs(demo, storage):
    captions, tokens = demo
    return tune_hyperparameters(captions, tokens, MODEL, TRAINING, tuning(storage, 3))


@pytest.fixture(scope="module")
def worker(demo) -> TuningWorker:
    captions, tokens = demo
    model_config = ModelConfig.from_dict({**MODEL, "num_classes": 6})
    return TuningWorker(
        split_data(captions, tokens, "train"), split_data(captions, tokens, "val"), model_config, TRAINING
    )


def load(storage: str) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=storage)


def test_node_runs_three_trials_on_sqlite(node_outputs, storage):
    best, trials, history, importance = node_outputs
    assert Path(storage.removeprefix("sqlite:///")).exists()
    assert len(trials) == 3
    assert trials["number"].tolist() == [0, 1, 2]
    assert set(trials["state"]) == {"COMPLETE"}
    assert trials["value"].between(0, 100).all()
    assert set(trials["worker"]) == {"w0"}
    assert any(column.startswith("params_text_optimizer.lr") for column in trials.columns)
    study = load(storage)
    for trial in study.trials:
        assert sorted(trial.intermediate_values) == [1, 2]  # val R@1 reported every epoch
        assert trial.value == max(trial.intermediate_values.values())
        assert 1e-4 <= trial.params["text_optimizer.lr"] <= 3e-3
        assert trial.params["batch_size"] in (32, 64, 128)
        assert ("samples_per_identity" in trial.params) == (trial.params["sampler"] == "identity")
    assert isinstance(history, Figure) and isinstance(importance, Figure)


def test_best_parameters_file_loads_into_training_config(node_outputs, storage, tmp_path):
    best = node_outputs[0]
    dataset = YAMLDataset(filepath=str(tmp_path / "best_training_parameters.yml"))
    dataset.save(best)
    loaded = dataset.load()
    assert set(loaded) == {"training"}
    assert "epochs" not in loaded["training"]  # the tuning budget is not a tuned knob
    first_three = [t for t in load(storage).trials if t.number < 3]  # what the node saw
    top = max(t.value for t in first_three)
    best_trials = [t for t in first_three if t.value == top]
    assert loaded["training"] in [t.user_attrs["training_overrides"] for t in best_trials]
    (trial,) = [t for t in best_trials if t.user_attrs["training_overrides"] == loaded["training"]][:1]
    assert loaded["training"]["text_optimizer"]["lr"] == trial.params["text_optimizer.lr"]
    assert loaded["training"]["loss_weights"]["cmpm"] == 1.0  # fixed knob
    shipped = yaml.safe_load((REPO / "conf/base/parameters_train.yml").read_text())["training"]
    shipped["state_path"] = None  # an interpolation in the file
    config = training_config(deep_merge(shipped, loaded["training"]))
    assert config.batch_size == trial.params["batch_size"]
    training_config(loaded["training"])  # also valid alone


def test_best_parameters_reach_train_parameters_by_local_file_and_by_params(node_outputs, tmp_path):
    """The two documented ways: conf/local/parameters_tuned.yml, or kedro run --params."""
    from timam.settings import CONFIG_LOADER_ARGS

    best = node_outputs[0]
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf, ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    (conf / "local" / "parameters.yml").write_text("training:\n  epochs: 2\n")
    (conf / "local" / "parameters_tuned.yml").write_text(yaml.safe_dump(best))
    by_file = OmegaConfigLoader(str(conf), **CONFIG_LOADER_ARGS)["parameters"]["training"]
    # What kedro does with --params: split at commas, OmegaConf dotlist, merged over the parameters.
    runtime = OmegaConf.to_container(OmegaConf.from_dotlist(params_argument(best).split(",")))
    shutil.rmtree(conf / "local")
    (conf / "local").mkdir()
    (conf / "local" / "parameters.yml").write_text("training:\n  epochs: 2\n")
    by_params = OmegaConfigLoader(str(conf), runtime_params=runtime, **CONFIG_LOADER_ARGS)["parameters"]["training"]
    assert by_file == by_params
    assert by_file["epochs"] == 2 and by_file["seed"] == 0  # the rest of training is untouched
    for path, value in pd.json_normalize(best["training"], sep=".").iloc[0].items():
        node = by_file
        for key in path.split("."):
            node = node[key]
        assert node == pytest.approx(value)
    training_config(by_file)


def test_cli_prints_the_params_argument(node_outputs, tmp_path, capsys):
    path = tmp_path / "best.yml"
    path.write_text(yaml.safe_dump(node_outputs[0]))
    assert tuning_cli(["params", str(path)]) == 0
    printed = capsys.readouterr().out.strip()
    assert sorted(printed.split(",")) == sorted(params_argument(node_outputs[0]).split(","))
    assert printed.startswith("training.") and "training.loss_weights.cmpm=1.0" in printed


def test_rerun_resumes_the_study_and_adds_trials(node_outputs, storage, worker):
    before = {t.number: (t.value, t.params) for t in load(storage).trials}
    study = run_worker(None, None, None, None, tuning(storage, 2, worker="w1"), worker=worker)
    trials = load(storage).trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert {t.number: (t.value, t.params) for t in trials if t.number < 3} == before
    assert [t.user_attrs["worker"] for t in trials] == ["w0", "w0", "w0", "w1", "w1"]
    assert len(study.trials) == 5


def test_max_total_trials_stops_a_worker(storage, worker, node_outputs):
    already = len(load(storage).trials)
    run_worker(None, None, None, None, tuning(storage, 5, max_total_trials=already), worker=worker)
    assert len(load(storage).trials) == already
    # nothing to run: not even the caches are built (the data arguments are not touched)
    run_worker(None, None, None, None, tuning(storage, 5, max_total_trials=already))
    run_worker(None, None, None, None, tuning(storage, 5, max_total_trials=already + 1), worker=worker)
    assert len(load(storage).trials) == already + 1


def test_a_trial_is_pruned_when_the_pruner_says_so(worker):
    study = run_worker(
        None, None, None, None, tuning(None, 1), pruner=optuna.pruners.ThresholdPruner(lower=101.0), worker=worker
    )
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert sorted(trial.intermediate_values) == [1]  # stopped after its first epoch
    assert len(trial.user_attrs["val_history"]) == 1


def test_median_pruner_and_seeded_tpe_from_parameters():
    settings = tuning_settings(tuning(None, 1))
    study = open_study(settings)
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    first = [open_study(settings).sampler._rng.rng.random() for _ in range(2)]
    assert first[0] == first[1]  # same worker name, same study state: same suggestions
    assert open_study(tuning_settings(tuning(None, 1, worker="w1"))).sampler._rng.rng.random() != first[0]
    assert isinstance(
        open_study(tuning_settings(tuning(None, 1, pruner={"name": "none"}))).pruner, optuna.pruners.NopPruner
    )


def test_a_trial_is_the_start_of_the_train_run_it_describes(worker, demo):
    """Shared caches and re-initialised heads change nothing: a trial replays train_timam."""
    captions, tokens = demo
    config = worker.config({"loss_weights": {"adversarial": 0.5, "cmpc": 0.5}, "sampler": "identity"})
    replay = worker.train(config)
    _, history = train_timam(
        split_data(captions, tokens, "train"),
        split_data(captions, tokens, "val"),
        ModelConfig.from_dict({**MODEL, "num_classes": 6}),
        config,
    )
    assert [row["val_t2i_R@1"] for row in replay["history"]] == history["val_t2i_R@1"].tolist()
    assert [row["loss_total"] for row in replay["history"]] == pytest.approx(history["loss_total"].tolist(), rel=1e-6)
    again = worker.train(config)  # and the worker's state does not leak from one trial into the next
    assert [row["loss_total"] for row in again["history"]] == [row["loss_total"] for row in replay["history"]]


def test_caches_are_fixed_per_worker(worker):
    with pytest.raises(ValueError, match="fixed per worker"):
        worker.config({"seed": 1})


def test_tune_pipeline_node():
    (node,) = [n for n in create_pipeline().nodes if n.name == "tune_hyperparameters"]
    assert node.inputs == ["captions", "caption_tokens", "params:model", "params:training", "params:tuning"]
    assert node.outputs == [
        "best_training_parameters",
        "tuning_trials",
        "tuning_optimisation_history",
        "tuning_parameter_importance",
    ]


def test_shipped_parameters_are_valid():
    values = yaml.safe_load((REPO / "conf/base/parameters_tune.yml").read_text())["tuning"]
    settings = tuning_settings(values)
    assert settings.storage == "sqlite:///${globals:caches.optuna}/${globals:dataset}/optuna.db"
    assert {knob.path for knob in settings.knobs} >= {
        "image_optimizer.lr",
        "text_optimizer.lr",
        "loss_weights.identification",
        "loss_weights.cmpm",
        "loss_weights.adversarial",
        "loss_weights.cmpc",
        "adversarial.label_smoothing",
        "adversarial.discriminator_steps",
        "sampler",
        "samples_per_identity",
        "batch_size",
    }


def test_a_dead_workers_trial_is_failed_and_rerun_with_its_parameters(worker, tmp_path):
    """A worker killed mid-trial leaves a RUNNING trial; once its heartbeat is stale, the next worker
    marks it failed and runs a copy with the same parameters first."""
    import time

    from timam.tuning.space import parse_search_space, suggest_overrides

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    values = tuning(storage, 1, heartbeat={"interval": 1, "grace_period": 1, "retry_failed": 1})
    study = open_study(tuning_settings(values))
    dead = study.ask()
    suggest_overrides(dead, parse_search_space(values["search_space"]), TRAINING)
    study._storage.record_heartbeat(dead._trial_id)  # what a worker's heartbeat thread does
    time.sleep(2.5)  # ... and then it died (well past the 1 s grace period, with margin for a busy machine)
    run_worker(None, None, None, None, values, worker=worker)
    first, retry = load(storage).trials
    assert first.state == optuna.trial.TrialState.FAIL
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.params == first.params
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == first.number


def test_a_trial_that_unfreezes_an_encoder_leaves_the_next_trial_untouched(worker):
    frozen = worker.config({"sampler": "identity"})
    before = worker.train(frozen)["history"]
    backbone = {k: v.clone() for k, v in worker.model.image_encoder.backbone.state_dict().items()}
    unfrozen = worker.config({"sampler": "identity", "freeze": {"image_backbone_epochs": 1}})
    changed = worker.train(unfrozen)["history"]
    assert changed[0]["loss_total"] == before[0]["loss_total"]  # frozen during epoch 1
    assert any(not torch.equal(v, backbone[k]) for k, v in worker.model.image_encoder.backbone.state_dict().items())
    after = worker.train(frozen)["history"]
    assert [row["loss_total"] for row in after] == [row["loss_total"] for row in before]
    for key, value in worker.model.image_encoder.backbone.state_dict().items():
        assert torch.equal(value, backbone[key]), key


def test_two_worker_processes_share_one_study_without_losing_or_duplicating_trials(demo, tmp_path):
    """Two processes at once on one SQLite study (scripts/two_worker_study.py shows it on PostgreSQL)."""
    import os
    import subprocess
    import sys

    demo_dir = tmp_path / "demo"
    tiny_captions(demo_dir)  # generated once, before the workers load it
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    script = REPO / "scripts" / "two_worker_study.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    open_study(tuning_settings({**tuning(storage, 2), "study_name": "two-workers"}))  # as the script does
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                "--worker",
                name,
                "--workdir",
                str(demo_dir),
                "--storage",
                storage,
                "--n-trials",
                "2",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("worker-0", "worker-1")
    ]
    for process in workers:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    trials = optuna.load_study(study_name="two-workers", storage=storage).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    by_worker = {name: [t for t in trials if t.user_attrs["worker"] == name] for name in ("worker-0", "worker-1")}
    assert [len(v) for v in by_worker.values()] == [2, 2]
    assert len({t.user_attrs["pid"] for t in trials}) == 2
