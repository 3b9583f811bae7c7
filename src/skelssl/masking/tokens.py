"""Token masks for masked-prediction pretraining (Skeleton2vec §2.4, MAMP §3.3): which tokens the encoder sees.

A clip ``x`` ``(B, T, V, C)`` (one person per row; the methods pass their ``N·M`` person-sequences) is cut
into ``TP = T / segment`` temporal segments per joint, giving ``L = TP·V`` tokens numbered t-major
(token ``t·V + v``), as the transformer's tokeniser does. Every function returns a :class:`TokenMask` whose
number of visible tokens ``K`` depends only on the shapes, the ratio and the rounding — never on the data —
so shapes are static and the batch needs no padding.

:func:`motion_aware_tube_mask` (Skeleton2vec, ``SkTWithDecoder.motion_aware_tube_masking``)
    Per-token motion ``μ[t, v]`` = mean of ``|x_{t'+1} − x_{t'}|`` over the segment's frames × coordinates
    (:func:`token_motion`; the last frame's motion is 0, as PySKL's ``ToMotion`` on the clip); pooled over
    the ``tube_len`` segments of each tube, ``μ̄[τ, v]``; normalised by the tube's maximum over joints,
    ``μ̂ = μ̄ / (max_v μ̄ + 1e-6)`` ∈ [0, 1]; score ``U(0, 1) + β·μ̂``; in every tube the ``K_vis``
    lowest-scoring joints stay visible in all of the tube's segments and the others are masked. High-motion
    joints are masked somewhat more often (β is small next to the unit noise). ``K = TP·K_vis``.
:func:`tube_mask`
    The same with ``β = 0`` (the reference's ``tube`` strategy): uniformly random joints per tube.
:func:`random_mask`
    MAE-style: a uniformly random ``K = int(L·(1 − ratio))`` of the ``L`` tokens per row.
:func:`motion_aware_mask` (MAMP, ``motion_aware_random_masking``)
    Per-token motion ``m`` = mean of ``|p_t − p_{t−1}|`` over the ``segment × C`` values of the token's
    patch ``p_t`` (the same frame offset in consecutive patches; the first patch copies the second);
    ``p = softmax(m / (τ·max m + 1e-10))`` over the row's ``L`` tokens; with Gumbel noise
    ``g = −log(−log(U + 1e-10) + 1e-10)`` the ``K = int(L·(1 − ratio))`` tokens of lowest ``log p + g``
    stay visible, so the masked set is a draw without replacement ∝ ``p`` (Gumbel top-k).

Rounding of the visible joints per tube (``rounding``):

``"reference"``
    ``K_vis = int(V·(1 − ratio))`` evaluated in floating point as the reference does: ``25·(1 − 0.9)``
    is ``2.4999…``, so **2 of 25 joints per tube stay visible, i.e. 92 % of the tokens are masked** (60 of
    750), not 90 %. On the 20 joints of NW-UCLA (``kinect20``) ``20·(1 − 0.9) = 1.9999…`` gives **1**
    visible joint per tube (95 % masked).
``"exact"``
    The nearest integer to ``V·(1 − ratio)`` (an exact half goes down, i.e. towards more masking, and float
    noise of 1e-9 is ignored), at least 1: 2 of 25, 2 of 20 at 0.9.

A ratio that leaves no visible token, or masks none, is a :class:`~skelssl.errors.ConfigError`.

Deviation from the reference, without effect on the training signal: the reference gathers each segment's
visible tokens in score order; here ``keep_idx`` is ascending (t, v) order. Position embeddings are added
before the gather and attention is permutation-equivariant, and ``restore_idx`` puts every token back in
place, so the encoder and decoder see the same sets.

Randomness: the uniform draws come from an explicit CPU ``torch.Generator`` (drawn on the CPU, then moved
to ``x.device``), so a seed gives the same mask on every device. Draw order, for reproduction:
``torch.rand(B, TP / tube_len, V)`` for the tube masks and ``torch.rand(B, L)`` for the other two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, reduce, repeat
from torch import Tensor

from skelssl.errors import ConfigError

Rounding = Literal["reference", "exact"]

_EPS_TUBE = 1e-6  # the reference's guard in the per-tube max normalisation
_EPS_MAMP = 1e-10  # the reference's guards in MAMP's normalisation and Gumbel noise


@dataclass(frozen=True)
class TokenMask:
    """A fixed-length token mask for ``B`` sequences of ``L = TP·V`` tokens (t-major: token ``t·V + v``).

    - ``mask`` ``(B, L)`` bool, ``True`` = masked.
    - ``keep_idx`` ``(B, K)`` int64: the visible tokens, ascending; ``K`` is the same for every row.
    - ``mask_idx`` ``(B, L − K)`` int64: the masked tokens, ascending.
    - ``restore_idx`` ``(B, L)`` int64: the position of token ``j`` in ``cat([keep_idx, mask_idx], 1)``, so
      ``gather(cat([visible, masked_tokens], 1), 1, restore_idx)`` puts every token back in place.
    """

    mask: Tensor
    keep_idx: Tensor
    mask_idx: Tensor
    restore_idx: Tensor

    @property
    def num_visible(self) -> int:
        """``K``, the number of visible tokens per row."""
        return int(self.keep_idx.shape[1])

    def visible(self, tokens: Tensor) -> Tensor:
        """The visible tokens ``(B, K, ...)`` of ``tokens`` ``(B, L, ...)``, in ``keep_idx`` order."""
        return _take(tokens, self.keep_idx)

    def masked(self, tokens: Tensor) -> Tensor:
        """The masked tokens ``(B, L − K, ...)`` of ``tokens`` ``(B, L, ...)``, in ``mask_idx`` order."""
        return _take(tokens, self.mask_idx)

    def restore(self, visible: Tensor, masked: Tensor) -> Tensor:
        """``(B, L, ...)`` from ``visible`` ``(B, K, ...)`` and ``masked`` ``(B, L − K, ...)``: every token in place."""
        return _take(torch.cat([visible, masked], dim=1), self.restore_idx)


def _take(tokens: Tensor, idx: Tensor) -> Tensor:
    """``tokens[b, idx[b, i]]`` for ``tokens`` ``(B, L, ...)`` and ``idx`` ``(B, K)`` → ``(B, K, ...)``."""
    index = idx.reshape(*idx.shape, *([1] * (tokens.dim() - 2)))
    return torch.take_along_dim(tokens, index, dim=1)


def token_mask_from_bool(mask: Tensor, num_visible: int) -> TokenMask:
    """The :class:`TokenMask` of a boolean mask ``(B, L)`` (``True`` = masked) with ``num_visible`` visible per row.

    Every row must have exactly ``num_visible`` ``False`` entries (not checked: that would sync a GPU).
    Linear in ``L``: ranks from cumulative sums, no sort.
    """
    b, length = mask.shape
    k = int(num_visible)
    kept_rank = (~mask).cumsum(dim=1) - 1
    masked_rank = mask.cumsum(dim=1) + (k - 1)
    restore = torch.where(mask, masked_rank, kept_rank)
    tokens = torch.arange(length, device=mask.device).expand(b, length)
    order = torch.empty_like(restore).scatter_(1, restore, tokens)  # cat([keep_idx, mask_idx], 1)
    return TokenMask(
        mask=mask, keep_idx=order[:, :k].contiguous(), mask_idx=order[:, k:].contiguous(), restore_idx=restore
    )


def visible_count(total: int, *, mask_ratio: float, rounding: Rounding = "reference") -> int:
    """How many of ``total`` tokens (joints of a tube, or tokens of a row) stay visible at ``mask_ratio``.

    ``reference``: ``int(total·(1 − mask_ratio))`` in floating point, as the reference code; ``exact``: the
    nearest integer (half down), at least 1. Raises ConfigError when none stays visible or none is masked.
    """
    ratio = float(mask_ratio)
    if not (math.isfinite(ratio) and 0.0 <= ratio < 1.0):
        raise ConfigError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    if rounding == "reference":
        k = int(total * (1 - ratio))
    elif rounding == "exact":
        k = max(1, math.ceil(total * (1 - ratio) - 0.5 - 1e-9))
    else:
        raise ConfigError(f"unknown rounding {rounding!r}; use 'reference' or 'exact'")
    if k < 1:
        raise ConfigError(
            f"mask_ratio {mask_ratio} leaves no visible token of {total} (int({total}·(1 − {mask_ratio})) = 0); "
            "lower mask_ratio or use rounding='exact'"
        )
    if k >= total:
        raise ConfigError(f"mask_ratio {mask_ratio} masks none of {total} tokens; raise it")
    return k


def _check_clip(x: Tensor, segment: int) -> int:
    """Validate ``x`` ``(B, T, V, C)`` against ``segment``; return ``TP``."""
    if x.dim() != 4:
        raise ValueError(f"expected single-person clips x of shape (B, T, V, C), got {tuple(x.shape)}")
    t = x.shape[1]
    if segment < 1 or t % segment:
        raise ConfigError(f"the clip's {t} frames are not divisible by the temporal segment {segment}")
    return t // segment


def _check_generator(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError("generator must be a CPU torch.Generator (draws are made on the CPU, then moved)")


def _motion_input(x: Tensor) -> Tensor:
    """``x`` detached, in float32 at least."""
    x = x.detach()
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) or not x.is_floating_point() else x


def token_motion(x: Tensor, *, segment: int) -> Tensor:
    """Skeleton2vec's per-token motion ``(B, TP·V)`` of ``x`` ``(B, T, V, C)``, t-major.

    ``mean over the segment's frames t' × coords of |x_{t'+1} − x_{t'}|``, with the last frame's motion 0
    (PySKL ``ToMotion`` on the clip). Without gradient, float32 at least.
    """
    _check_clip(x, segment)
    x = _motion_input(x)
    per_frame = reduce((x[:, 1:] - x[:, :-1]).abs_(), "b t v c -> b t v", "sum")
    per_frame = F.pad(per_frame, (0, 0, 0, 1))  # (B, T, V): the last frame's motion is 0
    return reduce(per_frame, "b (tp s) v -> b (tp v)", "sum", s=segment) / (segment * x.shape[3])


def tube_intensity(x: Tensor, *, segment: int, tube_len: int) -> Tensor:
    """Normalised motion per tube and joint ``(B, TP / tube_len, V)`` in [0, 1] (the μ̂ of the module doc)."""
    tp = _check_clip(x, segment)
    if tube_len < 1 or tp % tube_len:
        raise ConfigError(
            f"the {tp} temporal segments ({x.shape[1]} frames / segment {segment}) are not divisible by "
            f"tube_len {tube_len}"
        )
    motion = rearrange(token_motion(x, segment=segment), "b (n r v) -> b n r v", r=tube_len, v=x.shape[2])
    pooled = motion.mean(dim=2)  # (B, tubes, V)
    return pooled / (pooled.amax(dim=2, keepdim=True) + _EPS_TUBE)


def _tube_mask_from_scores(scores: Tensor, *, tube_len: int, k_vis: int) -> TokenMask:
    """Keep the ``k_vis`` lowest ``scores`` ``(B, tubes, V)`` of every tube, for all its ``tube_len`` segments."""
    b, tubes, v = scores.shape
    keep = scores.topk(k_vis, dim=2, largest=False).indices
    tube_masked = torch.ones(b, tubes, v, dtype=torch.bool, device=scores.device).scatter_(2, keep, False)
    mask = repeat(tube_masked, "b n v -> b (n r v)", r=tube_len)
    return token_mask_from_bool(mask, tubes * tube_len * k_vis)


def _motion_aware_tube_mask(
    x: Tensor, noise: Tensor, *, segment: int, tube_len: int, k_vis: int, beta: float
) -> TokenMask:
    """:func:`motion_aware_tube_mask` with its uniform draws ``noise`` ``(B, TP / tube_len, V)`` given."""
    noise = noise.to(x.device)
    scores = noise if beta == 0 else noise + beta * tube_intensity(x, segment=segment, tube_len=tube_len)
    return _tube_mask_from_scores(scores, tube_len=tube_len, k_vis=k_vis)


def motion_aware_tube_mask(
    x: Tensor,
    *,
    segment: int = 3,
    tube_len: int = 5,
    mask_ratio: float = 0.9,
    beta: float = 0.1,
    rounding: Rounding = "reference",
    generator: torch.Generator,
) -> TokenMask:
    """Skeleton2vec's motion-aware tube mask of ``x`` ``(B, T, V, C)`` (module doc); ``L = (T / segment)·V``.

    ``T`` must be divisible by ``segment`` and ``T / segment`` by ``tube_len``. ``beta`` (the reference's
    ``s_tau``: 0.1 on NTU-60/PKU, 0.2 on NTU-120) weighs the normalised motion against U(0, 1) noise; 0
    gives :func:`tube_mask`. ``K = (T / segment)·K_vis`` with ``K_vis`` from ``rounding``. On ``x.device``.
    """
    tp = _check_clip(x, segment)
    if tube_len < 1 or tp % tube_len:
        raise ConfigError(
            f"the {tp} temporal segments ({x.shape[1]} frames / segment {segment}) are not divisible by "
            f"tube_len {tube_len}"
        )
    if not math.isfinite(beta):
        raise ConfigError(f"beta must be a finite number, got {beta}")
    _check_generator(generator)
    b, v = x.shape[0], x.shape[2]
    k_vis = visible_count(v, mask_ratio=mask_ratio, rounding=rounding)
    noise = torch.rand(b, tp // tube_len, v, generator=generator)
    return _motion_aware_tube_mask(x, noise, segment=segment, tube_len=tube_len, k_vis=k_vis, beta=beta)


def tube_mask(
    x: Tensor,
    *,
    segment: int = 3,
    tube_len: int = 5,
    mask_ratio: float = 0.9,
    rounding: Rounding = "reference",
    generator: torch.Generator,
) -> TokenMask:
    """Plain tube masking (β = 0): uniformly random joints per tube, the same in all its segments.

    Uses ``x`` ``(B, T, V, C)`` only for its shape and device; the same draws as :func:`motion_aware_tube_mask`.
    """
    return motion_aware_tube_mask(
        x, segment=segment, tube_len=tube_len, mask_ratio=mask_ratio, beta=0.0, rounding=rounding, generator=generator
    )


def _lowest(scores: Tensor, k: int) -> TokenMask:
    """Keep the ``k`` lowest ``scores`` ``(B, L)`` of every row."""
    keep = scores.topk(k, dim=1, largest=False).indices
    mask = torch.ones(scores.shape, dtype=torch.bool, device=scores.device).scatter_(1, keep, False)
    return token_mask_from_bool(mask, k)


def random_mask(
    batch: int,
    num_tokens: int,
    *,
    mask_ratio: float,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> TokenMask:
    """MAE-style random mask of ``batch`` rows of ``num_tokens`` tokens: ``K = int(L·(1 − mask_ratio))`` visible.

    A uniformly random subset per row (the ``K`` smallest of i.i.d. uniform keys), on ``device``.
    """
    _check_generator(generator)
    k = visible_count(num_tokens, mask_ratio=mask_ratio, rounding="reference")
    return _lowest(torch.rand(batch, num_tokens, generator=generator).to(device), k)


def mamp_motion(x: Tensor, *, segment: int) -> Tensor:
    """MAMP's per-token motion ``(B, TP·V)`` of ``x`` ``(B, T, V, C)``: mean ``|p_t − p_{t−1}|`` per patch.

    ``p_t`` is the ``segment × C`` patch of token ``(t, v)``; the first temporal patch copies the second.
    Needs ``TP ≥ 2``. Without gradient, float32 at least.
    """
    tp = _check_clip(x, segment)
    if tp < 2:
        raise ConfigError(f"MAMP's motion needs at least 2 temporal patches; got {x.shape[1]} frames / {segment}")
    patches = rearrange(_motion_input(x), "b (tp s) v c -> b tp v (s c)", s=segment)
    motion = (patches[:, 1:] - patches[:, :-1]).abs_().mean(dim=3)  # (B, TP − 1, V)
    return rearrange(torch.cat([motion[:, :1], motion], dim=1), "b tp v -> b (tp v)")


def _motion_aware_mask(x: Tensor, uniform: Tensor, *, segment: int, k: int, tau: float) -> TokenMask:
    """:func:`motion_aware_mask` with its uniform draws ``uniform`` ``(B, L)`` given."""
    motion = mamp_motion(x, segment=segment)
    logits = motion / (motion.amax(dim=1, keepdim=True) * tau + _EPS_MAMP)
    uniform = uniform.to(x.device)
    gumbel = -torch.log(-torch.log(uniform + _EPS_MAMP) + _EPS_MAMP)
    return _lowest(F.log_softmax(logits, dim=1) + gumbel, k)


def motion_aware_mask(
    x: Tensor,
    *,
    segment: int = 4,
    mask_ratio: float = 0.9,
    tau: float = 0.8,
    generator: torch.Generator,
) -> TokenMask:
    """MAMP's motion-aware random mask of ``x`` ``(B, T, V, C)`` (module doc); ``L = (T / segment)·V``.

    ``K = int(L·(1 − mask_ratio))`` (74 of 750 at 0.9). ``tau`` (``motion_aware_tau``: 0.80 NTU-60/PKU,
    0.75 NTU-120) must be > 0; smaller values favour masking moving tokens more. On ``x.device``.
    """
    tp = _check_clip(x, segment)
    if not (math.isfinite(tau) and tau > 0):
        raise ConfigError(f"MAMP's tau must be > 0, got {tau} (the reference uses plain random masking for 0)")
    _check_generator(generator)
    length = tp * x.shape[2]
    k = visible_count(length, mask_ratio=mask_ratio, rounding="reference")
    uniform = torch.rand(x.shape[0], length, generator=generator)
    return _motion_aware_mask(x, uniform, segment=segment, k=k, tau=tau)
