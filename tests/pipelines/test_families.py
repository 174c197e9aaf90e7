"""The families pipeline: its namespaced rows, their parameters, the table, and a real run of one seed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from tests.kedro_project import copy_project, kedro
from timam.models.checkpoint import read_checkpoint
from timam.pipelines.families.nodes import row_parameters, summarise_families
from timam.pipelines.families.pipeline import (
    ATTRIBUTE_MODEL,
    ATTRIBUTE_SPACE_ROWS,
    DERIVED_LABELS,
    EMBEDDING_ROWS,
    HASHING_ROWS,
    INTERACTION_ROWS,
    MEMORY_ROWS,
    ROWS,
    SEEDS,
    TWO_STAGE,
    create_pipeline,
)
from timam.studies.families import SHARED_MODEL_KEYS

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"


def _parameters() -> tuple[dict, dict, dict]:
    base = yaml.safe_load((CONF / "parameters_train.yml").read_text())
    families = yaml.safe_load((CONF / "parameters_families.yml").read_text())["families"]
    return base["model"], base["training"], families


def test_every_row_has_parameters_of_its_family_and_namespaced_nodes() -> None:
    _, _, families = _parameters()
    assert list(families["rows"]) == [*EMBEDDING_ROWS, *INTERACTION_ROWS, *HASHING_ROWS, *MEMORY_ROWS]
    assert {families["rows"][row]["family"] for row in EMBEDDING_ROWS} == {"embedding"}
    assert {families["rows"][row]["family"] for row in INTERACTION_ROWS} == {"interaction"}
    assert {families["rows"][row]["family"] for row in HASHING_ROWS} == {"agnet"}
    assert {families["rows"][row]["family"] for row in MEMORY_ROWS} == {"acmm"}
    assert {families["rows"][row]["label"] for row in (*HASHING_ROWS, *MEMORY_ROWS)} == {"attribute"}
    assert [families["rows"][row]["model"]["code_bits"] for row in HASHING_ROWS] == [16, 32, 64, 128]
    nodes = {node.name: node for node in create_pipeline().nodes}
    for seed in SEEDS:
        for row in EMBEDDING_ROWS:
            assert f"families.{row}_seed{seed}.train_model" in nodes
            assert f"families.{row}_seed{seed}.rank_test_split" in nodes
        for row in (*INTERACTION_ROWS, *MEMORY_ROWS):
            assert f"families.{row}_seed{seed}.train_interaction_model" in nodes
            assert f"families.{row}_seed{seed}.rank_pair_scores" in nodes
        for row in HASHING_ROWS:
            train = nodes[f"families.{row}_seed{seed}.train_hashing_model"]
            assert "attribute_vocabulary" in train.inputs
            assert f"families.{row}_seed{seed}.score_hashing_codes" in nodes
            assert f"families.{row}_seed{seed}.rank_pair_scores" in nodes
        accuracy = nodes[f"families.{ATTRIBUTE_MODEL}_seed{seed}.attribute_accuracy_report"]
        assert accuracy.outputs == [
            f"families.{ATTRIBUTE_MODEL}_seed{seed}.attribute_accuracy",
            f"families.{ATTRIBUTE_MODEL}_seed{seed}.attribute_examples",
        ]
        for row in ATTRIBUTE_SPACE_ROWS:  # the seed's agnet_hash_64 model, scored in its attribute space
            pair_scores = f"families.{row}_seed{seed}.pair_scores"
            (score,) = [node for node in nodes.values() if node.outputs == [pair_scores]]
            assert score.inputs[0] == f"families.{ATTRIBUTE_MODEL}_seed{seed}.model_checkpoint"
        two_stage = nodes[f"families.two_stage_seed{seed}.two_stage_test_pairs"]
        first, second = TWO_STAGE
        assert two_stage.inputs[:3] == [
            f"families.{first}_seed{seed}.image_embeddings",
            f"families.{first}_seed{seed}.text_embeddings",
            f"families.{second}_seed{seed}.model_checkpoint",
        ]
    summary = nodes["families.summarise_families"]
    assert summary.inputs == (
        ["params:families"]
        + [f"families.{row}_seed{seed}.retrieval_metrics" for row in ROWS for seed in SEEDS]
        + [f"families.{ATTRIBUTE_MODEL}_seed{seed}.attribute_accuracy" for seed in SEEDS]
    )
    vocabulary = nodes["families.attributes.fit_attribute_vocabulary"]
    assert vocabulary.outputs == ["attribute_vocabulary"] and vocabulary.namespace == "families.attributes"


def test_interaction_rows_keep_the_base_encoders_and_embedding_rows_their_overrides() -> None:
    model, training, families = _parameters()
    model = {**model, "image_size": [256, 256], "image_views": 8}
    scan_model, scan_training = row_parameters(model, training, families, "scan_i2t", 2)
    assert {key: scan_model[key] for key in SHARED_MODEL_KEYS} == {key: model[key] for key in SHARED_MODEL_KEYS}
    assert scan_model["direction"] == "i2t" and scan_model["pooling"] == "lse" and scan_model["lambda_softmax"] == 4.0
    assert "lstm_hidden" not in scan_model and "text_encoder" not in scan_model
    assert scan_training["seed"] == 2 and scan_training["loss_weights"]["triplet"] == 1.0
    assert scan_training["state_path"] is None  # an interaction run keeps no resume state
    assert scan_model["lambda_lse"] == 5.0  # SCAN's Flickr30K i-t LSE
    timam_model, timam_training = row_parameters(model, training, families, "timam", 0)
    assert timam_model == model
    assert timam_training["loss_weights"]["adversarial"] == 1.0
    assert timam_training["state_path"].endswith("training_state_families_timam_seed0.pt")
    # An env that fine-tunes and augments (conf/paper) keeps its interaction rows frozen on cached inputs ...
    unfrozen = {**training, "freeze": {"image_backbone_epochs": 0}, "augmentation": {"flip": True}}
    _, scan_unfrozen = row_parameters(model, unfrozen, families, "scan_t2i", 0)
    assert scan_unfrozen["freeze"]["image_backbone_epochs"] is None and not scan_unfrozen["augmentation"]["flip"]
    # ... and a row that asks to train its encoders is refused with the parameters, before any node.
    scan = families["rows"]["scan_t2i"]
    asks = {**scan, "training": {**scan["training"], "freeze": {"image_backbone_epochs": None, "text_model_epochs": 0}}}
    rows = {**families["rows"], "scan_t2i": asks}
    with pytest.raises(ValueError, match="frozen"):
        row_parameters(model, training, {**families, "rows": rows}, "scan_t2i", 0)
    with pytest.raises(ValueError, match="no entry 'nope'"):
        row_parameters(model, training, families, "nope", 0)
    bad = {
        **families,
        "rows": {**families["rows"], "scan_t2i": {**families["rows"]["scan_t2i"], "model": {"pooling": "max"}}},
    }
    with pytest.raises(ValueError, match="pooling"):
        row_parameters(model, training, bad, "scan_t2i", 0)


def test_attribute_rows_keep_the_base_encoders_name_their_family_and_train_only_their_terms() -> None:
    model, training, families = _parameters()
    model = {**model, "image_size": [256, 256], "image_views": 8}
    hash_model, hash_training = row_parameters(model, training, families, "agnet_hash_32", 1)
    assert {key: hash_model[key] for key in SHARED_MODEL_KEYS} == {key: model[key] for key in SHARED_MODEL_KEYS}
    assert hash_model["family"] == "agnet" and hash_model["code_bits"] == 32
    assert hash_model["hash_hidden"] == families["agnet_model"]["hash_hidden"] and "num_attributes" not in hash_model
    weights = hash_training["loss_weights"]
    assert weights["identification"] == weights["cmpm"] == weights["adversarial"] == 0.0
    assert weights["attribute_prediction"] > 0 and weights["similarity_preserving"] > 0
    assert hash_training["seed"] == 1 and hash_training["state_path"] is None
    acmm_model, acmm_training = row_parameters(model, training, families, "acmm", 2)
    assert acmm_model["family"] == "acmm" and acmm_model["memory_items"] == families["acmm_model"]["memory_items"]
    assert acmm_training["loss_weights"]["triplet"] == 1.0 and acmm_training["state_path"] is None
    # A hashing row that also asks for TIMAM's terms is refused before any node runs.
    row = families["rows"]["agnet_hash_16"]
    asks = {**row, "training": {**row["training"], "loss_weights": {**row["training"]["loss_weights"], "cmpm": 1.0}}}
    with pytest.raises(ValueError, match="cmpm"):
        row_parameters(
            model, training, {**families, "rows": {**families["rows"], "agnet_hash_16": asks}}, "agnet_hash_16", 0
        )


def _metrics(r1: float, val: float | None, train_seconds: float) -> dict:
    rule = {"R@1": r1, "R@5": r1 + 10, "R@10": r1 + 20, "mAP": r1 + 5}
    results = {
        d: {"expected": dict(rule), "index": {**rule, "R@1": r1 - 1}} for d in ("text_to_image", "image_to_text")
    }
    return {
        "results": results,
        "checkpoint": {"val_t2i_R@1": val},
        "cost": {"train_seconds": train_seconds, "score_ms_per_query": 0.5, "bytes_per_image": 2048.0,
                 "search_ms_per_query": 0.25},
    }  # fmt: skip


def _accuracy(gender: float) -> dict:
    groups = {"gender": {"accuracy": gender, "majority": 50.0, "items": 12}}
    return {"branches": {branch: {"groups": groups, "mean_f1": 40.0, "terms": {}} for branch in ("image", "text")}}


def test_the_table_gives_mean_and_spread_over_seeds_with_the_cost() -> None:
    _, _, families = _parameters()
    runs = [_metrics(10.0 + seed, 20.0, 60.0) for row in ROWS for seed in SEEDS]
    two_stage = ROWS.index("two_stage")
    runs[3 * two_stage + 2] = _metrics(40.0, None, 90.0)  # two_stage seed 2; two-stage runs have no validation score
    hamming = 3 * ROWS.index(ATTRIBUTE_MODEL)
    runs[hamming : hamming + 3] = [
        {**run, "cost": {**run["cost"], "bytes_per_image": 8.0}} for run in runs[hamming : hamming + 3]
    ]
    accuracy = [_accuracy(gender) for gender in (90.0, 100.0, 95.0)]
    table, report = summarise_families(
        families, *runs, *accuracy, rows=ROWS, seeds_per_row=len(SEEDS), derived_labels=DERIVED_LABELS,
        accuracy_of=ATTRIBUTE_MODEL,
    )  # fmt: skip
    assert list(table["row"]) == list(ROWS)
    timam = table.set_index("row").loc["timam"]
    assert timam["family"] == "adversarial" and timam["seeds"] == 3
    assert timam["t2i R@1 mean"] == pytest.approx(11.0)
    assert timam["t2i R@1 std"] == pytest.approx(math.sqrt(2 / 3), abs=1e-3)
    assert timam["mR mean"] == pytest.approx(21.0)
    assert timam["mR index ties mean"] == pytest.approx(20.0 + 2 / 3, abs=1e-3)
    assert timam["train s mean"] == pytest.approx(60.0)
    assert table.set_index("row").loc["two_stage", "family"] == "two-stage"
    assert set(table.set_index("row").loc[[*HASHING_ROWS, *ATTRIBUTE_SPACE_ROWS, *MEMORY_ROWS], "family"]) == {
        "attribute"
    }
    assert "| interaction | scan_t2i | 11.00 ± 0.82 |" in report
    assert "score ms/query" in report and "bytes/image" in report and "search ms/query" in report
    assert table.set_index("row").loc[ATTRIBUTE_MODEL, "bytes/image mean"] == 8.0
    assert table.set_index("row").loc["timam", "search ms/query mean"] == 0.25
    assert "| gender | 95.0 ± 4.1 | 95.0 ± 4.1 | 50.0 ± 0.0 |" in report
    with pytest.raises(ValueError, match="runs for"):
        summarise_families(families, *runs[:-1], rows=ROWS, seeds_per_row=len(SEEDS), derived_labels=DERIVED_LABELS)


LOCAL_PARAMETERS = """
training:
  epochs: 1
  batch_size: 16
