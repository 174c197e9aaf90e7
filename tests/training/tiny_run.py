"""A tiny, complete training run on a generated demo, used by the resume and determinism tests.

Run as a script (``python tiny_run.py WORKDIR EPOCHS``) it writes WORKDIR/result.json; the tests
kill it part-way and run it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path

import torch

import timam  # first: the torchvision guard runs before transformers is imported
from timam.inference.split_data import split_data
from timam.io.demo_dataset import DemoReidRawDataset
from timam.models.config import ModelConfig
from timam.pipelines.prepare.nodes import build_caption_table, tokenize_captions
from timam.training.config import training_config
from timam.training.loop import train_timam

REPO = Path(__file__).resolve().parents[2]


def checkout_env(**extra: str) -> dict[str, str]:
    """The environment of a subprocess that runs the ``timam`` this test process imported (not
    necessarily the editable install's, which may point at another worktree), with this checkout's
    ``tests`` package importable."""
    source = Path(timam.__file__).resolve().parents[1]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), str(REPO)]), **extra}


def tiny_captions(workdir: Path):
    """The caption table and its tokens for a 12-identity demo (6 train, 3 val, 3 test)."""
    raw = DemoReidRawDataset(
        filepath=str(workdir / "raw" / "reid_raw.json"),
        generator={"num_identities": 12, "split_identities": [6, 3, 3], "seed": 3, "image_size": [16, 32]},
    ).load()
    captions, _ = build_caption_table(raw, {"format": "cuhk_pedes", "image_root": str(workdir / "raw" / "imgs")})
    tokens = tokenize_captions(
        captions, {"tokenizer": "offline:minilm", "max_length": 24, "cache_dir": str(workdir / "tok")}
    )
    return captions, tokens


TINY_MODEL = ModelConfig(
    num_classes=6,
    image_backbone="resnet18",
    image_library="torchvision",
    image_weights=None,
    image_size=(32, 16),
    text_encoder="fc_embed",
    word_embedding_dim=16,
    lstm_hidden=16,
    embedding_dim=16,
)


def tiny_inputs(workdir: Path):
    captions, tokens = tiny_captions(workdir)
    return split_data(captions, tokens, "train"), split_data(captions, tokens, "val"), TINY_MODEL


def tiny_bert_model(workdir: Path) -> ModelConfig:
    """TINY_MODEL with a randomly initialised two-layer BERT (hidden size 16) as its transformer.

    Saved once to WORKDIR/tiny_bert with its pooler, as real BERT checkpoints are, so that loading
    it goes through the same path as bert-base (``text_model`` is a directory). The vocabulary is
    the offline MiniLM tokenizer's, which made the demo's tokens. No dropout: ranks sharing a batch
    would draw other masks than one process does, and equality to one process is what the DDP
    tests check.
    """
    directory = workdir / "tiny_bert"
    if not (directory / "config.json").exists():
        from transformers import BertConfig, BertModel

        config = BertConfig(
            vocab_size=30522,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        with torch.random.fork_rng():
            torch.manual_seed(7)
            BertModel(config).save_pretrained(directory)
    return TINY_MODEL.replace(text_encoder="transformer", text_model=str(directory))


def run(
    workdir: Path, epochs: int, state_path: Path | None, save_every_steps: int = 0, *, keep_state: bool = False
) -> dict:
    train, val, model_config = tiny_inputs(workdir)
    config = training_config(
        {
            "epochs": epochs,
            "batch_size": 8,
            "embed_batch_size": 8,
            "device": "cpu",
            "loss_weights": {"adversarial": 0.5, "cmpc": 0.5},
            "adversarial": {"warmup_epochs": 1},
            "save_every_steps": save_every_steps,
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept = {"keep_state": True} if keep_state else {}  # only when asked: older versions lack it
        checkpoint, history = train_timam(train, val, model_config, config, state_path=state_path, **kept)
    digest = hashlib.sha256()
    for name, tensor in sorted(checkpoint.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    records = json.loads(history.drop(columns="seconds").to_json(orient="records", double_precision=15))
    return {"history": records, "weights": digest.hexdigest(), "best_epoch": checkpoint.metadata["best_epoch"]}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    directory = Path(sys.argv[1])
    result = run(directory, int(sys.argv[2]), directory / "state.pt")
    (directory / "result.json").write_text(json.dumps(result))
