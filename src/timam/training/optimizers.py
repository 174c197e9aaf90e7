"""The optimiser of each branch (image, text, discriminator) and its plateau scheduler, by name.

Each branch's optimiser is configurable (``training.image_optimizer``, ``text_optimizer``,
``discriminator_optimizer``: "sgd" with momentum, or "adam"). The paper trains the image branch and
the discriminator with SGD and the text branch with Adam (``conf/paper``); the base configuration
uses Adam for both encoders. Named fields rather than a list, so no caller reaches a branch by its
position; the position survives only in the resume state, whose lists follow :data:`BRANCHES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from timam.models.families import EmbeddingModel
from timam.training.config import OptimizerConfig, ScheduleConfig, TrainingConfig
from timam.training.objective import TimamObjective

# The order of the optimiser and scheduler lists in the resume state.
BRANCHES = ("image", "text", "discriminator")


def make_optimizer(parameters: list[nn.Parameter], config: OptimizerConfig) -> torch.optim.Optimizer:
    if config.name == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)


@dataclass
class Optimizers:
    """``image``: the image encoder (backbone and projection); ``text``: the text encoder, the
    identification classifiers and the contrastive terms' temperatures; ``discriminator``: the
    modality discriminator, stepped on its own.

    Frozen parts sit in them from the start with no gradient (optimisers skip them), so unfreezing
    is only ``requires_grad_(True)`` and the optimiser and scheduler states stay valid.
    """

    image: torch.optim.Optimizer
    text: torch.optim.Optimizer
    discriminator: torch.optim.Optimizer

    @classmethod
    def build(cls, model: EmbeddingModel, objective: TimamObjective, config: TrainingConfig) -> Optimizers:
        return cls(
            image=make_optimizer(list(model.image_encoder.parameters()), config.image_optimizer),
            text=make_optimizer(
                list(model.text_encoder.parameters())
                + list(objective.identification.parameters())
                + objective.temperatures(),
                config.text_optimizer,
            ),
            discriminator=make_optimizer(list(objective.discriminator.parameters()), config.discriminator_optimizer),
        )

    @property
    def encoders(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """The two stepped on the encoders' loss (image, text)."""
        return self.image, self.text

    def named(self) -> dict[str, torch.optim.Optimizer]:
        """All three, in :data:`BRANCHES` order."""
        return {name: getattr(self, name) for name in BRANCHES}


def plateau_schedulers(
    optimizers: Mapping[str, torch.optim.Optimizer], config: ScheduleConfig
) -> dict[str, torch.optim.lr_scheduler.ReduceLROnPlateau]:
    """One scheduler per branch (``optimizers`` by branch name), stepped on validation t2i R@1
    (higher is better)."""
    return {
        name: torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",
            factor=config.factor,
            patience=config.patience,
            min_lr=config.min_lr,
        )
        for name, optimizer in optimizers.items()
    }
