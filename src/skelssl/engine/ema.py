"""The EMA teacher of Skeleton2vec / data2vec (methods.md §2.7).

:class:`EMATeacher` holds its own deep copy of the student — taken from inside any DDP /
``torch.compile`` wrapper, so the teacher is never itself wrapped or synchronised — with gradients off
and always in eval mode. After every optimiser step, :meth:`EMATeacher.update` moves **every state-dict
entry** (parameters and persistent buffers, no skip list) towards the student:

    θ_T ← τ_n θ_T + (1 − τ_n) θ_S,    τ_n = τ_e − (τ_e − τ_0)(1 − n/N)  for n < N,  τ_e for n ≥ N,

for floating-point entries (``torch._foreach_mul_`` / ``_foreach_add_``: the reference's arithmetic,
in one kernel launch per list), while integer buffers (BatchNorm's ``num_batches_tracked``) are copied.
When τ reaches 1 the update is skipped, as the reference does, so the teacher is exactly frozen.

The schedule is a function of the step, so checkpoints only need the teacher's weights
(``state_dict()`` / ``load_state_dict()``, inherited from ``nn.Module``) and the engine's step counter.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from skelssl.engine.checkpoint import unwrap_module

__all__ = ["EMATeacher", "ema_decay"]


def ema_decay(step: int, *, decay_start: float, decay_end: float, anneal_steps: int) -> float:
    """τ at 0-based update ``step``: linear from ``decay_start`` to ``decay_end`` over ``anneal_steps``."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if anneal_steps <= 0 or step >= anneal_steps:
        return float(decay_end)
    return float(decay_end - (decay_end - decay_start) * (1.0 - step / anneal_steps))


class EMATeacher(nn.Module):
    """An exponential-moving-average copy of a student module, used as a frozen target encoder.

    ``student``: the module to copy (a DDP / DataParallel / compiled wrapper is unwrapped first).
    ``decay_start`` τ_0, ``decay_end`` τ_e and ``anneal_steps`` N define :meth:`decay`.
    Calling the teacher runs the copy under ``torch.no_grad()``: its outputs never require grad.
    """

    def __init__(self, student: nn.Module, *, decay_start: float = 0.9999, decay_end: float = 1.0, anneal_steps: int):
        super().__init__()
        for name, value in (("decay_start", decay_start), ("decay_end", decay_end)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if anneal_steps < 0:
            raise ValueError(f"anneal_steps must be >= 0, got {anneal_steps}")
        self.decay_start = float(decay_start)
        self.decay_end = float(decay_end)
        self.anneal_steps = int(anneal_steps)
        self.module = copy.deepcopy(unwrap_module(student))
        for p in self.module.parameters():
            p.grad = None
        self.module.requires_grad_(False)
        self.module.eval()

    def train(self, mode: bool = True) -> EMATeacher:
        """Keeps the teacher copy in eval mode whatever the mode of the modules around it."""
        super().train(mode)
        self.module.eval()
        return self

    def decay(self, step: int) -> float:
        """τ for the update with 0-based index ``step`` (the first update after the first optimiser step is 0)."""
        return ema_decay(step, decay_start=self.decay_start, decay_end=self.decay_end, anneal_steps=self.anneal_steps)

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> float:
        """One EMA step towards ``student`` (wrappers unwrapped) with τ = :meth:`decay` (``step``); returns τ."""
        tau = self.decay(step)
        if tau >= 1.0:
            return tau
        teacher_sd = self.module.state_dict()
        student_sd = unwrap_module(student).state_dict()
        if teacher_sd.keys() != student_sd.keys():
            missing = sorted(set(teacher_sd) ^ set(student_sd))[:5]
            raise ValueError(f"student and teacher state dicts differ (e.g. {missing}); was the student rebuilt?")
        targets: list[torch.Tensor] = []
        sources: list[torch.Tensor] = []
        seen: set[tuple[Any, ...]] = set()
        for key, t in teacher_sd.items():
            s = student_sd[key]
            ident = (t.data_ptr(), t.dtype, tuple(t.shape), t.stride(), t.storage_offset())
            if ident in seen:  # tied weights: update each storage once
                continue
            seen.add(ident)
            if t.is_floating_point():
                targets.append(t)
                sources.append(
                    s if (s.dtype == t.dtype and s.device == t.device) else s.to(device=t.device, dtype=t.dtype)
                )
            else:
                t.copy_(s)
        if targets:
            torch._foreach_mul_(targets, tau)
            torch._foreach_add_(targets, sources, alpha=1.0 - tau)
        return tau

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the teacher copy without building an autograd graph."""
        with torch.no_grad():
            return self.module(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"decay_start={self.decay_start}, decay_end={self.decay_end}, anneal_steps={self.anneal_steps}"
