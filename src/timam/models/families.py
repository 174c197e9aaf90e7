"""The model families a checkpoint can hold, as types: which embed, and which only score pairs."""

from __future__ import annotations

from timam.models.dual_encoder import DualEncoderModel
from timam.models.interaction import InteractionModel
from timam.models.timam import TimamModel

# Models with an image and a caption embedding: they are evaluated, indexed and searched by cosine.
EmbeddingModel = TimamModel | DualEncoderModel
# Every family; an interaction model scores (caption, image) pairs and has no embedding.
AnyModel = TimamModel | DualEncoderModel | InteractionModel
