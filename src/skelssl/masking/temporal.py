"""Motion Attention Temporal Masking (MATM, PSTL §1.6): drop the frames that move most.

Motion energy of frame ``t`` (per sample): ``e_t = mean over (M, V, C) of (x_{t+1} − x_t)²``, and
``e_{T−1} = 0`` (the reference's "attention" is ``a_t = −e_t``). Both modes remove ``2k`` frames
(``k = num_frames``), so ``T`` frames become ``T − 2k`` (50 → 30 with PSTL's ``k = 10``), kept in
temporal order:

``reference``
    What the PSTL code does: keep the ``T − k`` lowest-energy frames (the ``k`` highest-motion frames
    are always dropped; ties go to the earlier frame), then keep a uniformly random ``T − 2k`` of
    those. The reference draws those random positions once per batch (``batch_shared=True``);
    per-sample draws are the default here. Works for any batch size (the reference fails at 1).
``stochastic``
    What the paper's text describes: ``2k`` frames dropped without replacement, one after another,
    with probability ``softmax(ẽ / temperature)`` over the frames still in the clip (Gumbel top-k),
    ``ẽ`` being the energy divided by its mean over the clip's frames (``normalize=True``, so the
    temperature does not depend on the coordinates' unit; a frame moving twice the average has logit
    ``2 / temperature``) or the raw energy (``normalize=False``). ``batch_shared=True`` shares the
    Gumbel noise, not the dropped frames (the energies differ per sample).

Random draws come from an explicit CPU ``torch.Generator`` and are moved to the input's device, so a
seed gives the same frames on every device.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor

from skelssl.errors import ConfigError

MATMMode = Literal["reference", "stochastic"]


def motion_energy(x: Tensor) -> Tensor:
    """Per-frame motion energy ``(N, T)`` of ``x`` ``(N, M, T, V, C)``: ``mean_{M,V,C} (x_{t+1} − x_t)²``, last 0.

    Computed without gradient, in float32 at least.
    """
    x = x.detach()
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    step = x[:, :, 1:] - x[:, :, :-1]
    return F.pad(reduce(step.square(), "n m t v c -> n t", "mean"), (0, 1))


def gather_frames(x: Tensor, keep: Tensor) -> Tensor:
    """Frames ``keep`` ``(N, T')`` of ``x`` ``(N, M, T, V, C)`` → ``(N, M, T', V, C)`` (differentiable in ``x``)."""
    return torch.take_along_dim(x, rearrange(keep, "n t -> n 1 t 1 1"), dim=2)


def motion_attention_temporal_mask(
    x: Tensor,
    *,
    num_frames: int = 10,
    generator: torch.Generator,
    mode: MATMMode = "reference",
    temperature: float = 1.0,
    normalize: bool = True,
    batch_shared: bool = False,
) -> tuple[Tensor, Tensor]:
    """Remove ``2·num_frames`` frames of ``x`` ``(N, M, T, V, C)``, preferring high-motion ones (module doc).

    Returns ``(x_masked, keep)``: the clip ``(N, M, T − 2k, V, C)`` and the kept frame indices
    ``(N, T − 2k)`` (LongTensor on ``x``'s device, increasing along each row).
    """
    if x.dim() != 5:
        raise ValueError(f"expected x of shape (N, M, T, V, C), got {tuple(x.shape)}")
    if mode not in ("reference", "stochastic"):
        raise ConfigError(f"unknown MATM mode {mode!r}; use 'reference' or 'stochastic'")
    n, t = x.shape[0], x.shape[2]
    k = int(num_frames)
    if k < 0 or t - 2 * k < 1:
        raise ConfigError(f"cannot remove 2 × {num_frames} frames from a {t}-frame clip")
    rows = 1 if batch_shared else n
    energy = motion_energy(x)  # (N, T)

    if mode == "reference":
        remain = t - k
        # the `remain` lowest-energy frames (stable sort: ties keep the earlier frame), in temporal order
        calm = torch.sort(energy, dim=1, stable=True).indices[:, :remain].sort(dim=1).values  # (N, T − k)
        # a uniformly random subset of T − 2k of those positions, in order
        keys = torch.rand(rows, remain, generator=generator)
        pos = keys.topk(remain - k, dim=1, largest=False).indices.sort(dim=1).values.to(x.device)
        keep = calm.gather(1, pos.expand(n, -1))
    else:
        if not temperature > 0:
            raise ConfigError(f"MATM temperature must be > 0, got {temperature}")
        logits = energy
        if normalize:
            logits = logits / logits.mean(dim=1, keepdim=True).clamp_min(torch.finfo(logits.dtype).tiny)
        # Gumbel top-k: the 2k largest logits + Gumbel noise are a draw without replacement ∝ softmax(logits)
        gumbel = -torch.empty(rows, t).exponential_(generator=generator).log()
        keys = logits.float() / temperature + gumbel.to(x.device)
        keep = keys.topk(t - 2 * k, dim=1, largest=False).indices.sort(dim=1).values
    return gather_frames(x, keep), keep
