"""Temporal views of one sequence: linear resize, crop-resize, uniform sampling; person padding.

Every function works on frames along axis 0 of ``(T, ...)`` numpy arrays (normally ``(T, M, V, C)``)
and draws randomness only from the ``np.random.Generator`` it is given:

- :func:`resize_cv2` — ``cv2.resize(..., interpolation=cv2.INTER_LINEAR)`` along time, as AimCLR's
  ``real_resize`` calls it (frame50): half-pixel centres, source ``(i + 0.5) · L/T − 0.5`` rounded to
  float32, float32 weights, rows clamped at both ends.
- :func:`resize_torch` — ``F.interpolate(mode="bilinear", align_corners=False)`` along time, as MAMP's
  ``valid_crop_resize`` calls it: float32 scale ``L/T``, source clamped at 0, weights clamped to [0, 1].
- :func:`crop_resize` — MAMP ``valid_crop_resize``: train crop ratio ``p ~ U[p_interval]``, crop length
  ``clip(⌊p·L⌋, min_crop, L)`` at a random start; test a centred ``test_crop`` crop; then :func:`resize_torch`.
- :func:`uniform_indices` — PySKL uniform sampling of ``clip_len`` frames (train: ``UniformSampleDecode``;
  test: ``UniformSampleFrames``' deterministic test mode, seeded with 255).
- :func:`fit_persons` — pad with zero persons or truncate to ``M``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

PYSKL_TEST_SEED = 255


def _blend(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, w_lo: np.ndarray, w_hi: np.ndarray) -> np.ndarray:
    shape = (-1,) + (1,) * (x.ndim - 1)
    return x[lo] * w_lo.reshape(shape) + x[hi] * w_hi.reshape(shape)


def resize_cv2(x: np.ndarray, length: int) -> np.ndarray:
    """Linear resize of ``(L, ...)`` to ``(length, ...)`` frames with ``cv2.INTER_LINEAR`` semantics (float32).

    For output frame ``i``: ``s = float32((i + 0.5) · scale − 0.5)`` with ``scale = 1 / (length / L)``
    (doubles, as OpenCV), ``f = s − ⌊s⌋`` and rows ``⌊s⌋``, ``⌊s⌋ + 1`` clamped to ``[0, L − 1]``;
    output ``x[lo]·(1 − f) + x[hi]·f`` in float32. ``L == length`` copies.
    """
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    if n < 1 or length < 1:
        raise ValueError(f"cannot resize {n} frames to {length}")
    if n == length:
        return x.copy()
    scale = 1.0 / (length / n)
    src = ((np.arange(length) + 0.5) * scale - 0.5).astype(np.float32)
    base = np.floor(src)
    frac = (src - base).astype(np.float32)
    base = base.astype(np.int64)
    lo, hi = np.clip(base, 0, n - 1), np.clip(base + 1, 0, n - 1)
    return _blend(x, lo, hi, np.float32(1) - frac, frac)


def resize_torch(x: np.ndarray, length: int) -> np.ndarray:
    """Linear resize of ``(L, ...)`` to ``(length, ...)`` frames as ``F.interpolate(bilinear, align_corners=False)``.

    PyTorch's CPU kernel in float32: ``scale = L / length``, ``s = max(scale · (i + 0.5) − 0.5, 0)`` (one
    fused multiply-add), ``lo = min(⌊s⌋, L − 1)``, ``hi = lo + 1`` unless ``lo`` is the last frame,
    ``λ = clip(s − lo, 0, 1)``; output ``fma(x[lo], 1 − λ, x[hi]·λ)``. The fused operations are emulated in
    float64, which reproduces PyTorch's AVX2/AVX-512 kernels bit for bit (other builds differ by an ulp).
    """
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    if n < 1 or length < 1:
        raise ValueError(f"cannot resize {n} frames to {length}")
    if n == length:
        return x.copy()
    scale = np.float64(np.float32(n) / np.float32(length))
    src = (scale * (np.arange(length, dtype=np.float64) + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0))
    lo = np.minimum(np.floor(src).astype(np.int64), n - 1)
    lam = np.clip(src - lo.astype(np.float32), np.float32(0), np.float32(1)).astype(np.float32)
    hi = lo + (lo < n - 1)
    shape = (-1,) + (1,) * (x.ndim - 1)
    w_lo = (np.float32(1) - lam).astype(np.float64).reshape(shape)
    upper = x[hi] * lam.reshape(shape)  # float32 product, rounded
    return (x[lo].astype(np.float64) * w_lo + upper).astype(np.float32)


def crop_bounds(
    num_frames: int,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
    p_interval: Sequence[float] = (0.5, 1.0),
    min_crop: int = 64,
    test_crop: float = 0.95,
) -> tuple[int, int]:
    """``(start, length)`` of MAMP's ``valid_crop_resize`` crop of ``num_frames`` valid frames.

    Train: ``p = U[p_interval]`` (one ``rng.random()``), ``length = min(max(⌊L·p⌋, min_crop), L)``,
    ``start = rng.integers(0, L − length + 1)``. Test: ``bias = int((1 − test_crop) · L / 2)``, the frames
    ``[bias, L − bias)``.
    """
    n = int(num_frames)
    if n < 1:
        raise ValueError("cannot crop an empty sequence")
    if not train:
        bias = int((1 - test_crop) * n / 2)
        return bias, n - 2 * bias
    if rng is None:
        raise ValueError("a training crop needs an np.random.Generator")
    lo, hi = float(p_interval[0]), float(p_interval[-1])
    p = rng.random() * (hi - lo) + lo
    length = min(max(int(np.floor(n * p)), min_crop), n)
    start = int(rng.integers(0, n - length + 1))
    return start, length


def crop_resize(
    x: np.ndarray,
    frames: int,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
    p_interval: Sequence[float] = (0.5, 1.0),
    min_crop: int = 64,
    test_crop: float = 0.95,
) -> np.ndarray:
    """MAMP ``valid_crop_resize`` of all ``L`` frames of ``x``: crop (:func:`crop_bounds`), then :func:`resize_torch`.

    ``(L, ...)`` → ``(frames, ...)`` float32.
    """
    start, length = crop_bounds(
        x.shape[0], train=train, rng=rng, p_interval=p_interval, min_crop=min_crop, test_crop=test_crop
    )
    return resize_torch(x[start : start + length], frames)


def uniform_indices(
    num_frames: int,
    clip_len: int,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
    p_interval: Sequence[float] = (1.0, 1.0),
    test_seed: int = PYSKL_TEST_SEED,
) -> np.ndarray:
    """PySKL uniform sampling: ``clip_len`` frame indices into ``num_frames`` frames (int64).

    A sub-window of ``n = int(U[p_interval] · T)`` frames at offset ``U{0 … T − n}`` is drawn first (both
    draws happen even for ``p_interval = (1, 1)``, as in PySKL). Then, with ``L = clip_len``:

    - ``n < L``: ``L`` consecutive frames looping over the window, from a random start (train) or from 0
      (test);
    - ``L ≤ n < 2L``: ``0 … L − 1`` with ``n − L`` distinct one-frame skips inserted at random;
    - ``n ≥ 2L``: the window cut into ``L`` bins ``[⌊i·n/L⌋, ⌊(i+1)·n/L⌋)``, one random frame from each.

    Train follows ``UniformSampleDecode._get_clips`` with draws from ``rng``. Test follows
    ``UniformSampleFrames._get_test_clips`` exactly: a fresh legacy ``RandomState(test_seed)`` makes the
    same draws as ``np.random.seed(255)`` would, so every sequence of the same length gets the same
    indices. (PySKL's ``UniformSampleDecode`` in test mode differs only for ``n < L``: it draws a seeded
    random start where ``UniformSampleFrames`` starts at 0.)
    """
    total = int(num_frames)
    if total < 1 or clip_len < 1:
        raise ValueError(f"cannot sample {clip_len} frames from {total}")
    lo, hi = float(p_interval[0]), float(p_interval[-1])
    if not train:
        return _test_indices(total, clip_len, lo, hi, int(test_seed)).copy()
    if rng is None:
        raise ValueError("training-mode sampling needs an np.random.Generator")
    ratio = rng.random() * (hi - lo) + lo
    n = max(int(ratio * total), 1)
    off = int(rng.integers(total - n + 1))
    if n < clip_len:
        start = int(rng.integers(0, n))
        return (np.arange(start, start + clip_len) % n) + off
    if n >= 2 * clip_len:
        bins = _bins(n, clip_len)
        return bins[:-1] + rng.integers(np.diff(bins)) + off
    return _with_skips(clip_len, rng.choice(clip_len + 1, n - clip_len, replace=False), off)


@functools.lru_cache(maxsize=4096)
def _test_indices(total: int, clip_len: int, lo: float, hi: float, seed: int) -> np.ndarray:
    """PySKL ``UniformSampleFrames._get_test_clips`` (one clip): a pure function, so memoised."""
    legacy = np.random.RandomState(seed)  # the draws of PySKL's np.random.seed(255), without global state
    ratio = legacy.rand() * (hi - lo) + lo
    n = int(ratio * total)
    off = int(legacy.randint(total - n + 1))
    if n < clip_len:
        out = np.arange(off, off + clip_len) % total
    elif n < 2 * clip_len:
        out = _with_skips(clip_len, legacy.choice(clip_len + 1, n - clip_len, replace=False), off)
    else:
        bins = _bins(n, clip_len)
        out = bins[:-1] + legacy.randint(np.diff(bins)) + off
    out = out.astype(np.int64)
    out.flags.writeable = False
    return out


def _with_skips(clip_len: int, skips: np.ndarray, off: int) -> np.ndarray:
    step = np.zeros(clip_len + 1, dtype=np.int64)
    step[skips] = 1
    return np.arange(clip_len) + np.cumsum(step)[:-1] + off


def _bins(n: int, clip_len: int) -> np.ndarray:
    return np.arange(clip_len + 1, dtype=np.int64) * n // clip_len


def fit_persons(x: np.ndarray, persons: int) -> np.ndarray:
    """Pad ``(T, M, V, C)`` with all-zero persons, or keep the first ``persons``: ``(T, persons, V, C)``."""
    m = x.shape[1]
    if m == persons:
        return x
    if m > persons:
        return x[:, :persons]
    pad = np.zeros((x.shape[0], persons - m, *x.shape[2:]), dtype=x.dtype)
    return np.concatenate([x, pad], axis=1)
