"""Temporal views against the reference formulas: cv2 INTER_LINEAR, F.interpolate, MAMP crop, PySKL sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from skelssl.data.temporal import (
    crop_bounds,
    crop_resize,
    fit_persons,
    resize_cv2,
    resize_torch,
    uniform_indices,
)

# -- independent transcriptions of the reference code -----------------------------------------------------


def cv2_linear_rows(src: np.ndarray, out_rows: int) -> np.ndarray:
    """OpenCV resize.cpp, INTER_LINEAR, vertical pass (the width is unchanged), one output row at a time."""
    rows = src.shape[0]
    inv_scale_y = out_rows / rows
    scale_y = 1.0 / inv_scale_y
    out = np.empty((out_rows, *src.shape[1:]), dtype=np.float32)
    for dy in range(out_rows):
        fy = np.float32((dy + 0.5) * scale_y - 0.5)
        sy = math.floor(fy)
        fy = np.float32(fy - np.float32(sy))
        r0 = min(max(sy, 0), rows - 1)  # clip(sy0 - ksize2 + 1 + k, 0, rows) for k = 0, 1
        r1 = min(max(sy + 1, 0), rows - 1)
        out[dy] = src[r0] * (np.float32(1) - fy) + src[r1] * fy
    return out


def mamp_interpolate(x: np.ndarray, window: int) -> np.ndarray:
    """MAMP ``valid_crop_resize``'s resize, called as MAMP calls it: (C, T, V, M) → (C·V·M, T) → bilinear."""
    seq = np.ascontiguousarray(x.transpose(3, 0, 2, 1))  # (T, M, V, C) -> (C, T, V, M)
    c, t, v, m = seq.shape
    data = torch.tensor(seq, dtype=torch.float).permute(0, 2, 3, 1).contiguous().view(c * v * m, t)
    data = F.interpolate(data[None, None], size=(c * v * m, window), mode="bilinear", align_corners=False)
    data = data[0, 0].contiguous().view(c, v, m, window).permute(0, 3, 1, 2).contiguous().numpy()
    return data.transpose(1, 3, 2, 0)  # back to (T, M, V, C)


