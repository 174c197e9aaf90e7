"""The Markdown report: mR, and published numbers only beside a run of the same protocol."""

from __future__ import annotations

import copy

from timam.evaluation.report import markdown_report, mean_recall


def _metrics(relevance="identity", images=3074, captions=6156) -> dict:
    values = {"R@1": 50.0, "R@5": 70.0, "R@10": 80.0, "mAP": 40.0, "mINP": 20.0}
    return {
        "checkpoint_version": "2026-01-01T00.00.00.000Z",
        "checkpoint": {"best_epoch": 3, "val_t2i_R@1": 49.0},
        "protocol": {
            "dataset": "cuhk_pedes",
            "split": "test",
            "relevance": relevance,
            "gallery": "unique images",
            "tie_rules": ["expected", "index"],
        },
        "counts": {"images": images, "captions": captions, "identities": 1000},
        "chance_t2i_R@1": 0.1,
        "results": {
            d: {"expected": dict(values), "index": {**values, "R@1": 52.0}} for d in ("text_to_image", "image_to_text")
        },
    }


PAPER = {
    "source": "TIMAM paper",
    "relevance": "identity",
    "counts": {"images": 3074, "captions": 6156},
    "rows": [{"method": "TIMAM", "text_to_image": {"R@1": 54.51, "R@5": 77.56, "R@10": 84.78}}],
}


def test_mean_recall_is_the_mean_of_six_recalls():
    metrics = _metrics()
    assert mean_recall(metrics["results"], "expected") == (50 + 70 + 80) / 3
    assert mean_recall(metrics["results"], "index") == (52 + 70 + 80) / 3
    del metrics["results"]["image_to_text"]["expected"]["R@5"]
    assert mean_recall(metrics["results"], "expected") is None


def test_paper_numbers_beside_ours_for_the_same_protocol():
    report = markdown_report(_metrics(), PAPER)
    assert "| TIMAM | 54.51 | 77.56 | 84.78 | – | – | – | – |" in report
    assert "| **this run** (expected ties) | 50.00 | 70.00 | 80.00 | 50.00 | 70.00 | 80.00 | 66.67 |" in report
    assert "| **this run** (index ties) | 52.00 |" in report
    assert "Source: TIMAM paper." in report


def test_no_paper_numbers_is_said():
    assert "No published numbers for this dataset." in markdown_report(_metrics(), None)
    assert "No published numbers for this dataset." in markdown_report(_metrics(), {"rows": []})


def test_other_protocol_or_gallery_is_not_set_beside_ours():
    report = markdown_report(_metrics(relevance="instance"), PAPER)
    assert "not comparable" in report and "identity relevance, this run instance" in report
    assert "| TIMAM |" not in report
    report = markdown_report(_metrics(images=24, captions=48), PAPER)
    assert "their test split has 3074 images, this run 24" in report


def test_mr_only_rows_and_mr_line():
    metrics = _metrics(relevance="instance", images=210, captions=1050)
    metrics["mR"] = {"expected": 66.6667, "index": 67.3333}
    paper = {
        "relevance": "instance",
        "counts": {"images": 210, "captions": 1050},
        "rows": [{"method": "VSE++", "mR": 36.93}],
    }
    report = markdown_report(copy.deepcopy(metrics), paper)
    assert "| VSE++ | – | – | – | – | – | – | 36.93 |" in report
    assert "mR (mean of R@1/5/10 in both directions): 66.67 (expected), 67.33 (index)" in report


def test_a_run_without_a_validation_score_of_its_own_reports_a_dash():
    """Two-stage runs combine two checkpoints, each chosen on validation: none is theirs to report."""
    metrics = _metrics()
    metrics["checkpoint"] = {"val_t2i_R@1": None}
    assert "val text->image R@1 –)" in markdown_report(metrics, None)
    metrics["checkpoint"] = {"best_epoch": 3, "val_t2i_R@1": 41.256}
    assert "(best epoch 3, val text->image R@1 41.26)" in markdown_report(metrics, None)
