"""The weighted TIMAM objective: which loss terms are on, and their sum, for one batch."""

from __future__ import annotations

import torch
from torch import nn

from timam.losses import (
    IdentificationLoss,
    ModalityDiscriminator,
    cmpc_loss,
    cmpm_loss,
    discriminator_loss,
    encoder_adversarial_loss,
    hardest_negative_triplet_loss,
)
from timam.training.config import TrainingConfig
from timam.training.epoch import weighted_total


class TimamObjective(nn.Module):
    """L = w_I L_I + w_M L_M + w_C L_C + w_A L_adv + w_T L_triplet, terms computed only when weighted.

    Losses run in float32 outside autocast: softmax over a batch of similarities is where bf16 hurts.
    """

    def __init__(self, embedding_dim: int, num_classes: int, config: TrainingConfig) -> None:
        super().__init__()
        self.weights = config.loss_weights
        self.adversarial = config.adversarial
        self.triplet_margin = config.triplet_margin
        self.identification = IdentificationLoss(embedding_dim, num_classes, shared_classifier=config.shared_classifier)
        self.discriminator = ModalityDiscriminator(embedding_dim, config.adversarial.hidden_dim)

    def terms(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        labels: torch.Tensor,
        *,
        adversarial_on: bool,
        match_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Each active loss term (unweighted), keyed by its name in ``loss_weights``.

        ``labels`` feed the classifiers; ``match_ids`` (default: the labels) say which pairs the
        matching losses (CMPM, triplet) count as positives, e.g. image ids for instance retrieval.
        """
        match_ids = labels if match_ids is None else match_ids
        image_emb, text_emb = image_emb.float(), text_emb.float()
        terms: dict[str, torch.Tensor] = {}
        if self.weights.identification:
            image_term, text_term = self.identification(image_emb, text_emb, labels)
            terms["identification"] = image_term + text_term
        if self.weights.cmpm:
            image_to_text, text_to_image = cmpm_loss(image_emb, text_emb, match_ids)
            terms["cmpm"] = image_to_text + text_to_image
        if self.weights.cmpc:
            image_term, text_term = cmpc_loss(image_emb, text_emb, labels, self.identification.image_classifier)
            terms["cmpc"] = image_term + text_term
        if self.weights.triplet:
            terms["triplet"] = hardest_negative_triplet_loss(
                image_emb, text_emb, identities=match_ids, margin=self.triplet_margin
            )
        if self.weights.adversarial and adversarial_on:
            terms["adversarial"] = encoder_adversarial_loss(
                self.discriminator, image_emb, text_emb, mode=self.adversarial.mode
            )
        return terms

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return weighted_total(terms, self.weights)

    def discriminator_term(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        return discriminator_loss(
            self.discriminator, image_emb.float(), text_emb.float(), label_smoothing=self.adversarial.label_smoothing
        )