def pyskl_test_clips(num_frames: int, clip_len: int, p_interval=(1.0, 1.0), seed: int = 255) -> np.ndarray:
    """PySKL ``UniformSampleFrames._get_test_clips`` (num_clips = 1) followed by ``np.mod(inds, num_frames)``."""
    rs = np.random.RandomState(seed)  # == np.random.seed(seed) on the legacy global generator
    ratio = rs.rand() * (p_interval[1] - p_interval[0]) + p_interval[0]
    n = int(ratio * num_frames)
    off = rs.randint(num_frames - n + 1)
    if n < clip_len:
        inds = np.arange(0, clip_len)
    elif clip_len <= n < clip_len * 2:
        basic = np.arange(clip_len)
        chosen = rs.choice(clip_len + 1, n - clip_len, replace=False)
        offset = np.zeros(clip_len + 1, dtype=np.int64)
        offset[chosen] = 1
        inds = basic + np.cumsum(offset)[:-1]
    else:
        bids = np.array([i * n // clip_len for i in range(clip_len + 1)])
        inds = bids[:clip_len] + rs.randint(np.diff(bids))
    return np.mod(inds + off, num_frames)


def decode_train_clips(num_frames: int, clip_len: int, rng: np.random.Generator, p_interval=(1.0, 1.0)) -> np.ndarray:
    """PySKL ``UniformSampleDecode._get_clips`` with its ``np.random`` calls made on ``rng`` in the same order."""
    ratio = rng.random() * (p_interval[1] - p_interval[0]) + p_interval[0]
    n = int(ratio * num_frames)
    off = rng.integers(num_frames - n + 1)
    if n < clip_len:
        start = rng.integers(0, n)
        return (np.arange(start, start + clip_len) % n) + off
    if clip_len <= n < 2 * clip_len:
        chosen = rng.choice(clip_len + 1, n - clip_len, replace=False)
        offset = np.zeros(clip_len + 1, dtype=np.int64)
        offset[chosen] = 1
        return np.arange(clip_len) + np.cumsum(offset)[:-1] + off
    bids = np.array([i * n // clip_len for i in range(clip_len + 1)])
    return bids[:clip_len] + rng.integers(np.diff(bids)) + off


def fma_cpu() -> bool:
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


# -- cv2-style resize (AimCLR) ----------------------------------------------------------------------------


def test_resize_cv2_known_values() -> None:
    # Values cv2.resize(INTER_LINEAR) gives on these columns (half-pixel centres, clamped borders).
    down = resize_cv2(np.array([0, 1, 2, 3], dtype=np.float32), 2)
    np.testing.assert_array_equal(down, [0.5, 2.5])
    up = resize_cv2(np.array([0, 1], dtype=np.float32), 4)
    np.testing.assert_array_equal(up, [0.0, 0.25, 0.75, 1.0])
    np.testing.assert_array_equal(resize_cv2(np.array([7.0], dtype=np.float32), 3), [7, 7, 7])


@pytest.mark.parametrize("length", [1, 2, 3, 17, 49, 50, 51, 99, 100, 173, 300])
def test_resize_cv2_matches_opencv_formula(length: int) -> None:
    rng = np.random.default_rng(length)
    x = rng.standard_normal((length, 2, 25, 3)).astype(np.float32)
    got = resize_cv2(x, 50)
    assert got.shape == (50, 2, 25, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, cv2_linear_rows(x, 50), rtol=0, atol=2e-6)


def test_resize_cv2_preserves_linear_motion() -> None:
    # Linear interpolation reproduces a linear trajectory inside the sampled range.
    t = np.arange(80, dtype=np.float32)
    out = resize_cv2(t, 50)
    src = (np.arange(50) + 0.5) * 80 / 50 - 0.5
    np.testing.assert_allclose(out, np.clip(src, 0, 79), atol=1e-4)


# -- torch-bilinear resize and crop (MAMP) ----------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 2, 5, 63, 64, 100, 119, 120, 121, 299])
@pytest.mark.parametrize("window", [120, 50])
def test_resize_torch_equals_f_interpolate(length: int, window: int) -> None:
    rng = np.random.default_rng(length * 1000 + window)
    x = (rng.standard_normal((length, 2, 25, 3)) * 2).astype(np.float32)
    got = resize_torch(x, window)
    ref = mamp_interpolate(x, window)
    assert got.shape == ref.shape == (window, 2, 25, 3)
    if fma_cpu():  # PyTorch's AVX2/AVX-512 kernels, reproduced bit for bit
        np.testing.assert_array_equal(got, ref)
    else:
        np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5)


def test_crop_test_mode_is_centred_95_percent() -> None:
    for n in (1, 10, 39, 40, 41, 100, 300):
        start, length = crop_bounds(n, train=False, test_crop=0.95)
        bias = int((1 - 0.95) * n / 2)
        assert (start, length) == (bias, n - 2 * bias)
        assert start == n - (start + length)  # centred
    x = np.random.default_rng(0).standard_normal((100, 2, 25, 3)).astype(np.float32)
    out = crop_resize(x, 120, train=False)
    np.testing.assert_allclose(out, mamp_interpolate(x[2:98], 120), rtol=0, atol=2e-5)
    np.testing.assert_array_equal(out, crop_resize(x, 120, train=False))


def test_crop_train_mode_follows_mamp() -> None:
    x = np.random.default_rng(1).standard_normal((150, 2, 25, 3)).astype(np.float32)
    for seed in range(20):
        got = crop_resize(x, 120, train=True, rng=np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        p = rng.random() * (1.0 - 0.5) + 0.5
        cropped = np.minimum(np.maximum(int(np.floor(150 * p)), 64), 150)
        bias = rng.integers(0, 150 - cropped + 1)
        ref = mamp_interpolate(x[bias : bias + cropped], 120)
        np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5)


@given(n=st.integers(1, 400), seed=st.integers(0, 2**32 - 1), low=st.floats(0.05, 1.0))
@settings(max_examples=150, deadline=None)
def test_crop_bounds_properties(n: int, seed: int, low: float) -> None:
    start, length = crop_bounds(n, train=True, rng=np.random.default_rng(seed), p_interval=(low, 1.0), min_crop=64)
    assert 0 <= start and start + length <= n
    assert length == n if n <= 64 else 64 <= length <= n
    assert length >= min(n, math.floor(n * low))


# -- PySKL uniform sampling -------------------------------------------------------------------------------


@pytest.mark.parametrize("num_frames", [*range(1, 12), 45, 89, 90, 91, 120, 179, 180, 181, 250, 300, 399])
def test_uniform_test_mode_is_pyskl_seed_255(num_frames: int) -> None:
    got = uniform_indices(num_frames, 90, train=False)
    np.testing.assert_array_equal(got, pyskl_test_clips(num_frames, 90))
    np.testing.assert_array_equal(got, uniform_indices(num_frames, 90, train=False))  # deterministic
    if num_frames < 90:  # starts at frame 0 and loops
        np.testing.assert_array_equal(got, np.arange(90) % num_frames)


def test_uniform_test_mode_with_p_interval() -> None:
    for n in (60, 150, 250):
        got = uniform_indices(n, 90, train=False, p_interval=(0.5, 1.0))
        np.testing.assert_array_equal(got, pyskl_test_clips(n, 90, (0.5, 1.0)))
        assert got.min() >= 0 and got.max() < n


@pytest.mark.parametrize("num_frames", [1, 2, 30, 89, 90, 91, 150, 179, 180, 181, 300, 400])
def test_uniform_train_mode_is_pyskl_decode(num_frames: int) -> None:
    for seed in range(10):
        got = uniform_indices(num_frames, 90, train=True, rng=np.random.default_rng(seed))
        ref = decode_train_clips(num_frames, 90, np.random.default_rng(seed))
        np.testing.assert_array_equal(got, ref)


@given(num_frames=st.integers(1, 400), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_uniform_train_rules(num_frames: int, seed: int) -> None:
    inds = uniform_indices(num_frames, 90, train=True, rng=np.random.default_rng(seed))
    assert inds.shape == (90,) and inds.min() >= 0 and inds.max() < num_frames
    diffs = np.diff(inds)
    if num_frames < 90:  # consecutive frames looping over the whole sequence
        assert np.all((diffs == 1) | (diffs == 1 - num_frames))
    elif num_frames < 180:  # 0..89 with T - 90 distinct one-frame skips inserted (before, between or after)
        assert np.all((diffs == 1) | (diffs == 2))
        skipped = inds[0] + int((diffs - 1).sum()) + (num_frames - 1 - inds[-1])
        assert skipped == num_frames - 90
    else:  # one frame inside each of the 90 bins
        bins = np.arange(91) * num_frames // 90
        assert np.all((inds >= bins[:-1]) & (inds < bins[1:]))


def test_uniform_train_draws_differ_by_generator() -> None:
    a = uniform_indices(300, 90, train=True, rng=np.random.default_rng(1))
    b = uniform_indices(300, 90, train=True, rng=np.random.default_rng(2))
    assert not np.array_equal(a, b)


def test_training_views_need_a_generator() -> None:
    with pytest.raises(ValueError, match="Generator"):
        uniform_indices(100, 90, train=True)
    with pytest.raises(ValueError, match="Generator"):
        crop_bounds(100, train=True)


# -- persons ----------------------------------------------------------------------------------------------


def test_fit_persons_pads_and_truncates() -> None:
    x = np.arange(4 * 3 * 2 * 3, dtype=np.float32).reshape(4, 3, 2, 3) + 1
    padded = fit_persons(x, 5)
    assert padded.shape == (4, 5, 2, 3)
    np.testing.assert_array_equal(padded[:, :3], x)
    assert not padded[:, 3:].any()
    np.testing.assert_array_equal(fit_persons(x, 2), x[:, :2])
    assert fit_persons(x, 3) is x
