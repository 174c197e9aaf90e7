"""The attribute family on the shared training loop: AgNet-style hashing heads and the ACMM-style memory
learn on the tiny demo, and their checkpoints rebuild models that score exactly as before."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from tests.training.tiny_run import tiny_bert_model, tiny_captions
from timam.inference.interaction import pair_scores
from timam.inference.split_data import split_data
from timam.io.checkpoint_dataset import ModelCheckpointDataset
from timam.io.demo_dataset import DemoReidRawDataset
from timam.models.aligned_memory import AlignedMemoryConfig
from timam.models.attribute_family import AlignedMemoryModel, AttributeHashingModel
from timam.models.attribute_hashing import AttributeHashingConfig
from timam.studies.attributes import AttributeVocabularyConfig, dataset_labels, fit_vocabulary, split_targets
from timam.training.cached_split import CachedSplit
from timam.training.config import training_config
from timam.training.hashing import check_hashing_training, split_outputs, train_attribute_hashing
from timam.training.interaction import InteractionSplit, train_interaction

TERMS_OFF = {"identification": 0.0, "cmpm": 0.0, "triplet": 0.0, "adversarial": 0.0}
HASHING = {**TERMS_OFF, "attribute_prediction": 1.0, "similarity_preserving": 1.0, "quantization": 0.1}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("attribute_family")


@pytest.fixture(scope="module")
def tiny(workdir: Path):
    """The 12-identity demo, its labels, and the frozen encoders of the tiny runs: a ResNet-18 from
    a saved (random) state dict, so its outputs are cached, and a two-layer BERT of hidden size 16."""
    captions, tokens = tiny_captions(workdir)
    raw = DemoReidRawDataset(filepath=str(workdir / "raw" / "reid_raw.json")).load()
    weights = workdir / "resnet18.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    encoders = {
        "image_backbone": "resnet18",
        "image_library": "torchvision",
        "image_weights": str(weights),
        "image_size": (64, 32),
        "text_model": tiny_bert_model(workdir).text_model,
    }
    return captions, tokens, raw, encoders


def _training(workdir: Path, **values) -> dict:
    return {
        "epochs": 3,
        "batch_size": 16,
        "embed_batch_size": 16,
        "device": "cpu",
        "loss_weights": HASHING,
        "feature_cache_dir": str(workdir / "cache"),
        "image_optimizer": {"lr": 3e-3},
        "text_optimizer": {"lr": 3e-3},
        **values,
    }


def test_hashing_heads_learn_and_their_checkpoint_gives_the_same_codes(tiny, workdir: Path) -> None:
    captions, tokens, raw, encoders = tiny
    labels = dataset_labels(raw, AttributeVocabularyConfig())
    vocabulary = fit_vocabulary(captions, labels, AttributeVocabularyConfig(min_count=1))
    assert vocabulary.source == "labels" and "gender=male" in vocabulary.terms
    train, val, test = (split_data(captions, tokens, split) for split in ("train", "val", "test"))
    targets = split_targets(vocabulary, captions, train, labels)
    config = AttributeHashingConfig.from_dict(
        {**encoders, "num_attributes": len(vocabulary), "code_bits": 16, "attribute_hidden": 32, "hash_hidden": 32}
    )
    checkpoint, history = train_attribute_hashing(train, val, config, training_config(_training(workdir)), targets)
    assert list(history["epoch"]) == [1, 2, 3]
    assert history["loss_attribute_prediction"].iloc[-1] < history["loss_attribute_prediction"].iloc[0]
    assert history["loss_total"].iloc[-1] < history["loss_total"].iloc[0]
    assert checkpoint.metadata["val_t2i_R@1"] == history["val_t2i_R@1"].max()

    dataset = ModelCheckpointDataset(filepath=str(workdir / "agnet" / "model.safetensors"))
    dataset.save(checkpoint)
    restored = dataset.load()
    assert isinstance(restored.model, AttributeHashingModel) and restored.model.config == checkpoint.model.config
    assert restored.embedding_model is restored.model and restored.is_hashing

    def outputs(model):
        split = CachedSplit(model, test, batch_size=16, device=torch.device("cpu"), cache_dir=workdir / "cache")
        return split_outputs(model, split, torch.device("cpu"))

    (image, text), (image_again, text_again) = outputs(checkpoint.model), outputs(restored.model)
    assert image.relaxed.shape == (len(test.image_paths), 16) and text.attributes.shape == (
        test.num_captions,
        len(vocabulary),
    )
    for before, after in ((image, image_again), (text, text_again)):
        assert torch.equal(before.relaxed, after.relaxed) and torch.equal(before.attributes, after.attributes)


def test_settings_a_hashing_run_cannot_honour_are_refused(workdir: Path) -> None:
    for values, message in (
        ({"loss_weights": {**HASHING, "cmpm": 1.0}}, "cmpm"),
        ({"loss_weights": {**TERMS_OFF}}, "needs one of"),
        ({"freeze": {"text_model_epochs": 0}}, "frozen"),
        ({"augmentation": {"flip": True}}, "augmentation"),
    ):
        with pytest.raises(ValueError, match=message):
            check_hashing_training(training_config(_training(workdir, **values)))


def test_aligned_memory_learns_on_the_interaction_path_and_round_trips(tiny, workdir: Path) -> None:
    captions, tokens, _, encoders = tiny
    train, val, test = (split_data(captions, tokens, split) for split in ("train", "val", "test"))
    config = AlignedMemoryConfig.from_dict({**encoders, "joint_dim": 16, "memory_items": 4})
    training = training_config(_training(workdir, loss_weights={**TERMS_OFF, "triplet": 1.0}))
    checkpoint, history = train_interaction(train, val, config, training)
    assert history["loss_triplet"].iloc[-1] < history["loss_triplet"].iloc[0]
    assert isinstance(checkpoint.model, AlignedMemoryModel)

    dataset = ModelCheckpointDataset(filepath=str(workdir / "acmm" / "model.safetensors"))
    dataset.save(checkpoint)
    restored = dataset.load()
    assert isinstance(restored.model, AlignedMemoryModel) and restored.model.config == checkpoint.model.config
    inputs = InteractionSplit(checkpoint.model, test, (0,), training, torch.device("cpu"))
    regions, states, mask = inputs.regions[0], inputs.token_states, inputs.attention_mask
    before = pair_scores(checkpoint.model, regions, states, mask, device=torch.device("cpu"))
    after = pair_scores(restored.model, regions, states, mask, device=torch.device("cpu"))
    assert before.shape == (test.num_captions, len(test.image_paths))
    assert torch.equal(before, after)
    with pytest.raises(ValueError, match="ACMM-style"):
        restored.embedding_model  # noqa: B018
