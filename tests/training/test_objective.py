"""The weighted objective: which terms are on, and which ids the matching losses pair on."""

import torch

from timam.losses import cmpm_loss
from timam.training.config import training_config
from timam.training.objective import TimamObjective


def _objective(**weights):
    config = training_config({"loss_weights": {"identification": 0.0, "cmpm": 0.0, "adversarial": 0.0, **weights}})
    return TimamObjective(embedding_dim=4, num_classes=2, config=config)


def test_only_weighted_terms_are_computed():
    objective = _objective(cmpm=1.0, triplet=0.5)
    image, text, labels = torch.randn(4, 4), torch.randn(4, 4), torch.tensor([0, 0, 1, 1])
    terms = objective.terms(image, text, labels, adversarial_on=True)
    assert set(terms) == {"cmpm", "triplet"}
    assert torch.allclose(objective.total(terms), terms["cmpm"] + 0.5 * terms["triplet"])


def test_matching_losses_pair_on_match_ids_not_class_labels():
    objective = _objective(cmpm=1.0)
    torch.manual_seed(0)
    image, text = torch.randn(4, 4), torch.randn(4, 4)
    classes, instances = torch.tensor([0, 0, 1, 1]), torch.arange(4)
    by_class = objective.terms(image, text, classes, adversarial_on=False)["cmpm"]
    by_instance = objective.terms(image, text, classes, adversarial_on=False, match_ids=instances)["cmpm"]
    assert torch.allclose(by_instance, sum(cmpm_loss(image, text, instances)))
    assert not torch.allclose(by_class, by_instance)


def test_adversarial_term_waits_for_warm_up():
    objective = _objective(adversarial=1.0)
    image, text, labels = torch.randn(4, 4), torch.randn(4, 4), torch.tensor([0, 1, 0, 1])
    assert "adversarial" not in objective.terms(image, text, labels, adversarial_on=False)
    assert "adversarial" in objective.terms(image, text, labels, adversarial_on=True)


def test_bad_adversarial_settings_fail_before_training():
    import pytest

    for bad in ({"mode": "mirror"}, {"discriminator_steps": 0}, {"label_smoothing": 1.0}):
        with pytest.raises(ValueError, match="training.adversarial"):
            training_config({"adversarial": bad})
