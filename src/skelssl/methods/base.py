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
