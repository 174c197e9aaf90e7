"""A tiny open_clip checkpoint through the project, each command a real `kedro run` on a tiny demo:
zero-shot evaluation, fine-tuning with InfoNCE, with SDM and with TIMAM's L_I + L_M + L_D, and an
evaluate-only rerun that scores a fine-tuned checkpoint exactly as its training run did."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.kedro_project import copy_project, kedro
from tests.models.dual_encoders import OPEN_CLIP_NAME, open_clip_checkpoint

ONLY = "training.loss_weights.identification=0,training.loss_weights.cmpm=0,training.loss_weights.adversarial=0"
# Each objective's --params; InfoNCE also trains both towers from the first epoch (fine-tuning end to end).
OBJECTIVES = {
    "infonce": f"{ONLY},training.loss_weights.infonce=1,training.freeze.image_backbone_epochs=0,"
    "training.freeze.text_model_epochs=0",
    "sdm": f"{ONLY},training.loss_weights.sdm=1",
    "adversarial": "training.loss_weights.identification=1,training.loss_weights.cmpm=1",  # L_I + L_M + L_D
}


def parameters(config_file: Path, checkpoint: Path) -> str:
    return f"""
tokenization: {{tokenizer: "open_clip:{OPEN_CLIP_NAME}", max_length: 16}}
model:
  family: dual_encoder
  dual_encoder: {{library: open_clip, model_name: {OPEN_CLIP_NAME}, pretrained: "{checkpoint}",
                  model_config_file: "{config_file}"}}
training: {{epochs: 2, batch_size: 16, adversarial: {{warmup_epochs: 0}}}}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    config_file, checkpoint = open_clip_checkpoint(tmp_path_factory.mktemp("weights"))
    root = tmp_path_factory.mktemp("project")
    return copy_project(root, parameters=parameters(config_file, checkpoint))


def versions(project: Path, dataset: str) -> list[str]:
    folder = project / "data" / dataset
    return sorted(path.name for path in folder.iterdir() if any(path.iterdir()))


def metrics(project: Path, version: str) -> dict:
    path = project / "data/08_reporting/demo/retrieval_metrics.json" / version / "retrieval_metrics.json"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def zero_shot(project: Path) -> dict:
    kedro(project, "run", "--pipelines", "zero_shot")
    (version,) = versions(project, "08_reporting/demo/retrieval_metrics.json")
    return metrics(project, version)


def test_zero_shot_scores_the_pretrained_model_and_names_its_weights(zero_shot):
    pretrained = zero_shot["checkpoint"]["pretrained"]
    assert pretrained["model_name"] == OPEN_CLIP_NAME and set(pretrained["sha256"]) == {"tiny_clip.pt"}
    assert len(pretrained["sha256"]["tiny_clip.pt"]) == 64
    assert zero_shot["results"]["text_to_image"]["expected"]["R@1"] >= 0


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_fine_tuning_with_each_objective_writes_a_checkpoint_and_its_scores(project, zero_shot, objective):
    before = set(versions(project, "06_models/demo/model_checkpoint.safetensors"))
    kedro(project, "run", "--params", OBJECTIVES[objective])
    (version,) = set(versions(project, "06_models/demo/model_checkpoint.safetensors")) - before
    record = metrics(project, version)
    assert record["checkpoint_version"] == version and record["training"]["loss_weights"][objective] == 1.0
    assert record["checkpoint"]["best_epoch"] in (1, 2) and "pretrained" not in record["checkpoint"]
    history = project / "data/08_reporting/demo/training_history.csv" / version / "training_history.csv"
    assert pd.read_csv(history)["epoch"].tolist() == [1, 2]
    assert f"loss_{objective}" in pd.read_csv(history).columns
    assert record["results"] != zero_shot["results"]


def test_an_evaluate_only_rerun_scores_a_fine_tuned_checkpoint_identically(project, zero_shot):
    checkpoints = versions(project, "06_models/demo/model_checkpoint.safetensors")
    trained = [v for v in checkpoints if "pretrained" not in metrics(project, v)["checkpoint"]]
    version = trained[-1]
    first = metrics(project, version)
    before = set(versions(project, "08_reporting/demo/retrieval_metrics.json"))
    kedro(project, "run", "--pipelines", "evaluate", "--load-versions", f"model_checkpoint:{version}")
    (rerun,) = set(versions(project, "08_reporting/demo/retrieval_metrics.json")) - before
    again = metrics(project, rerun)
    assert again["checkpoint_version"] == version and again["results"] == first["results"]


def test_the_zero_shot_checkpoint_indexes_and_searches_like_any_other(project, zero_shot):
    """No training at all: the pretrained model indexes the demo photos and finds each first at score 1."""
    from timam.search import Searcher

    kedro(
        project, "run", "--pipelines", "index", "--load-versions", f"model_checkpoint:{zero_shot['checkpoint_version']}"
    )
    searcher = Searcher.open(project / "data/07_model_output/demo/image_index", project=project, device="cpu")
    assert searcher.checkpoint_version == zero_shot["checkpoint_version"]
    assert searcher.encoder.tokenizer_name == f"open_clip:{OPEN_CLIP_NAME}"
    first = searcher.path(0)  # relative to the project, as the index lists the demo images
    best = searcher.by_image(project / first, k=1)[0]
    assert best.path == first and f"{best.score:.3f}" == "1.000"
    assert len(searcher.by_text("a man in a red shirt", k=3)) == 3
