"""Train and tune build the model from the data the same way (timam.training.model_setup)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import timam.pipelines.train.nodes as train_nodes
import timam.pipelines.tune.nodes as tune_nodes
from timam.formats.tensor_bundle import TensorBundle
from timam.models.config import ModelConfig
from timam.training.model_setup import model_config_from_data

MODEL = {
    "image_backbone": "resnet18",
    "image_library": "torchvision",
    "image_weights": None,
    "image_size": [32, 16],
    "text_encoder": "fc_embed",
    "word_embedding_dim": 8,
    "lstm_hidden": 8,
    "embedding_dim": 16,
}


class Built(Exception):
    """Raised by the stand-ins of train_timam / run_worker, carrying the model config they got."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__("built")
        self.config = config


def _data(vocab_size: int = 1000, tokenizer: str = "offline:minilm") -> tuple[pd.DataFrame, TensorBundle]:
    captions = pd.DataFrame(
        {
            "caption_id": [f"c{i}" for i in range(8)],
            "caption": ["a caption"] * 8,
            "image_path": [f"{i}.jpg" for i in range(8)],
            "split": ["train"] * 4 + ["val"] * 2 + ["test"] * 2,
            "label": [0, 1, 2, 3, -1, -1, -1, -1],
        }
    )
    tokens = TensorBundle(
        {"input_ids": torch.ones(8, 4, dtype=torch.int32), "attention_mask": torch.ones(8, 4, dtype=torch.int8)},
        {"tokenizer": tokenizer, "vocab_size": vocab_size, "caption_ids": captions["caption_id"].tolist()},
    )
    return captions, tokens


def _built_by_train(monkeypatch, model, captions, tokens) -> ModelConfig:
    def stand_in(train, val, model_config, config, **kwargs):
        raise Built(model_config)

    monkeypatch.setattr(train_nodes, "train_timam", stand_in)
    monkeypatch.setattr(train_nodes, "split_data", lambda *args: None)
    with pytest.raises(Built) as built:
        train_nodes.train_model(captions, tokens, model, {"epochs": 1})
    return built.value.config


def _built_by_tune(monkeypatch, model, captions, tokens) -> ModelConfig:
    def stand_in(train, val, model_config, training, tuning, **kwargs):
        raise Built(model_config)

    monkeypatch.setattr(tune_nodes, "run_worker", stand_in)
    monkeypatch.setattr(tune_nodes, "split_data", lambda *args: None)
    with pytest.raises(Built) as built:
        tune_nodes.tune_hyperparameters(captions, tokens, model, {"epochs": 1}, {"n_trials": 1})
    return built.value.config


def test_train_and_tune_build_the_same_model_from_the_same_parameters(monkeypatch):
    captions, tokens = _data(vocab_size=1000)  # FC-Embed with a vocabulary that is not BERT's 30,522
    by_train = _built_by_train(monkeypatch, MODEL, captions, tokens)
    by_tune = _built_by_tune(monkeypatch, MODEL, captions, tokens)
    assert by_train == by_tune == model_config_from_data(MODEL, captions, tokens.metadata)
    assert by_tune.vocab_size == 1000 and by_tune.num_classes == 4


def test_both_refuse_tokens_of_another_tokenizer_than_the_text_model(monkeypatch):
    captions, tokens = _data(tokenizer="bert-base-uncased")
    model = {**MODEL, "text_encoder": "transformer", "text_model": "offline:minilm"}
    for build in (_built_by_train, _built_by_tune):
        with pytest.raises(
            ValueError, match="caption_tokens were made by tokenizer 'bert-base-uncased' but the text model"
        ):
            build(monkeypatch, model, captions, tokens)


def test_the_data_fixes_the_class_count_and_the_vocabulary():
    captions, tokens = _data(vocab_size=1000)
    with pytest.raises(ValueError, match="model.num_classes is counted from the train split"):
        model_config_from_data({**MODEL, "num_classes": 9}, captions, tokens.metadata)
    with pytest.raises(
        ValueError, match="model.vocab_size is 30522 but caption_tokens come from a tokenizer with 1000"
    ):
        model_config_from_data({**MODEL, "vocab_size": 30522}, captions, tokens.metadata)
    assert model_config_from_data({**MODEL, "vocab_size": 1000}, captions, tokens.metadata).vocab_size == 1000
    assert model_config_from_data(MODEL, captions, {"tokenizer": "offline:minilm"}).vocab_size == 30522  # older tokens
