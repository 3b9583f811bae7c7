"""The interface the training engine knows: a method is a module whose step returns a loss dict.

The engine (``skelssl.engine.loop``) only ever calls :meth:`Method.step` on a batch already on the
device, back-propagates ``out["loss"]``, steps the optimiser, then calls :meth:`Method.after_step`
on the **unwrapped** method (outside DDP: an EMA teacher lives there). Everything method-specific —
augmentation, masking, encoders, projectors, losses — happens inside ``step``.
"""

from __future__ import annotations

import math
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


def _divisors(n: int) -> str:
    found = [d for d in range(1, n + 1) if n % d == 0]
    return ", ".join(map(str, found[:12])) + (" …" if len(found) > 12 else "")


def check_segment(method: str, frames: int, segment: int) -> None:
    """``ConfigError`` (naming ``<method>.segment``) unless the clip length ``frames`` is a multiple of ``segment``."""
    if segment < 1 or frames % segment:
        raise ConfigError(
            f"{method}.segment: the clip length {frames} is not divisible by segment = {segment}; allowed: a divisor "
            f"of {frames} ({_divisors(frames)}), or data.frames = {max(segment, frames - frames % segment)} "
            "(a multiple of the segment)"
        )


def check_tube_len(method: str, frames: int, segment: int, tube_len: int) -> None:
    """``ConfigError`` (naming ``<method>.tube_len``) unless ``tube_len`` divides the ``frames / segment`` segments."""
    segments = frames // segment
    if tube_len < 1 or segments % tube_len:
        raise ConfigError(
            f"{method}.tube_len = {tube_len} does not divide the {segments} temporal segments ({frames} frames / "
            f"segment {segment}); allowed: a divisor of {segments} ({_divisors(segments)})"
        )


def check_mask_ratio(method: str, mask_ratio: float, total: int, *, rounding: str = "reference", what: str) -> int:
    """Visible tokens of ``total`` at ``mask_ratio``; ``ConfigError`` naming ``<method>.mask_ratio`` and its allowed
    range on this layout and clip when none stays visible or none is masked (``what``: what the tokens are)."""
    from skelssl.masking.tokens import visible_count

    try:
        return visible_count(total, mask_ratio=mask_ratio, rounding=rounding)  # type: ignore[arg-type]
    except ConfigError as err:
        if rounding == "exact":
            allowed = f"{0.5 / total:.4g} < mask_ratio < 1"
        else:
            top = 1 - 1 / total
            ok = math.isfinite(top) and int(total * (1 - top)) >= 1
            allowed = f"0 < mask_ratio {'<=' if ok else '<'} {top:.6g} (int({total}·(1 − ratio)) >= 1)"
        raise ConfigError(
            f"{method}.mask_ratio = {mask_ratio}: {err} — {total} {what}; allowed here: {allowed}"
        ) from None


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
