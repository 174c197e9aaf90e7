"""``training.precision: bfloat16`` on the CPU: the backbone and the transformer compute in bfloat16,
and every embedding, every loss input and the validation gallery stay float32.

Under autocast a Linear returns bfloat16 whatever its input, so a projection inside the autocast
block rounds the embeddings to bfloat16 before every loss and in the gallery; the trainer closes
the block before the projections. CPU autocast takes the same code path as CUDA's.
"""

from __future__ import annotations

import warnings
from collections import defaultdict

import pytest
import torch

import timam.training.cached_split as cached_split
import timam.training.objective as objective
from tests.training.test_trainer_step import ALL_TERMS, make_trainer, one_step
from timam.training.config import training_config
from timam.training.objective import TimamObjective

LOSSES = ("cmpm_loss", "cmpc_loss", "hardest_negative_triplet_loss", "encoder_adversarial_loss", "discriminator_loss")


def _spy(trainer, monkeypatch) -> dict[str, set[torch.dtype]]:
    """The dtypes seen by name: what the backbone and a transformer layer output (bf16 under autocast),
    the projections' outputs, the objective's embeddings before it touches them, every loss's inputs."""
    seen: dict[str, set[torch.dtype]] = defaultdict(set)
    model = trainer.model

    def hook(name):
        def record(module, inputs, output):
            seen[name].add(output.dtype)

        return record

    model.image_encoder.backbone.register_forward_hook(hook("backbone"))
    # Its own output comes from a LayerNorm, which autocast runs in float32: watch a layer's matmul.
    model.text_encoder.transformer.encoder.layer[0].attention.self.query.register_forward_hook(hook("transformer"))
    model.image_encoder.projection.register_forward_hook(hook("image projection"))
    model.text_encoder.projection.register_forward_hook(hook("text projection"))
    trainer.objective.identification.register_forward_hook(
        lambda module, inputs, output: seen["loss inputs"].update(t.dtype for t in inputs[:2])
    )
    terms = TimamObjective.terms

    def spy_terms(self, image_emb, text_emb, *args, **kwargs):
        seen["image embeddings"].add(image_emb.dtype)
        seen["text embeddings"].add(text_emb.dtype)
        return terms(self, image_emb, text_emb, *args, **kwargs)

    monkeypatch.setattr(TimamObjective, "terms", spy_terms)
    for name in LOSSES:
        loss = getattr(objective, name)

        def spy_loss(*args, _loss=loss, **kwargs):
            tensors = [value for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor)]
            seen["loss inputs"].update(t.dtype for t in tensors if t.is_floating_point())
            return _loss(*args, **kwargs)

        monkeypatch.setattr(objective, name, spy_loss)
    return seen


FLOAT32 = {torch.float32}
BFLOAT16 = {torch.bfloat16}


def test_bfloat16_training_of_both_encoders_keeps_embeddings_losses_and_gallery_float32(tmp_path, monkeypatch):
    trainer, generator = make_trainer(
        tmp_path, {**ALL_TERMS, "precision": "bfloat16", "freeze": {"image_backbone_epochs": 0, "text_model_epochs": 0}}
    )
    seen = _spy(trainer, monkeypatch)
    one_step(trainer, generator)
    assert seen["backbone"] == BFLOAT16 and seen["transformer"] == BFLOAT16  # the bf16 path ran
    for name in ("image projection", "text projection", "image embeddings", "text embeddings", "loss inputs"):
        assert seen[name] == FLOAT32, name
    seen.clear()
    image_emb, text_emb = trainer.validation_embeddings()  # images decoded and embedded: the gallery
    assert seen["backbone"] == BFLOAT16 and seen["transformer"] == BFLOAT16
    assert seen["image projection"] == FLOAT32 and seen["text projection"] == FLOAT32
    assert image_emb.dtype == text_emb.dtype == torch.float32


def test_bfloat16_caches_of_frozen_encoders_feed_float32_embeddings(tmp_path, monkeypatch):
    """Frozen parts: their cached outputs are computed in bfloat16 too (the feature caching gets the
    precision), and the heads on them give float32 embeddings, losses and validation gallery."""
    asked = []
    for name in ("image_outputs", "text_outputs"):
        original = getattr(cached_split, name)
        monkeypatch.setattr(
            cached_split, name, lambda *a, _f=original, **k: asked.append(k["precision"]) or _f(*a, **k)
        )
    trainer, generator = make_trainer(tmp_path, {**ALL_TERMS, "precision": "bfloat16"})
    seen = _spy(trainer, monkeypatch)
    trainer.set_epoch(1)  # frozen, so cached
    trainer.prepare_caches()
    assert asked == ["bfloat16"] * 4  # image features and token states of train and val
    assert seen["backbone"] == BFLOAT16 and seen["transformer"] == BFLOAT16
    seen.clear()
    one_step(trainer, generator)
    for name in ("image projection", "text projection", "image embeddings", "text embeddings", "loss inputs"):
        assert seen[name] == FLOAT32, name
    image_emb, text_emb = trainer.validation_embeddings()
    assert image_emb.dtype == text_emb.dtype == torch.float32


def test_precision_is_checked_and_auto_means_float32_on_the_cpu(tmp_path):
    with pytest.raises(ValueError, match="training.precision must be one of"):
        training_config({"precision": "float16"})
    trainer, generator = make_trainer(tmp_path, {"freeze": {"image_backbone_epochs": 0}}, bert=False)
    seen = _spy_backbone(trainer)
    one_step(trainer, generator)
    assert seen == FLOAT32


def _spy_backbone(trainer) -> set[torch.dtype]:
    seen: set[torch.dtype] = set()
    trainer.model.image_encoder.backbone.register_forward_hook(lambda m, i, output: seen.add(output.dtype))
    return seen


def test_a_training_run_computes_its_feature_caches_in_its_precision(tmp_path, monkeypatch):
    from tests.training.tiny_run import tiny_bert_model, tiny_inputs
    from timam.training.loop import train_timam

    asked = []
    for name in ("image_outputs", "text_outputs"):
        original = getattr(cached_split, name)
        monkeypatch.setattr(
            cached_split, name, lambda *a, _f=original, _n=name, **k: asked.append((_n, k["precision"])) or _f(*a, **k)
        )
    train, val, _ = tiny_inputs(tmp_path)
    values = {"epochs": 1, "batch_size": 8, "embed_batch_size": 8, "device": "cpu", "precision": "bfloat16"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_timam(train, val, tiny_bert_model(tmp_path), training_config(values))
    assert sorted(asked) == [("image_outputs", "bfloat16")] * 2 + [("text_outputs", "bfloat16")] * 2
