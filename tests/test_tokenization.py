"""Tokenisation with the offline MiniLM tokenizer is cached and invalidated by what matters."""

import logging

import torch

from timam.tokenization import cached_tokenize


def _tokenize(tmp_path, captions, max_length=16):
    ids = [f"c{i}" for i in range(len(captions))]
    return cached_tokenize(ids, captions, tokenizer_name="offline:minilm", max_length=max_length, cache_dir=tmp_path)


def test_real_words_become_known_tokens(tmp_path):
    bundle = _tokenize(tmp_path, ["A woman in a red coat.", "The man carries a black backpack."])
    ids = bundle.tensors["input_ids"]
    assert ids.shape == (2, 16) and ids.dtype == torch.int32
    assert not (ids == 100).any(), "[UNK] tokens mean the vocabulary was not loaded"
    assert bundle.tensors["attention_mask"].sum(dim=1).tolist()[0] > 5


def test_second_run_loads_from_cache(tmp_path, caplog):
    captions = ["a woman in a red coat", "a man in jeans"]
    first = _tokenize(tmp_path, captions)
    with caplog.at_level(logging.INFO, logger="timam.tokenization"):
        second = _tokenize(tmp_path, captions)
    assert "loaded from cache" in caplog.text
    assert torch.equal(first.tensors["input_ids"], second.tensors["input_ids"])
    assert len(list(tmp_path.glob("*.safetensors"))) == 1


def test_changed_captions_or_length_tokenise_again(tmp_path):
    _tokenize(tmp_path, ["a woman in a red coat"])
    _tokenize(tmp_path, ["a woman in a blue coat"])
    _tokenize(tmp_path, ["a woman in a blue coat"], max_length=8)
    assert len(list(tmp_path.glob("*.safetensors"))) == 3
