"""The paper's stopping and learning-rate rules: early stopping on validation loss, and the learning rate
multiplied by ``--lr_factor`` (halved) at the ``--lr_patience``-th epoch without a better validation loss."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class EarlyStopping:
    patience: int
    best: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record a validation loss; True when it is the best so far."""
        if value < self.best:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


def plateau_scheduler(optimizer: torch.optim.Optimizer, args) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """Stepped once per epoch with the validation loss; the learning rate is multiplied by ``--lr_factor`` at the
    ``--lr_patience``-th epoch in a row without a better validation loss ("halved if validation loss stagnates for
    5 epochs", the MVaEMa paper), and again after each further ``--lr_patience`` such epochs.

    ``ReduceLROnPlateau`` reduces when its count of bad epochs *exceeds* ``patience``, hence ``lr_patience - 1``.
    ``threshold=0``: "better" is any lower loss, as for early stopping and the best weights (the default 1e-4
    relative threshold would count a small improvement as stagnation here and as progress there).
    """
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=args.lr_factor, patience=args.lr_patience - 1,
                                                      threshold=0.0)