model:
  image_size: [64, 32]
families:
  two_stage: {k: 1000}   # above the gallery size: the two-stage ranking is the interaction model's alone
"""


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``kedro run --pipelines families`` for seed 0's TIMAM, SCAN t2i and two-stage rows, and the
    attribute family's vocabulary, agnet_hash_64 (with its accuracy report), float, re-rank and
    acmm rows, in a fresh process."""
    project = copy_project(tmp_path_factory.mktemp("families"))
    (project / "conf" / "local" / "parameters.yml").write_text(LOCAL_PARAMETERS)
    rows = ("timam", "scan_t2i", "two_stage", ATTRIBUTE_MODEL, *ATTRIBUTE_SPACE_ROWS, *MEMORY_ROWS)
    namespaces = ",".join(["families.attributes", *(f"families.{row}_seed0" for row in rows)])
    kedro(project, "run", "--pipelines", "prepare")  # --namespaces leaves out the shared, unnamespaced nodes
    kedro(project, "run", "--pipelines", "families", "--namespaces", namespaces)
    return project


def _saved_metrics(project: Path, run: str) -> dict:
    folder = project / "data/08_reporting/demo/families" / run / "retrieval_metrics.json"
    (version,) = [p.name for p in folder.iterdir()]
    return json.loads((folder / version / "retrieval_metrics.json").read_text())


