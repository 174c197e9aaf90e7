"""The weighted objective: which loss terms are on, and their sum, for one batch.

TIMAM's terms (identification, CMPM, CMPC, the adversarial term), VSE++'s triplet, and the
contrastive losses of today's dual encoders (InfoNCE, SDM, SigLIP) combine freely through
``training.loss_weights``, on any embedding model.
"""

from __future__ import annotations

import torch
from torch import nn

from timam.losses import (
    IdentificationLoss,
    LogitBias,
    LogitScale,
    ModalityDiscriminator,
    cmpc_loss,
    cmpm_loss,
    discriminator_loss,
    encoder_adversarial_loss,
    hardest_negative_triplet_loss,
    info_nce_loss,
    sdm_loss,
    siglip_loss,
)
from timam.training.config import HASHING_TERMS, TrainingConfig
from timam.training.epoch import weighted_total


class TimamObjective(nn.Module):
    """L = w_I L_I + w_M L_M + w_C L_C + w_A L_adv + w_T L_triplet + w_N L_InfoNCE + w_S L_SDM +
    w_G L_SigLIP, terms computed only when weighted.

    Losses run in float32 outside autocast: softmax over a batch of similarities is where bf16 hurts.
    The contrastive terms' learnable temperatures start from ``logit_scale`` (CLIP's 1/0.07, or a CLIP
    checkpoint's own) and SigLIP's from ``siglip_scale`` / ``siglip_bias`` (10 and -10, or a SigLIP
    checkpoint's own); they are clamped as CLIP does after each step (:meth:`after_step`).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        config: TrainingConfig,
        *,
        logit_scale: float = 1 / 0.07,
        siglip_scale: float = 10.0,
        siglip_bias: float = -10.0,
    ) -> None:
        super().__init__()
        self.weights = config.loss_weights
        hashing = [name for name in HASHING_TERMS if getattr(self.weights, name)]
        if hashing:
            raise ValueError(
                f"training.loss_weights {hashing} train attribute-hashing heads (the families pipeline's agnet "
                "rows), which an embedding model has not; set them to 0"
            )
        self.adversarial = config.adversarial
        self.triplet_margin = config.triplet_margin
        self.sdm_temperature = config.sdm_temperature
        self.identification = IdentificationLoss(embedding_dim, num_classes, shared_classifier=config.shared_classifier)
        self.discriminator = ModalityDiscriminator(embedding_dim, config.adversarial.hidden_dim)
        self.infonce_scale = LogitScale(min(logit_scale, 100.0))
        self.siglip_scale = LogitScale(siglip_scale)
        self.siglip_bias = LogitBias(siglip_bias)
        # A term that is off does not train its temperature (no parameter without a gradient).
        self.infonce_scale.requires_grad_(bool(self.weights.infonce))
        self.siglip_scale.requires_grad_(bool(self.weights.siglip))
        self.siglip_bias.requires_grad_(bool(self.weights.siglip))

    def temperatures(self) -> list[nn.Parameter]:
        """The contrastive terms' learnable temperature and bias (trained with the text branch)."""
        return [*self.infonce_scale.parameters(), *self.siglip_scale.parameters(), *self.siglip_bias.parameters()]

    @torch.no_grad()
    def after_step(self) -> None:
        """Keep the temperatures at most 100, as CLIP does after each optimiser step."""
        self.infonce_scale.clamp_()
        self.siglip_scale.clamp_()

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
        if self.weights.infonce:
            image_to_text, text_to_image = info_nce_loss(image_emb, text_emb, self.infonce_scale())
            terms["infonce"] = image_to_text + text_to_image
        matches = match_ids[:, None] == match_ids[None, :]
        if self.weights.sdm:
            image_to_text, text_to_image = sdm_loss(image_emb, text_emb, matches, temperature=self.sdm_temperature)
            terms["sdm"] = image_to_text + text_to_image
        if self.weights.siglip:
            terms["siglip"] = siglip_loss(image_emb, text_emb, self.siglip_scale(), self.siglip_bias(), matches)
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
