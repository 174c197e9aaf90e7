"""The project's configuration as Kedro loads it: every env's parameters build their typed blocks, the
paper preset shows the paper's numbers, one data root and one cache
block per env."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader

from timam.hooks import check_parameters
from timam.pipelines.evaluate.nodes import retrieval_report
from timam.settings import CONFIG_LOADER_ARGS

REPO = Path(__file__).resolve().parents[2]
ENVS = sorted(path.name for path in (REPO / "conf").iterdir() if path.is_dir() and path.name not in {"base", "local"})


@pytest.fixture(scope="module")
def conf(tmp_path_factory) -> Path:
    """The project's conf/ without the user's conf/local (an empty one instead)."""
    root = tmp_path_factory.mktemp("conf") / "conf"
    shutil.copytree(REPO / "conf", root, ignore=shutil.ignore_patterns("local"))
    (root / "local").mkdir()
    return root


def loader(conf: Path, env: str | None) -> OmegaConfigLoader:
    """The project's loader (settings.CONFIG_LOADER_ARGS) for ``env`` (None: base + the empty local)."""
    return OmegaConfigLoader(str(conf), env=env, **CONFIG_LOADER_ARGS)


@pytest.mark.parametrize("env", [None, *ENVS])
def test_every_env_builds_every_typed_parameter_block(conf, env):
    check_parameters(loader(conf, env)["parameters"])


def _metrics(dataset: str, images: int, captions: int) -> dict:
    rule = {"R@1": 50.0, "R@5": 70.0, "R@10": 80.0, "mAP": 40.0}
    return {
        "checkpoint_version": "2026-01-01T00.00.00.000Z",
        "checkpoint": {"best_epoch": 3, "val_t2i_R@1": 48.0},
        "protocol": {
            "name": "standard",
            "dataset": dataset,
            "split": "test",
            "relevance": "identity",
            "gallery": "unique images",
            "tie_rules": ["expected", "index"],
        },
        "counts": {"images": images, "captions": captions, "identities": 1000},
        "chance_t2i_R@1": 0.03,
        "results": {direction: {"expected": rule, "index": rule} for direction in ("text_to_image", "image_to_text")},
    }


def test_the_paper_env_report_shows_the_papers_cuhk_pedes_numbers(conf):
    evaluation = loader(conf, "paper")["parameters"]["evaluation"]
    assert evaluation["dataset"] == "cuhk_pedes_paper"  # its artifact folder, not a paper_results entry
    report = retrieval_report(_metrics(evaluation["dataset"], images=3074, captions=6156), evaluation)
    assert "Source: Sarafianos et al., ICCV 2019 (TIMAM), CUHK-PEDES test set." in report
    assert "| TIMAM (ResNet-101 + BERT) | 54.51 | 77.56 | 84.78 |" in report
    other_counts = retrieval_report(_metrics(evaluation["dataset"], images=1000, captions=2000), evaluation)
    assert "their test split has 3074 images, this run 1000" in other_counts and "| TIMAM (" not in other_counts


def test_the_cuhk_pedes_env_reports_the_same_numbers(conf):
    evaluation = loader(conf, "cuhk_pedes")["parameters"]["evaluation"]
    assert "| TIMAM (ResNet-101 + BERT) | 54.51 |" in retrieval_report(_metrics("cuhk_pedes", 3074, 6156), evaluation)


# Which source parameter names each env's data folder (ucm_parquet reads raw_annotations alone).
_SOURCE_FOLDER = {"text_c10": "data_root", "ucm_parquet": None}


@pytest.mark.parametrize("env", [None, *ENVS])
def test_each_env_names_its_data_root_once(conf, env):
    config = loader(conf, env)
    root = config["globals"]["data_root"]
    assert config["catalog"]["raw_annotations"]["filepath"].startswith(f"{root}/")
    source = config["parameters"]["source"]
    folder = _SOURCE_FOLDER.get(source["format"], "image_root")
    if folder is not None:
        assert source[folder] == root or source[folder].startswith(f"{root}/")
    for name in ("catalog.yml", "parameters.yml" if env else "parameters_prepare.yml"):
        text = (conf / (env or "base") / name).read_text()
        assert root not in text, f"conf/{env or 'base'}/{name} repeats the data root {root}: use ${{globals:data_root}}"


def test_the_side_caches_follow_one_globals_block(conf):
    def caches(params: dict) -> dict:
        return {
            "tokens": params["tokenization"]["cache_dir"],
            "frozen_features": params["training"]["feature_cache_dir"],
            "training_state": params["training"]["state_path"],
            "optuna": params["tuning"]["storage"],
        }

    assert caches(loader(conf, None)["parameters"]) == {
        "tokens": "data/04_feature/token_cache",
        "frozen_features": "data/05_model_input/demo/frozen_features",
        "training_state": "data/06_models/demo/training_state.pt",
        "optuna": "sqlite:///data/06_models/demo/optuna.db",
    }
    # conf/local/globals.yml moves two of them; the soft merge of globals keeps the others
    (conf / "local" / "globals.yml").write_text("caches: {frozen_features: /scratch/features, optuna: /scratch/db}\n")
    try:
        moved = caches(loader(conf, None)["parameters"])
    finally:
        (conf / "local" / "globals.yml").unlink()
    assert moved == {
        "tokens": "data/04_feature/token_cache",
        "frozen_features": "/scratch/features/demo/frozen_features",
        "training_state": "data/06_models/demo/training_state.pt",
        "optuna": "sqlite:////scratch/db/demo/optuna.db",
    }


def test_the_run_start_check_names_moved_keys_unknown_blocks_and_each_problem_once(conf):
    params = loader(conf, None)["parameters"]
    with pytest.raises(ValueError) as error:
        check_parameters({**params, "query": "a hat", "evalution": {}, "training": {**params["training"], "epoch": 1}})
    message = str(error.value)
    assert message.startswith("Parameters rejected before any node ran:\n- ")
    assert 'params query is now search.query: use --params "search.query=..."' in message
    assert "Unknown parameter evalution; did you mean 'evaluation'?" in message
    assert message.count("did you mean 'epochs'") == 1  # not repeated by every ablation variant
    assert len(message.splitlines()) == 4