def test_a_seed_of_the_families_runs_end_to_end_and_two_stage_at_full_k_is_the_interaction_ranking(one_seed) -> None:
    scan, two_stage, timam = (_saved_metrics(one_seed, f"{row}_seed0") for row in ("scan_t2i", "two_stage", "timam"))
    for metrics in (scan, two_stage, timam):
        assert set(metrics["results"]) == {"text_to_image", "image_to_text"}
        assert metrics["cost"]["score_ms_per_query"] > 0
        assert metrics["counts"] == timam["counts"]
    assert scan["checkpoint"]["val_t2i_R@1"] >= 0 and scan["cost"]["train_seconds"] > 0
    # k above the gallery: every item is re-scored, so two-stage ranks as the interaction model does
    # (its pairs scored one query at a time: equal up to float rounding of near-equal scores).
    for direction in ("text_to_image", "image_to_text"):
        for rule in ("expected", "optimistic", "pessimistic"):
            for key, value in scan["results"][direction][rule].items():
                assert two_stage["results"][direction][rule][key] == pytest.approx(value, abs=1e-6), (direction, rule)
    checkpoints = one_seed / "data/06_models/demo/families/scan_t2i_seed0/model_checkpoint.safetensors"
    assert len(list(checkpoints.iterdir())) == 1


