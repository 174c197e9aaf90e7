"""The text encoder trains every parameter it holds: no head whose output is never used."""

from __future__ import annotations

import torch

from timam.models.checkpoint import checkpoint_tensors, restore_model
from timam.models.config import ModelConfig
from timam.models.text_encoder import TextEncoder
from timam.models.timam import TimamModel

TINY_BERT = {
    "model_type": "bert",
    "vocab_size": 64,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 32,
}


def _config() -> ModelConfig:
    return ModelConfig(
        num_classes=3,
        image_backbone="resnet18",
        image_library="torchvision",
        image_weights=None,
        image_size=(32, 32),
        text_encoder="transformer",
        transformer_config=TINY_BERT,
        lstm_hidden=8,
        embedding_dim=8,
    )


def test_every_transformer_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    encoder = TextEncoder(_config(), pretrained=False)
    input_ids = torch.randint(1, 64, (4, 10))
    attention_mask = torch.ones(4, 10, dtype=torch.long)
    attention_mask[1, 6:] = 0
    encoder(input_ids, attention_mask).square().sum().backward()
    without_gradient = [name for name, p in encoder.named_parameters() if p.requires_grad and p.grad is None]
    assert without_gradient == []
    assert not any("pooler" in name for name, _ in encoder.named_parameters())


def test_checkpoint_with_the_old_pooler_weights_still_loads() -> None:
    model = TimamModel(_config(), pretrained=False)
    tensors = checkpoint_tensors(model)
    old = {
        **tensors,
        "text_encoder.transformer.pooler.dense.weight": torch.zeros(16, 16),
        "text_encoder.transformer.pooler.dense.bias": torch.zeros(16),
    }
    restored = restore_model(_config().to_dict(), old, source="old.safetensors")
    assert all(torch.equal(restored.state_dict()[name], tensor) for name, tensor in tensors.items())
