"""AgNet-style heads: the config a checkpoint rebuilds them from, the attribute space, the codes and
their packing for Hamming ranking, and a few hundred tiny training steps that the losses drive."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from timam.config import ParameterError
from timam.losses.hashing import (
    attribute_prediction_loss,
    identity_similarity,
    quantization_loss,
    similarity_preserving_loss,
)
from timam.models.attribute_hashing import (
    AttributeHashingConfig,
    AttributeHashingHeads,
    binary_codes,
    mean_token_state,
)
from timam.retrieval.hamming import hamming_distances, pack_codes, unpack_codes


def _config(**values) -> AttributeHashingConfig:
    return AttributeHashingConfig.from_dict({"num_attributes": 6, "attribute_hidden": 8, "hash_hidden": 8, **values})


def test_config_round_trips_through_a_checkpoint_header_and_names_its_family() -> None:
    config = _config(code_bits=32, shared_hash_network=False)
    header = json.loads(json.dumps(config.to_dict()))
    assert header["family"] == "agnet" and header["code_bits"] == 32
    assert AttributeHashingConfig.from_dict(header) == config
    assert AttributeHashingConfig.is_config_of(header) and not AttributeHashingConfig.is_config_of({"family": "acmm"})
    with pytest.raises(ValueError, match="'acmm'"):
        AttributeHashingConfig.from_dict({**header, "family": "acmm"})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"code_bits": 24}, r"model.code_bits must be one of \[16, 32, 64, 128\], got 24"),
        ({"code_bit": 32}, "did you mean 'code_bits'"),
        ({"num_attributes": 0}, "num_attributes must be greater than or equal to 1"),
    ],
)
def test_config_refuses_bad_values_and_unknown_keys(values: dict, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        AttributeHashingConfig.from_dict({"num_attributes": 6, **values})


def test_heads_give_logits_attributes_and_relaxed_codes_of_k_bits() -> None:
    torch.manual_seed(0)
    heads = AttributeHashingHeads(_config(code_bits=16), image_feature_dim=5, text_state_dim=4)
    image = heads.image_outputs(torch.randn(3, 5))
    text = heads.text_outputs(torch.randn(2, 7, 4), torch.ones(2, 7))
    assert image.logits.shape == image.attributes.shape == (3, 6) and text.relaxed.shape == (2, 16)
    assert torch.equal(image.attributes, torch.sigmoid(image.logits))
    assert bool((image.relaxed.abs() < 1).all())
    assert sum(isinstance(layer, nn.Linear) for layer in heads.image_hash) == 3


def test_padding_tokens_never_change_the_text_outputs() -> None:
    torch.manual_seed(1)
    heads = AttributeHashingHeads(_config(), image_feature_dim=5, text_state_dim=4)
    states, mask = torch.randn(2, 5, 4), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    changed = states.clone()
    changed[0, 3:] = 1e6
    assert torch.equal(heads.text_outputs(states, mask).relaxed, heads.text_outputs(changed, mask).relaxed)
    assert torch.allclose(mean_token_state(states, mask)[0], states[0, :3].mean(dim=0))
    with pytest.raises(ValueError, match="at least one real token"):
        mean_token_state(states, torch.tensor([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]]))


@pytest.mark.parametrize("shared", [True, False])
def test_a_shared_hash_network_gives_equal_attribute_vectors_equal_codes(shared: bool) -> None:
    torch.manual_seed(2)
    heads = AttributeHashingHeads(_config(shared_hash_network=shared), image_feature_dim=4, text_state_dim=4)
    heads.text_predictor.load_state_dict(heads.image_predictor.state_dict())  # same attribute vectors
    features = torch.randn(3, 4)
    image = heads.image_outputs(features).relaxed
    text = heads.text_outputs(features[:, None, :], torch.ones(3, 1)).relaxed
    assert torch.equal(image, text) == shared
    names = list(heads.state_dict())
    assert len(names) == len(set(names)) and any(name.startswith("text_hash") for name in names) != shared


def test_codes_are_the_signs_and_pack_into_k_over_8_bytes_for_hamming_ranking() -> None:
    relaxed = torch.tensor([[0.3, -0.2, 0.0, 0.9, -0.9, 0.1, -0.5, 0.7], [-0.1, 0.2, 0.4, -0.3, 0.5, -0.6, 0.8, 0.05]])
    codes = binary_codes(relaxed)
    assert codes.tolist()[0] == [1, -1, -1, 1, -1, 1, -1, 1]
    packed = pack_codes(relaxed)
    assert packed.dtype == torch.uint8 and packed.shape == (2, 1)
    assert torch.equal(unpack_codes(packed), codes)
    # Hamming distance = (K - <b_i, b_j>) / 2 for +-1 codes
    expected = ((8 - codes @ codes.T) / 2).to(torch.int32)
    assert torch.equal(hamming_distances(packed, packed), expected)


def _toy_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four identities, each with its own attributes; features are noisy codes of the identity."""
    generator = torch.Generator().manual_seed(3)
    identities = torch.arange(4).repeat_interleave(3)
    truth = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 1, 1, 0, 1, 0], [1, 1, 0, 1, 0, 0], [0, 0, 0, 1, 1, 1.0]])
    mixing = torch.randn(6, 5, generator=generator)
    image = truth[identities] @ mixing + 0.05 * torch.randn(12, 5, generator=generator)
    text = (truth[identities] @ torch.randn(6, 4, generator=generator))[:, None, :]
    return image, text, identities, truth[identities], truth


def test_the_three_losses_train_the_heads_to_identity_preserving_codes() -> None:
    torch.manual_seed(4)
    heads = AttributeHashingHeads(_config(code_bits=16, attribute_hidden=16), image_feature_dim=5, text_state_dim=4)
    image, text, identities, targets, _ = _toy_batch()
    similarity = identity_similarity(identities, identities)
    optimiser = torch.optim.Adam(heads.parameters(), lr=0.005)
    for _ in range(300):
        v, t = heads.image_outputs(image), heads.text_outputs(text, torch.ones(12, 1))
        loss = (
            attribute_prediction_loss(v.logits, targets)
            + attribute_prediction_loss(t.logits, targets)
            + similarity_preserving_loss(v.relaxed, t.relaxed, similarity)
            + 0.1 * (quantization_loss(v.relaxed) + quantization_loss(t.relaxed))
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        v, t = heads.image_outputs(image), heads.text_outputs(text, torch.ones(12, 1))
    assert torch.equal((v.logits > 0).float(), targets) and torch.equal((t.logits > 0).float(), targets)
    distances = hamming_distances(pack_codes(v.relaxed), pack_codes(t.relaxed)).float()
    same = similarity.bool()
    assert distances[same].max() < distances[~same].min()  # every match nearer than every non-match