def _versions(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def test_the_attribute_rows_run_end_to_end_on_one_versioned_vocabulary(one_seed) -> None:
    (vocabulary_version,) = _versions(one_seed / "data/04_feature/demo/attribute_vocabulary.json")
    vocabulary = json.loads((vocabulary_version / "attribute_vocabulary.json").read_text())
    assert vocabulary["source"] == "labels" and "gender=female" in vocabulary["terms"]
    checkpoints = one_seed / f"data/06_models/demo/families/{ATTRIBUTE_MODEL}_seed0/model_checkpoint.safetensors"
    (version,) = _versions(checkpoints)
    checkpoint = read_checkpoint(version / "model_checkpoint.safetensors")
    assert checkpoint.is_hashing and checkpoint.model.config.code_bits == 64
    assert checkpoint.metadata["attribute_vocabulary"]["terms"] == vocabulary["terms"]
    hashing, floats, rerank, acmm = (
        _saved_metrics(one_seed, f"{row}_seed0") for row in (ATTRIBUTE_MODEL, *ATTRIBUTE_SPACE_ROWS, *MEMORY_ROWS)
    )
    assert hashing["cost"]["bytes_per_image"] == 8 and floats["cost"]["bytes_per_image"] == 4 * len(vocabulary["terms"])
    assert rerank["cost"]["bytes_per_image"] == 8 + 4 * len(vocabulary["terms"])
    for metrics in (hashing, floats, rerank, acmm):
        assert metrics["cost"]["search_ms_per_query"] > 0 and set(metrics["results"]) == {
            "text_to_image",
            "image_to_text",
        }
    assert floats["checkpoint_version"] == rerank["checkpoint_version"] == hashing["checkpoint_version"]
    reports = one_seed / f"data/08_reporting/demo/families/{ATTRIBUTE_MODEL}_seed0"
    (accuracy,) = _versions(reports / "attribute_accuracy.json")
    record = json.loads((accuracy / "attribute_accuracy.json").read_text())
    assert record["checkpoint_version"] == version.name and "gender" in record["branches"]["image"]["groups"]
    (figure,) = _versions(reports / "attribute_examples.png")
    assert (figure / "attribute_examples.png").stat().st_size > 2000
