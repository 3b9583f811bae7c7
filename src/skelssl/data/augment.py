"""Batched skeleton augmentations: pure tensor functions with explicit randomness.

Every function takes a batch ``x`` of shape ``(N, M, T, V, C)`` (samples, persons, frames, joints,
coordinates) on any device, in fp32, fp64 or bf16, and returns a new tensor of the same shape, dtype and
device. Random parameters are drawn **on the CPU** from an explicit ``torch.Generator`` (so a seed gives
the same result on every device) and moved to ``x.device``.

By default every sample gets its own parameters (its own crop start, shear matrix, rotation, flip
decision, ...), drawn in one vectorised call. ``batch_shared=True`` instead draws once and applies that
draw to the whole batch, as the PSTL/AimCLR reference code does (one Python ``random`` call per batch).

Each random transform is split into its parts, usable on their own:

- ``sample_*``: draw the per-sample parameters (small CPU tensors),
- a deterministic apply (``mirror_crop``, ``shear``, ``rotate``, ``flip``, ``gaussian_blur``, ``drop_joints``),
- ``random_*``: both together.

Linear coordinate maps (shear, rotation) are applied as explicit broadcast sums over the ``C`` coordinates,
not as a matmul, so CUDA's TF32 matmul setting cannot change their precision; bf16 input is transformed
in fp32 and cast back.

Reference: PSTL ``model.py`` (crop, shear, random_rotate, random_spatial_flip, reverse, gaus_noise,
GaussianBlurConv, get_ignore_joint, get_ignore_part), MAMP ``feeder/tools.py`` ``random_rot`` and
Skeleton2vec ``RandomRot`` (uniform ±0.3 rad rotation); ``spec/methods.md`` §1.4, §2.2, §3.1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange

from skelssl.errors import ConfigError
from skelssl.skeleton.layouts import PART_NAMES, Layout, get_layout
from skelssl.utils import closest

__all__ = [
    "TRANSFORMS",
    "AugmentConfig",
    "augment",
    "drop_joints",
    "euler_rotation",
    "flip",
    "gaussian_blur",
    "gaussian_kernels",
    "gaussian_noise",
    "joint_mask",
    "mirror_crop",
    "mirror_crop_indices",
    "random_flip",
    "random_gaussian_blur",
    "random_joint_drop",
    "random_part_drop",
    "random_reverse",
    "random_rotate",
    "random_rotate_pstl",
    "random_shear",
    "random_temporal_crop",
    "reverse",
    "rotate",
    "sample_joint_drop",
    "sample_part_drop",
    "sample_pstl_angles",
    "sample_shear",
    "sample_uniform_angles",
    "shear",
]

# Names usable in ``AugmentConfig.transforms``.
TRANSFORMS = (
    "crop",  # mirror-padded temporal crop (PSTL)
    "shear",  # random shear (PSTL)
    "rotate_pstl",  # one main axis 0–30°, the others 0–1° (PSTL)
    "rotate",  # U(-θ, θ) about x, y, z (MAMP, Skeleton2vec)
    "flip",  # left/right joint swap (PSTL)
    "reverse",  # time reversal
    "noise",  # Gaussian noise
    "blur",  # Gaussian blur along time
    "joint_drop",  # zero k random joints
    "part_drop",  # zero the joints of random body parts
)


# --------------------------------------------------------------------------------------------------
# Helpers


def _check_batch(x: torch.Tensor) -> None:
    if x.ndim != 5:
        raise ValueError(f"expected a batch of shape (N, M, T, V, C), got shape {tuple(x.shape)}")


def _num_draws(n: int, batch_shared: bool) -> int:
    return 1 if batch_shared else n


def _to_batch(params: torch.Tensor, n: int) -> torch.Tensor:
    """Broadcast a one-draw parameter tensor ``(1, ...)`` to ``(n, ...)`` (no copy)."""
    return params.expand(n, *params.shape[1:]) if params.shape[0] != n else params


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    """Arithmetic dtype for ``x``: fp64 stays fp64, everything else (fp32, bf16, fp16) is done in fp32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _per_sample(params: torch.Tensor, n: int, name: str) -> torch.Tensor:
    """Parameters ``(1, ...)`` or ``(n, ...)`` as ``(n, ...)``; any other leading size is an error."""
    if params.shape[0] not in (1, n):
        raise ValueError(f"{name}: {params.shape[0]} parameter sets for a batch of {n}")
    return _to_batch(params, n)


