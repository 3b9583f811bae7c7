"""Learning-rate schedules as pure functions of the step (or epoch).

- :func:`pstl_epoch_lr` — PSTL's per-epoch linear warm-up + cosine (methods.md §1.8), including its
  first epoch at lr 0 (``zero_first_epoch=True``, the reference) or the usual ``(e + 1)/warm-up``.
- :func:`warmup_cosine` — the MAE/MAMP/Skeleton2vec per-iteration schedule: linear from 0 over the
  warm-up, then cosine to ``min_lr`` at ``total_steps`` (methods.md §2.8, §3.4).
- :class:`LRSchedule` — applies one of them to an optimiser, multiplying by each parameter group's
  ``lr_scale`` (layer-wise decay). It holds no state: the lr is a function of the global step, so a
  resumed run only needs its step counter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["LRSchedule", "constant_lr", "pstl_epoch_lr", "warmup_cosine"]


def pstl_epoch_lr(
    epoch: int,
    *,
    base_lr: float,
    warmup_epochs: int = 10,
    epochs: int = 150,
    min_lr: float = 0.0,
    zero_first_epoch: bool = True,
) -> float:
    """PSTL's learning rate for a 0-based ``epoch``.

    Warm-up (``epoch < warmup_epochs``): ``base_lr · epoch / warmup_epochs`` — so epoch 0 trains at lr 0,
    as the reference does — or ``base_lr · (epoch + 1) / warmup_epochs`` with ``zero_first_epoch=False``.
    Then ``min_lr + (base_lr − min_lr) · ½(1 + cos(π (epoch − warmup_epochs) / (epochs − warmup_epochs)))``;
    epochs past ``epochs`` stay at ``min_lr``.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if warmup_epochs < 0 or epochs < 1 or warmup_epochs > epochs:
        raise ValueError(f"need 0 <= warmup_epochs <= epochs and epochs >= 1, got {warmup_epochs}, {epochs}")
    if epoch < warmup_epochs:
        return base_lr * (epoch if zero_first_epoch else epoch + 1) / warmup_epochs
    if epoch >= epochs or epochs == warmup_epochs:
        return min_lr
    progress = (epoch - warmup_epochs) / (epochs - warmup_epochs)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(step: int, *, base_lr: float, min_lr: float = 0.0, warmup_steps: int, total_steps: int) -> float:
    """Per-iteration linear warm-up from 0 then cosine decay to ``min_lr`` (0-based ``step``).

    ``step < warmup_steps``: ``base_lr · step / warmup_steps``; then
    ``min_lr + (base_lr − min_lr) · ½(1 + cos(π (step − warmup_steps) / (total_steps − warmup_steps)))``,
    and ``min_lr`` from ``total_steps`` on. Equals MAE's ``adjust_learning_rate`` evaluated at the
    fractional epoch ``step / steps_per_epoch`` with ``warmup_steps = warmup_epochs · steps_per_epoch``.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if warmup_steps < 0 or total_steps < 1 or warmup_steps > total_steps:
        raise ValueError(
            f"need 0 <= warmup_steps <= total_steps and total_steps >= 1, got {warmup_steps}, {total_steps}"
        )
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def constant_lr(step: int, *, base_lr: float) -> float:
    """A constant learning rate (for completeness and tests)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return base_lr


@dataclass(frozen=True)
class LRSchedule:
    """The learning rate as a function of the 0-based global optimiser step.

    ``fn(step) -> lr``; :meth:`apply` writes ``lr · group.get("lr_scale", 1.0)`` into every parameter
    group. Build with :meth:`pstl`, :meth:`cosine` or :meth:`constant`. Stateless: nothing to checkpoint.
    """

    fn: Callable[[int], float]
    description: str = ""

    def __call__(self, step: int) -> float:
        return self.fn(step)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's lr for ``step`` (scaled by its ``lr_scale``); returns the unscaled lr."""
        lr = self.fn(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    @classmethod
    def pstl(
        cls,
        *,
        base_lr: float,
        steps_per_epoch: int,
        warmup_epochs: int = 10,
        epochs: int = 150,
        min_lr: float = 0.0,
        zero_first_epoch: bool = True,
    ) -> LRSchedule:
        """PSTL's per-epoch schedule, constant within an epoch (epoch = ``step // steps_per_epoch``)."""
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        pstl_epoch_lr(0, base_lr=base_lr, warmup_epochs=warmup_epochs, epochs=epochs)  # validate arguments

        def fn(step: int) -> float:
            if step < 0:
                raise ValueError(f"step must be >= 0, got {step}")
            return pstl_epoch_lr(
                step // steps_per_epoch,
                base_lr=base_lr,
                warmup_epochs=warmup_epochs,
                epochs=epochs,
                min_lr=min_lr,
                zero_first_epoch=zero_first_epoch,
            )

        return cls(fn, f"pstl(base_lr={base_lr}, warmup_epochs={warmup_epochs}, epochs={epochs}, min_lr={min_lr})")

    @classmethod
    def cosine(cls, *, base_lr: float, min_lr: float = 0.0, warmup_steps: int, total_steps: int) -> LRSchedule:
        """Per-iteration warm-up + cosine (:func:`warmup_cosine`)."""
        warmup_cosine(0, base_lr=base_lr, min_lr=min_lr, warmup_steps=warmup_steps, total_steps=total_steps)

        def fn(step: int) -> float:
            return warmup_cosine(
                step, base_lr=base_lr, min_lr=min_lr, warmup_steps=warmup_steps, total_steps=total_steps
            )

        return cls(fn, f"cosine(base_lr={base_lr}, min_lr={min_lr}, warmup={warmup_steps}, total={total_steps})")

    @classmethod
    def constant(cls, *, base_lr: float) -> LRSchedule:
        """The same lr at every step."""

        def fn(step: int) -> float:
            return constant_lr(step, base_lr=base_lr)

        return cls(fn, f"constant({base_lr})")
