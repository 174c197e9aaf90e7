"""Training losses: identification (L_I), CMPM/CMPC (L_M), adversarial (L_D), VSE++ triplet, and the
contrastive objectives of dual encoders (InfoNCE, SDM, SigLIP)."""

from timam.losses.adversarial import (
    ModalityDiscriminator,
    discriminator_loss,
    encoder_adversarial_loss,
    grad_reverse,
)
from timam.losses.contrastive import LogitBias, LogitScale, info_nce_loss, sdm_loss, siglip_loss
from timam.losses.identification import IdentificationLoss, NormSoftmaxClassifier
from timam.losses.projection import cmpc_loss, cmpm_loss, cmpm_loss_from_matches, cmpm_loss_from_scores
from timam.losses.triplet import hardest_negative_triplet_from_scores, hardest_negative_triplet_loss

__all__ = [
    "IdentificationLoss",
    "LogitBias",
    "LogitScale",
    "ModalityDiscriminator",
    "NormSoftmaxClassifier",
    "cmpc_loss",
    "cmpm_loss",
    "cmpm_loss_from_matches",
    "cmpm_loss_from_scores",
    "discriminator_loss",
    "encoder_adversarial_loss",
    "grad_reverse",
    "hardest_negative_triplet_from_scores",
    "hardest_negative_triplet_loss",
    "info_nce_loss",
    "sdm_loss",
    "siglip_loss",
]