def _linear_coords(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``out[n, ..., d] = Σ_c x[n, ..., c] · w[n, c, d]`` for ``x (N, M, T, V, C)``, ``w (N, C, C)``.

    A broadcast sum over the C coordinates (C is 2 or 3): exact fp32 on every device, whatever the
    TF32 matmul setting.
    """
    dtype = _work_dtype(x)
    xf = rearrange(x.to(dtype), "n m t v c -> n (m t v) c")  # 3-D broadcasting is much faster than 6-D
    w = rearrange(w.to(device=x.device, dtype=dtype), "n c d -> n 1 c d")
    out = xf[..., 0:1] * w[..., 0, :]
    for c in range(1, x.shape[-1]):
        out.addcmul_(xf[..., c : c + 1], w[..., c, :])
    return out.view(x.shape).to(x.dtype)


def _select(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per sample, ``a[i]`` where ``mask[i]`` else ``b[i]``; ``mask`` bool ``(N,)``, ``a`` and ``b`` ``(N, ...)``."""
    n = a.shape[0]
    m = rearrange(mask, "n -> n 1").to(a.device)
    return torch.where(m, a.reshape(n, -1), b.reshape(n, -1)).view(a.shape)


def _bernoulli(n: int, p: float, generator: torch.Generator, batch_shared: bool) -> torch.Tensor:
    """``(n,)`` bool, each True with probability ``p`` (one shared decision if ``batch_shared``)."""
    u = torch.rand(_num_draws(n, batch_shared), generator=generator)
    return _to_batch(u < p, n)


# --------------------------------------------------------------------------------------------------
# Temporal crop (PSTL ``crop``)


def mirror_crop_indices(starts: torch.Tensor, length: int, pad: int) -> torch.Tensor:
    """Source frame indices of a crop of a sequence mirror-padded by ``pad`` frames at both ends.

    The padded sequence is ``x[pad-1], …, x[0], x[0], …, x[T-1], x[T-1], …, x[T-pad]`` (the first and
    last ``pad`` frames reversed, as PSTL's ``crop``); a crop starting at padded position ``s`` takes
    ``length`` = T frames. ``starts`` ``(N,)`` in ``[0, 2·pad]``; returns int64 ``(N, T)`` in ``[0, T)``.
    """
    if not 0 <= pad <= length:
        raise ValueError(f"padding of {pad} frames does not fit a sequence of {length} frames")
    starts = starts.to(torch.int64)
    if starts.numel() and (int(starts.min()) < 0 or int(starts.max()) > 2 * pad):
        raise ValueError(f"crop starts must lie in [0, {2 * pad}]")
    pos = rearrange(starts, "n -> n 1") + torch.arange(length, device=starts.device) - pad
    pos = torch.where(pos < 0, -pos - 1, pos)
    return torch.where(pos >= length, 2 * length - 1 - pos, pos)


def mirror_crop(x: torch.Tensor, starts: torch.Tensor, *, pad: int) -> torch.Tensor:
    """Crop each sample at its own start in its mirror-padded sequence (see :func:`mirror_crop_indices`).

    ``x`` ``(N, M, T, V, C)``, ``starts`` int ``(N,)`` in ``[0, 2·pad]``; returns ``(N, M, T, V, C)``.
    """
    _check_batch(x)
    n, m, t, v = x.shape[:4]
    frames = mirror_crop_indices(_per_sample(starts.reshape(-1), n, "mirror_crop"), t, pad)  # (N, T)
    # gather whole (V, C) frames: row (n, m, t) of the output is row (n, m, frames[n, t]) of the input
    rows = rearrange(torch.arange(n * m), "(n m) -> n m 1", n=n) * t + rearrange(frames, "n t -> n 1 t")
    flat = rearrange(x, "n m t v c -> (n m t) (v c)")
    out = flat.index_select(0, rearrange(rows, "n m t -> (n m t)").to(x.device))
    return rearrange(out, "(n m t) (v c) -> n m t v c", n=n, m=m, v=v)


def random_temporal_crop(
    x: torch.Tensor, *, generator: torch.Generator, padding_ratio: int = 6, batch_shared: bool = False
) -> torch.Tensor:
    """PSTL's temporal crop: mirror-pad ``⌊T / padding_ratio⌋`` frames at both ends, take T frames.

    The start is uniform in ``{0, …, 2·pad}`` per sample (one start for the batch if ``batch_shared``).
    ``(N, M, T, V, C)`` → ``(N, M, T, V, C)``.
    """
    _check_batch(x)
    if padding_ratio < 1:
        raise ValueError(f"padding_ratio must be at least 1, got {padding_ratio}")
    n, t = x.shape[0], x.shape[2]
    pad = t // padding_ratio
    starts = torch.randint(0, 2 * pad + 1, (_num_draws(n, batch_shared),), generator=generator)
    return mirror_crop(x, _to_batch(starts, n), pad=pad)


# --------------------------------------------------------------------------------------------------
# Shear (PSTL ``shear``)


def sample_shear(
    n: int, channels: int = 3, *, generator: torch.Generator, amplitude: float = 1.0, batch_shared: bool = False
) -> torch.Tensor:
    """Shear matrices ``(n, C, C)`` float32: ones on the diagonal, off-diagonal entries i.i.d. U(−a, a)."""
    s = (torch.rand(_num_draws(n, batch_shared), channels, channels, generator=generator) * 2 - 1) * amplitude
    s = torch.where(torch.eye(channels, dtype=torch.bool), torch.ones_like(s), s)
    return _to_batch(s, n)


def shear(x: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Apply shear matrices as PSTL does: ``x'[..., d] = Σ_c x[..., c] · S[n, c, d]``.

    ``x`` ``(N, M, T, V, C)``, ``matrices`` ``(N, C, C)`` or one ``(C, C)`` for the batch.
    """
    _check_batch(x)
    s = matrices if matrices.ndim == 3 else rearrange(matrices, "c d -> 1 c d")
    return _linear_coords(x, _per_sample(s, x.shape[0], "shear"))


def random_shear(
    x: torch.Tensor, *, generator: torch.Generator, amplitude: float = 1.0, batch_shared: bool = False
) -> torch.Tensor:
    """PSTL's random shear (``shear_amp`` = ``amplitude``, 1 in PSTL). ``(N, M, T, V, C)`` → same."""
    _check_batch(x)
    s = sample_shear(x.shape[0], x.shape[-1], generator=generator, amplitude=amplitude, batch_shared=batch_shared)
    return shear(x, s)


# --------------------------------------------------------------------------------------------------
# Rotation (PSTL ``random_rotate``; MAMP ``random_rot``; Skeleton2vec ``RandomRot``)


def euler_rotation(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``R = R_z(γ) · R_y(β) · R_x(α)`` for angles ``(..., 3)`` = (α, β, γ) in radians.

    The per-axis matrices are the reference code's (PSTL, MAMP, Skeleton2vec, identical in all three)::

        R_x = [[1, 0, 0], [0, cos, sin], [0, -sin, cos]]
        R_y = [[cos, 0, -sin], [0, 1, 0], [sin, 0, cos]]
        R_z = [[cos, sin, 0], [-sin, cos, 0], [0, 0, 1]]

    acting on column vectors (``x' = R x``): about x first, then y, then z. Returns ``(..., 3, 3)`` in the
    dtype of ``angles``.
    """
    cos, sin = angles.cos(), angles.sin()
    one, zero = torch.ones_like(cos[..., 0]), torch.zeros_like(cos[..., 0])

    def mat(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)

    ca, cb, cg = cos.unbind(-1)
    sa, sb, sg = sin.unbind(-1)
    rx = mat([[one, zero, zero], [zero, ca, sa], [zero, -sa, ca]])
    ry = mat([[cb, zero, -sb], [zero, one, zero], [sb, zero, cb]])
    rz = mat([[cg, sg, zero], [-sg, cg, zero], [zero, zero, one]])
    return rz @ ry @ rx


def sample_pstl_angles(
    n: int,
    *,
    generator: torch.Generator,
    main_max_deg: float = 30.0,
    other_max_deg: float = 1.0,
    batch_shared: bool = False,
) -> torch.Tensor:
    """PSTL's rotation angles ``(n, 3)`` float64 radians about (x, y, z).

    One main axis, uniform in {x, y, z}, gets U(0°, ``main_max_deg``); the other two U(0°, ``other_max_deg``).
    """
    k = _num_draws(n, batch_shared)
    main = torch.randint(0, 3, (k,), generator=generator)
    u = torch.rand(k, 3, generator=generator, dtype=torch.float64)
    is_main = rearrange(main, "k -> k 1") == torch.arange(3)
    degrees = u * torch.where(is_main, main_max_deg, other_max_deg)
    return _to_batch(torch.deg2rad(degrees), n)


def sample_uniform_angles(
    n: int, *, generator: torch.Generator, theta: float = 0.3, batch_shared: bool = False
) -> torch.Tensor:
    """MAMP/Skeleton2vec rotation angles ``(n, 3)`` float64 radians: i.i.d. U(−θ, θ) about x, y and z."""
    u = torch.rand(_num_draws(n, batch_shared), 3, generator=generator, dtype=torch.float64)
    return _to_batch((u * 2 - 1) * theta, n)


def rotate(x: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Rotate every joint: ``x'[..., i] = Σ_j R[n, i, j] · x[..., j]`` (column-vector convention).

    ``x`` ``(N, M, T, V, C)``, ``matrices`` ``(N, C, C)`` or one ``(C, C)`` for the batch.
    """
    _check_batch(x)
    r = matrices if matrices.ndim == 3 else rearrange(matrices, "c d -> 1 c d")
    return _linear_coords(x, rearrange(_per_sample(r, x.shape[0], "rotate"), "n i j -> n j i"))


def _rotation_for(angles: torch.Tensor, channels: int) -> torch.Tensor:
    """3-D rotations for C = 3; for 2-D input (C = 2) the in-plane rotation by the z angle alone."""
    if channels == 3:
        return euler_rotation(angles)
    if channels == 2:
        return euler_rotation(angles * torch.tensor([0.0, 0.0, 1.0], dtype=angles.dtype))[:, :2, :2]
    raise ValueError(f"rotation needs 2 or 3 coordinates, got C = {channels}")


def random_rotate_pstl(
    x: torch.Tensor,
    *,
    generator: torch.Generator,
    main_max_deg: float = 30.0,
    other_max_deg: float = 1.0,
    batch_shared: bool = False,
) -> torch.Tensor:
    """PSTL's random rotation (see :func:`sample_pstl_angles`, :func:`euler_rotation`). ``(N, M, T, V, C)``.

    With C = 2 only the in-plane (z) angle is used.
    """
    _check_batch(x)
    angles = sample_pstl_angles(
        x.shape[0],
        generator=generator,
        main_max_deg=main_max_deg,
        other_max_deg=other_max_deg,
        batch_shared=batch_shared,
    )
    return rotate(x, _rotation_for(angles, x.shape[-1]))


def random_rotate(
    x: torch.Tensor, *, generator: torch.Generator, theta: float = 0.3, batch_shared: bool = False
) -> torch.Tensor:
    """MAMP/Skeleton2vec random rotation: U(−θ, θ) rad about x, y, z, ``R = R_z R_y R_x``, all frames.

    The references draw per sample (in the data loader), which is the default here. With C = 2 only the
    in-plane (z) angle is used. ``(N, M, T, V, C)`` → same.
    """
    _check_batch(x)
    angles = sample_uniform_angles(x.shape[0], generator=generator, theta=theta, batch_shared=batch_shared)
    return rotate(x, _rotation_for(angles, x.shape[-1]))


# --------------------------------------------------------------------------------------------------
# Left/right flip (PSTL ``random_spatial_flip``)


def _permutation(permutation: Layout | Sequence[int], num_joints: int) -> torch.Tensor:
    perm = permutation.flip_permutation if isinstance(permutation, Layout) else tuple(permutation)
    if sorted(perm) != list(range(num_joints)):
        raise ValueError(f"flip permutation {perm} is not a permutation of the batch's {num_joints} joints")
    return torch.tensor(perm, dtype=torch.int64)


def flip(x: torch.Tensor, permutation: Layout | Sequence[int], *, mirror_axis: int | None = None) -> torch.Tensor:
    """Swap left and right joints of every sample: ``x'[..., v, :] = x[..., perm[v], :]``.

    ``permutation`` is a layout (its ``flip_permutation``) or the permutation itself. PSTL does not mirror
    coordinates; ``mirror_axis`` (e.g. 0 for x) also negates that coordinate, for a true mirror image.
    """
    _check_batch(x)
    out = x.index_select(3, _permutation(permutation, x.shape[3]).to(x.device))
    if mirror_axis is not None:
        sign = torch.ones(x.shape[-1], dtype=x.dtype)
        sign[mirror_axis] = -1
        out = out * sign.to(x.device)
    return out


def random_flip(
    x: torch.Tensor,
    permutation: Layout | Sequence[int],
    *,
    generator: torch.Generator,
    p: float = 0.5,
    mirror_axis: int | None = None,
    batch_shared: bool = False,
) -> torch.Tensor:
    """Flip left/right (see :func:`flip`) with probability ``p`` per sample. ``(N, M, T, V, C)`` → same."""
    _check_batch(x)
    do = _bernoulli(x.shape[0], p, generator, batch_shared)
    return _select(do, flip(x, permutation, mirror_axis=mirror_axis), x)


# --------------------------------------------------------------------------------------------------
# Time reversal (PSTL ``reverse`` / ``random_time_flip``)


def reverse(x: torch.Tensor) -> torch.Tensor:
    """Reverse time. ``(N, M, T, V, C)`` → same."""
    _check_batch(x)
    return x.flip(2)


def random_reverse(
    x: torch.Tensor, *, generator: torch.Generator, p: float = 0.5, batch_shared: bool = False
) -> torch.Tensor:
    """Reverse time with probability ``p`` per sample. ``(N, M, T, V, C)`` → same."""
    _check_batch(x)
    do = _bernoulli(x.shape[0], p, generator, batch_shared)
    return _select(do, x.flip(2), x)


# --------------------------------------------------------------------------------------------------
# Gaussian noise (PSTL ``gaus_noise``)


def gaussian_noise(
    x: torch.Tensor, *, generator: torch.Generator, std: float = 0.01, mean: float = 0.0
) -> torch.Tensor:
    """Add i.i.d. N(mean, std²) noise to every coordinate. ``(N, M, T, V, C)`` → same.

    The noise is drawn on the CPU (one value per element, as the reference) and moved to ``x.device``,
    so results do not depend on the device. Every element is independent already, so there is no
    ``batch_shared`` variant.
    """
    _check_batch(x)
    noise = torch.randn(x.shape, generator=generator, dtype=_work_dtype(x)) * std + mean
    return (x.to(noise.dtype) + noise.to(x.device)).to(x.dtype)


# --------------------------------------------------------------------------------------------------
# Gaussian blur along time (PSTL ``GaussianBlurConv``)


def gaussian_kernels(sigmas: torch.Tensor, kernel_size: int = 15, *, normalize: bool = True) -> torch.Tensor:
    """Gaussian kernels ``(N, K)`` for ``sigmas`` ``(N,)``: ``exp(−k² / 2σ²)`` at ``k = −K//2 … K//2``.

    ``normalize=True`` divides by the sum (a true blur). The reference does not normalise: its kernel sums
    to about σ·√(2π) (≈ 5 at σ = 2), so it scales the signal as well as blurring it (``normalize=False``).
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    radius = kernel_size // 2
    k = torch.arange(-radius, radius + 1, dtype=sigmas.dtype)
    kernels = torch.exp(-(k**2) / (2 * rearrange(sigmas, "n -> n 1") ** 2))
    return kernels / kernels.sum(dim=1, keepdim=True) if normalize else kernels


def gaussian_blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve every trajectory along time with its sample's kernel, zero-padded (as the reference's conv).

    ``out[n, m, t] = Σ_j w[n, j] · x[n, m, t + j − K//2]`` (x = 0 outside the clip). ``x`` ``(N, M, T, V, C)``,
    ``kernels`` ``(N, K)`` or one ``(K,)``, K odd.
    """
    _check_batch(x)
    w = kernels if kernels.ndim == 2 else rearrange(kernels, "k -> 1 k")
    n, t = x.shape[0], x.shape[2]
    size = w.shape[1]
    if size % 2 == 0:
        raise ValueError(f"kernel size must be odd, got {size}")
    dtype = _work_dtype(x)
    m, frame = x.shape[1], x.shape[3] * x.shape[4]
    w = _per_sample(w, n, "gaussian_blur").to(device=x.device, dtype=dtype)
    w = rearrange(w, "n k -> k n 1").repeat_interleave(m, dim=1)  # (K, N·M, 1)
    radius = size // 2
    # one row per (sample, person) with the frames side by side: a shift by j frames is a shift by j·V·C
    flat = rearrange(x.to(dtype), "n m t v c -> (n m) (t v c)")
    padded = F.pad(flat, (radius * frame, radius * frame))  # zero frames before and after
    length = t * frame
    out = padded[:, :length] * w[0]
    for j in range(1, size):  # K shifted multiply-adds: exact on every device, no im2col copy
        out.addcmul_(padded[:, j * frame : j * frame + length], w[j])
    return rearrange(out, "(n m) (t v c) -> n m t v c", n=n, t=t, v=x.shape[3]).to(x.dtype)


def random_gaussian_blur(
    x: torch.Tensor,
    *,
    generator: torch.Generator,
    kernel_size: int = 15,
    sigma: tuple[float, float] = (0.1, 2.0),
    p: float = 0.5,
    normalize: bool = True,
    batch_shared: bool = False,
) -> torch.Tensor:
    """PSTL's Gaussian blur along time: σ ~ U(sigma), applied with probability ``p`` per sample.

    See :func:`gaussian_kernels` for ``normalize`` (``False`` reproduces the reference's unnormalised kernel).
    ``(N, M, T, V, C)`` → same.
    """
    _check_batch(x)
    n = x.shape[0]
    k = _num_draws(n, batch_shared)
    sigmas = sigma[0] + (sigma[1] - sigma[0]) * torch.rand(k, generator=generator, dtype=torch.float64)
    do = torch.rand(k, generator=generator) < p
    kernels = gaussian_kernels(_to_batch(sigmas, n), kernel_size, normalize=normalize)
    return _select(_to_batch(do, n), gaussian_blur(x, kernels), x)


# --------------------------------------------------------------------------------------------------
# Joint and body-part dropping (PSTL ``get_ignore_joint`` / ``get_ignore_part``)


def sample_joint_drop(
    n: int, num_joints: int, k: int, *, generator: torch.Generator, batch_shared: bool = False
) -> torch.Tensor:
    """``k`` distinct joints per sample, uniformly without replacement: int64 ``(n, k)``, each row sorted."""
    if not 0 <= k <= num_joints:
        raise ValueError(f"cannot drop {k} of {num_joints} joints")
    scores = torch.rand(_num_draws(n, batch_shared), num_joints, generator=generator)
    chosen = scores.argsort(dim=1)[:, :k].sort(dim=1).values
    return _to_batch(chosen, n)


def sample_part_drop(
    n: int, layout: Layout | str, num_parts: int = 1, *, generator: torch.Generator, batch_shared: bool = False
) -> torch.Tensor:
    """``num_parts`` distinct body parts per sample (of the layout's five), as a joint mask bool ``(n, V)``.

    True marks a dropped joint. Parts differ in size, so the result is a mask rather than indices.
    """
    layout = get_layout(layout) if isinstance(layout, str) else layout
    if not 0 <= num_parts <= len(PART_NAMES):
        raise ValueError(f"cannot drop {num_parts} of {len(PART_NAMES)} body parts")
    members = torch.zeros(len(PART_NAMES), layout.num_joints, dtype=torch.bool)
    for i, name in enumerate(PART_NAMES):
        members[i, list(layout.parts[name])] = True
    scores = torch.rand(_num_draws(n, batch_shared), len(PART_NAMES), generator=generator)
    chosen = scores.argsort(dim=1)[:, :num_parts]  # (k, P)
    return _to_batch(members[chosen].any(dim=1), n)


def joint_mask(dropped: torch.Tensor, num_joints: int) -> torch.Tensor:
    """Joint indices ``(k,)`` / ``(N, k)`` (or a bool mask, returned as is) as a bool mask ``(V,)`` / ``(N, V)``."""
    if dropped.dtype == torch.bool:
        if dropped.shape[-1] != num_joints:
            raise ValueError(f"joint mask has {dropped.shape[-1]} joints, expected {num_joints}")
        return dropped
    mask = torch.zeros(*dropped.shape[:-1], num_joints, dtype=torch.bool, device=dropped.device)
    return mask.scatter(-1, dropped.to(torch.int64), True)


def drop_joints(x: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
    """Zero the given joints (every person and frame).

    ``dropped``: indices ``(k,)`` (same for the batch) or ``(N, k)``, or a bool mask ``(V,)`` or ``(N, V)``.
    ``(N, M, T, V, C)`` → same.
    """
    _check_batch(x)
    mask = joint_mask(dropped, x.shape[3]).to(x.device)
    mask = rearrange(mask, "v -> 1 1 1 v 1") if mask.ndim == 1 else rearrange(mask, "n v -> n 1 1 v 1")
    return x.masked_fill(mask, 0)


def random_joint_drop(
    x: torch.Tensor, k: int, *, generator: torch.Generator, batch_shared: bool = False
) -> torch.Tensor:
    """Zero ``k`` random joints per sample (see :func:`sample_joint_drop`). ``(N, M, T, V, C)`` → same."""
    _check_batch(x)
    return drop_joints(x, sample_joint_drop(x.shape[0], x.shape[3], k, generator=generator, batch_shared=batch_shared))


def random_part_drop(
    x: torch.Tensor,
    num_parts: int = 1,
    *,
    layout: Layout | str,
    generator: torch.Generator,
    batch_shared: bool = False,
) -> torch.Tensor:
    """Zero the joints of ``num_parts`` random body parts per sample. ``(N, M, T, V, C)`` → same."""
    _check_batch(x)
    mask = sample_part_drop(x.shape[0], layout, num_parts, generator=generator, batch_shared=batch_shared)
    return drop_joints(x, mask)


# --------------------------------------------------------------------------------------------------
# Composed pipeline


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations to apply, in order, with their parameters.

    ``transforms`` names steps from :data:`TRANSFORMS`, applied left to right. ``batch_shared`` draws one
    set of parameters per batch (the PSTL reference) instead of one per sample.
    """

    transforms: tuple[str, ...] = ()
    batch_shared: bool = False
    padding_ratio: int = 6  # crop: pad ⌊T / ratio⌋ frames at both ends
    shear_amplitude: float = 1.0  # shear: off-diagonals U(−a, a)
    rotation_main_max_deg: float = 30.0  # rotate_pstl: main axis U(0, this)
    rotation_other_max_deg: float = 1.0  # rotate_pstl: other axes U(0, this)
    rotation_theta: float = 0.3  # rotate: U(−θ, θ) rad on every axis
    flip_p: float = 0.5
    mirror_axis: int | None = None  # flip: also negate this coordinate (None: joints swapped only, as PSTL)
    reverse_p: float = 0.5
    noise_std: float = 0.01
    blur_kernel: int = 15
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_p: float = 0.5
    blur_normalize: bool = True  # False: the reference's unnormalised kernel
    drop_joints: int = 1  # joint_drop: joints zeroed per sample
    drop_parts: int = 1  # part_drop: body parts zeroed per sample

    def __post_init__(self) -> None:
        object.__setattr__(self, "transforms", tuple(self.transforms))
        object.__setattr__(self, "blur_sigma", tuple(float(s) for s in self.blur_sigma))
        for name in self.transforms:
            if name not in TRANSFORMS:
                hint = closest(name, TRANSFORMS)
                raise ConfigError(
                    f"unknown augmentation {name!r}"
                    + (f" (did you mean {hint!r}?)" if hint else "")
                    + f"; known: {', '.join(TRANSFORMS)}"
                )
        checks = [
            (self.padding_ratio >= 1, "padding_ratio must be at least 1"),
            (self.shear_amplitude >= 0, "shear_amplitude must be non-negative"),
            (0 <= self.rotation_other_max_deg, "rotation_other_max_deg must be non-negative"),
            (0 <= self.rotation_main_max_deg, "rotation_main_max_deg must be non-negative"),
            (self.rotation_theta >= 0, "rotation_theta must be non-negative"),
            (self.noise_std >= 0, "noise_std must be non-negative"),
            (self.blur_kernel >= 1 and self.blur_kernel % 2 == 1, "blur_kernel must be odd and positive"),
            (
                len(self.blur_sigma) == 2 and 0 < self.blur_sigma[0] <= self.blur_sigma[1],
                "blur_sigma must be (lo, hi) with 0 < lo ≤ hi",
            ),
            (self.drop_joints >= 0, "drop_joints must be non-negative"),
            (0 <= self.drop_parts <= len(PART_NAMES), f"drop_parts must be in [0, {len(PART_NAMES)}]"),
            (self.mirror_axis is None or self.mirror_axis >= 0, "mirror_axis must be a coordinate index or None"),
        ]
        checks += [(0 <= p <= 1, f"{k} must be a probability") for k, p in self._probabilities().items()]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"augmentation config: {message}")

    def _probabilities(self) -> dict[str, float]:
        return {"flip_p": self.flip_p, "reverse_p": self.reverse_p, "blur_p": self.blur_p}

    @classmethod
    def pstl(cls, **changes: Any) -> AugmentConfig:
        """PSTL's chain, in the reference's order: crop (ratio 6) → shear (1) → rotate (30°/1°) → flip (0.5).

        Per-sample draws by default; ``AugmentConfig.pstl(batch_shared=True)`` is the reference exactly.
        """
        return dataclasses.replace(cls(transforms=("crop", "shear", "rotate_pstl", "flip")), **changes)

    @classmethod
    def skeleton2vec(cls, **changes: Any) -> AugmentConfig:
        """Skeleton2vec's ``RandomRot(θ = 0.3)``: U(−0.3, 0.3) rad about x, y, z, per sample (as its loader)."""
        return dataclasses.replace(cls(transforms=("rotate",), rotation_theta=0.3), **changes)

    @classmethod
    def mamp(cls, **changes: Any) -> AugmentConfig:
        """MAMP's ``random_rot(θ = 0.3)``: the same rotation as Skeleton2vec, per sample (as its loader)."""
        return dataclasses.replace(cls(transforms=("rotate",), rotation_theta=0.3), **changes)


def augment(
    x: torch.Tensor,
    config: AugmentConfig,
    *,
    layout: Layout | str | None = None,
    generator: torch.Generator,
) -> torch.Tensor:
    """Apply ``config``'s transforms in order to a batch ``(N, M, T, V, C)``; returns a new tensor.

    ``layout`` is needed by ``flip`` and ``part_drop`` (left/right pairs, body parts). Each call makes
    fresh draws from ``generator``: PSTL calls this three times per step for its three views.
    """
    _check_batch(x)
    layout = get_layout(layout) if isinstance(layout, str) else layout
    if layout is not None and layout.num_joints != x.shape[3]:
        raise ValueError(f"layout {layout.name!r} has {layout.num_joints} joints, the batch has {x.shape[3]}")
    shared = config.batch_shared
    out = x
    for name in config.transforms:
        if name in ("flip", "part_drop") and layout is None:
            raise ValueError(f"augmentation {name!r} needs a layout")
        if name == "crop":
            out = random_temporal_crop(
                out, generator=generator, padding_ratio=config.padding_ratio, batch_shared=shared
            )
        elif name == "shear":
            out = random_shear(out, generator=generator, amplitude=config.shear_amplitude, batch_shared=shared)
        elif name == "rotate_pstl":
            out = random_rotate_pstl(
                out,
                generator=generator,
                main_max_deg=config.rotation_main_max_deg,
                other_max_deg=config.rotation_other_max_deg,
                batch_shared=shared,
            )
        elif name == "rotate":
            out = random_rotate(out, generator=generator, theta=config.rotation_theta, batch_shared=shared)
        elif name == "flip":
            assert layout is not None
            out = random_flip(
                out, layout, generator=generator, p=config.flip_p, mirror_axis=config.mirror_axis, batch_shared=shared
            )
        elif name == "reverse":
            out = random_reverse(out, generator=generator, p=config.reverse_p, batch_shared=shared)
        elif name == "noise":
            out = gaussian_noise(out, generator=generator, std=config.noise_std)
        elif name == "blur":
            out = random_gaussian_blur(
                out,
                generator=generator,
                kernel_size=config.blur_kernel,
                sigma=config.blur_sigma,
                p=config.blur_p,
                normalize=config.blur_normalize,
                batch_shared=shared,
            )
        elif name == "joint_drop":
            out = random_joint_drop(out, config.drop_joints, generator=generator, batch_shared=shared)
        elif name == "part_drop":
            assert layout is not None
            out = random_part_drop(out, config.drop_parts, layout=layout, generator=generator, batch_shared=shared)
    return out if out is not x else x.clone()
