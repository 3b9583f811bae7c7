"""The interface the training engine knows: a method is a module whose step returns a loss dict.

The engine (``skelssl.engine.loop``) only ever calls :meth:`Method.step` on a batch already on the
device, back-propagates ``out["loss"]``, steps the optimiser, then calls :meth:`Method.after_step`
on the **unwrapped** method (outside DDP: an EMA teacher lives there). Everything method-specific —
augmentation, masking, encoders, projectors, losses — happens inside ``step``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from skelssl.errors import ConfigError


class Method(nn.Module):
    """Base class of pretraining methods (PSTL, SkeletonBT, Skeleton2vec, MAMP)."""

    #: name used in configs and encoder cards
    name: str = "method"

    @property
    def encoder(self) -> nn.Module:
        """The encoder exported after pretraining (``forward(x (N, M, T, V, C)) -> (N, D)``)."""
        raise NotImplementedError

    def step(self, x: Tensor, *, generator: torch.Generator) -> dict[str, Tensor]:
        """One training step's forward: ``x`` ``(N, M, T, V, C)`` → ``{"loss": scalar, **scalars_to_log}``.

        ``generator`` is the CPU generator every random draw of the step (augmentation, masks) comes from.
        """
        raise NotImplementedError

    def forward(self, x: Tensor, *, generator: torch.Generator) -> dict[str, Tensor]:
        # DDP hooks run on __call__ → forward, so step goes through here
        return self.step(x, generator=generator)

    def after_step(self, step: int) -> dict[str, float]:
        """Called after every optimiser step with the global step count (1 after the first update)."""
        return {}

    def export(self) -> dict[str, nn.Module]:
        """Encoders to save at the end of pretraining: ``{"encoder": module, …}`` (e.g. also ``"student"``)."""
        return {"encoder": self.encoder}

    def card(self) -> dict[str, Any]:
        """Facts about the method recorded beside the exported encoder."""
        return {"method": self.name}


# --------------------------------------------------------------------- checks shared by the token methods


def check_segment(method: str, frames: int, segment: int) -> None:
    """``ConfigError`` unless the clip length ``frames`` is a multiple of the temporal ``segment``."""
    if frames % segment:
        raise ConfigError(
            f"{method}: the clip length {frames} is not divisible by segment = {segment}; use data.frames = "
            f"{max(segment, frames - frames % segment)} or another segment"
        )


def check_visible(method: str, visible: int, total: int, what: str) -> None:
    """``ConfigError`` unless a mask keeps between 1 and ``total − 1`` of ``total`` tokens (``what``: the setting)."""
    if not 0 < visible < total:
        raise ConfigError(
            f"{method}: {what} keeps {visible} of {total} tokens; "
            "at least one token must stay visible and one be masked"
        )


def check_clip(method: str, x: Tensor, *, frames: int, joints: int, channels: int, layout: str) -> None:
    """``ValueError`` unless ``x`` is ``(N, M, frames, joints, channels)``."""
    expected = (frames, joints, channels)
    if x.dim() != 5 or tuple(x.shape[2:]) != expected:
        raise ValueError(
            f"{method} on {layout} expects (N, M, T={frames}, V={joints}, C={channels}) input, got {tuple(x.shape)}"
        )
