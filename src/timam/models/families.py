"""The model families a checkpoint can hold, as types: which embed, and which only score pairs."""

from __future__ import annotations

from timam.models.attribute_family import AlignedMemoryModel, AttributeHashingModel
from timam.models.dual_encoder import DualEncoderModel
from timam.models.interaction import InteractionModel
from timam.models.timam import TimamModel

# The models TIMAM's objective terms train end to end (identification, CMPM, adversarial, contrastive).
ObjectiveModel = TimamModel | DualEncoderModel
# Models with an image and a caption embedding: they are evaluated, indexed and searched by their
# embeddings. An attribute-hashing model's embedding is its relaxed code, whose sign is its hash
# code: it is indexed and searched as packed bits by Hamming distance.
EmbeddingModel = ObjectiveModel | AttributeHashingModel
# Models that score (caption, image) pairs from regions and words and have no embedding.
PairScoreModel = InteractionModel | AlignedMemoryModel
# Every family.
AnyModel = EmbeddingModel | PairScoreModel
