"""Token masks (Skeleton2vec tube masks, MAE random, MAMP Gumbel): loop re-expressions of the reference, invariants,
and statistics on real NW-UCLA clips."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skelssl.data.clips import ClipConfig, ClipDataset
from skelssl.data.importers import get_importer_class
from skelssl.data.prepare import prepare_store
from skelssl.data.store import SkeletonStore
from skelssl.errors import ConfigError
from skelssl.masking import (
    TokenMask,
    mamp_motion,
    motion_aware_mask,
    motion_aware_tube_mask,
    random_mask,
    token_motion,
    tube_intensity,
    tube_mask,
    visible_count,
)
from skelssl.masking.tokens import _motion_aware_mask, _motion_aware_tube_mask


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _walk(b: int, t: int, v: int, seed: int = 0, c: int = 3) -> torch.Tensor:
    """Smooth random trajectories ``(B, T, V, C)`` whose joints move at different speeds."""
    g = _gen(seed)
    speed = torch.rand(b, 1, v, 1, generator=g) * 2
    return (torch.randn(b, t, v, c, generator=g) * speed).cumsum(dim=1) * 0.05


# --- the reference, re-expressed with loops over samples, tubes and joints (numpy, float64) -------------------------


def ref_token_motion(x: np.ndarray, s: int) -> np.ndarray:
    """``(B, TP, V)``: mean over the segment's frames × coords of |x[f+1] − x[f]|, the last frame's motion 0."""
    b, t, v, c = x.shape
    x = x.astype(np.float64)
    out = np.zeros((b, t // s, v))
    for i in range(b):
        for seg in range(t // s):
            for j in range(v):
                total = 0.0
                for f in range(seg * s, seg * s + s):
                    if f + 1 < t:
                        total += float(np.abs(x[i, f + 1, j] - x[i, f, j]).sum())
                out[i, seg, j] = total / (s * c)
    return out


def ref_tube_intensity(x: np.ndarray, s: int, tube_len: int) -> np.ndarray:
    """``(B, tubes, V)``: the motion pooled per tube, divided by the tube's largest joint value + 1e-6."""
    mu = ref_token_motion(x, s)
    b, tp, v = mu.shape
    out = np.zeros((b, tp // tube_len, v))
    for i in range(b):
        for tube in range(tp // tube_len):
            pooled = [mu[i, tube * tube_len : (tube + 1) * tube_len, j].mean() for j in range(v)]
            peak = max(pooled)
            out[i, tube] = [p / (peak + 1e-6) for p in pooled]
    return out


def ref_tube_scores(x: np.ndarray, noise: np.ndarray, s: int, tube_len: int, beta: float) -> np.ndarray:
    return noise.astype(np.float64) + beta * ref_tube_intensity(x, s, tube_len)


def ref_tube_mask(scores: np.ndarray, tube_len: int, k_vis: int) -> np.ndarray:
    """``(B, L)`` bool: per tube, keep the ``k_vis`` lowest scores in every one of its segments."""
    b, tubes, v = scores.shape
    mask = np.ones((b, tubes * tube_len, v), dtype=bool)
    for i in range(b):
        for tube in range(tubes):
            kept = np.argsort(scores[i, tube], kind="stable")[:k_vis]
            for seg in range(tube * tube_len, (tube + 1) * tube_len):
                mask[i, seg, kept] = False
    return mask.reshape(b, -1)


def ref_mamp_motion(x: np.ndarray, s: int) -> np.ndarray:
    """``(B, L)``: mean |patch_t − patch_{t−1}| over the patch's s·C values; the first patch copies the second."""
    b, t, v, _ = x.shape
    x = x.astype(np.float64)
    tp = t // s
    out = np.zeros((b, tp, v))
    for i in range(b):
        for seg in range(1, tp):
            for j in range(v):
                now = x[i, seg * s : seg * s + s, j]
                before = x[i, (seg - 1) * s : seg * s, j]
                out[i, seg, j] = np.abs(now - before).mean()
        out[i, 0] = out[i, 1]
    return out.reshape(b, -1)


def ref_mamp_scores(x: np.ndarray, uniform: np.ndarray, s: int, tau: float) -> np.ndarray:
    """log softmax(m / (τ·max m + 1e-10)) + Gumbel(U), the Gumbel as the reference writes it."""
    m = ref_mamp_motion(x, s)
    out = np.zeros_like(m)
    for i in range(m.shape[0]):
        z = m[i] / (m[i].max() * tau + 1e-10)
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        u = uniform[i].astype(np.float64)
        out[i] = np.log(p) - np.log(-np.log(u + 1e-10) + 1e-10)
    return out


def ref_keep_lowest(scores: np.ndarray, k: int) -> np.ndarray:
    mask = np.ones(scores.shape, dtype=bool)
    for i in range(scores.shape[0]):
        mask[i, np.argsort(scores[i], kind="stable")[:k]] = False
    return mask


def assert_lowest(mask: torch.Tensor, scores: np.ndarray, k: int, tol: float = 1e-5) -> None:
    """Every row (last axis) keeps ``k`` tokens, ``k`` lowest ``scores`` (up to rounding at the boundary)."""
    rows_mask = mask.cpu().numpy().reshape(-1, scores.shape[-1])
    rows_scores = scores.reshape(-1, scores.shape[-1])
    assert rows_mask.shape == rows_scores.shape
    for row_mask, row_scores in zip(rows_mask, rows_scores, strict=True):
        assert int((~row_mask).sum()) == k
        assert row_scores[~row_mask].max() <= row_scores[row_mask].min() + tol


def check_token_mask(tm: TokenMask, b: int, length: int, k: int) -> None:
    """Shapes, dtypes, ascending partition of 0..L−1, consistency with ``mask``, restore round trip."""
    assert tm.mask.shape == (b, length) and tm.mask.dtype == torch.bool
    assert tm.keep_idx.shape == (b, k) and tm.mask_idx.shape == (b, length - k) and tm.restore_idx.shape == (b, length)
    assert tm.keep_idx.dtype == tm.mask_idx.dtype == tm.restore_idx.dtype == torch.int64
    assert tm.num_visible == k
    assert bool(((~tm.mask).sum(dim=1) == k).all())
    if k > 1:
        assert bool((tm.keep_idx.diff(dim=1) > 0).all())
    if length - k > 1:
        assert bool((tm.mask_idx.diff(dim=1) > 0).all())
    both = torch.cat([tm.keep_idx, tm.mask_idx], dim=1)
    assert torch.equal(both.sort(dim=1).values, torch.arange(length).expand(b, length))
    assert not bool(tm.mask.gather(1, tm.keep_idx).any()) and bool(tm.mask.gather(1, tm.mask_idx).all())
    # gather back: the restore index inverts the (keep, mask) order
    assert torch.equal(both.gather(1, tm.restore_idx), torch.arange(length).expand(b, length))
    tokens = torch.randn(b, length, 5)
    vis = torch.stack([tokens[i, tm.keep_idx[i]] for i in range(b)])
    hid = torch.stack([tokens[i, tm.mask_idx[i]] for i in range(b)])
    assert torch.equal(tm.visible(tokens), vis) and torch.equal(tm.masked(tokens), hid)
    restored = torch.cat([vis, hid], 1).gather(1, tm.restore_idx[..., None].expand(-1, -1, 5))
    assert torch.equal(restored, tokens) and torch.equal(tm.restore(vis, hid), tokens)


def tube_persistent(mask: torch.Tensor, tubes: int, tube_len: int, v: int) -> bool:
    grid = mask.reshape(mask.shape[0], tubes, tube_len, v)
    return bool((grid == grid[:, :, :1]).all())


# --- counts and rounding ---------------------------------------------------------------------------------------------


def test_reference_rounding_keeps_2_of_25_and_74_of_750() -> None:
    assert visible_count(25, mask_ratio=0.9) == 2  # int(2.4999…): 92 % masked, as the reference
    assert visible_count(20, mask_ratio=0.9) == 1  # NW-UCLA's 20 joints: int(1.9999…) = 1
    assert visible_count(750, mask_ratio=0.9) == 74
    assert visible_count(20, mask_ratio=0.9, rounding="exact") == 2
    assert visible_count(25, mask_ratio=0.9, rounding="exact") == 2  # 2.5: half goes down
    assert visible_count(25, mask_ratio=0.97, rounding="exact") == 1  # at least one
    assert visible_count(25, mask_ratio=0.5, rounding="exact") == 12
    assert visible_count(10, mask_ratio=0.74, rounding="exact") == 3
    x = _walk(3, 90, 25)
    tm = motion_aware_tube_mask(x, generator=_gen())
    assert tm.num_visible == 60 and tm.mask.shape == (3, 750)
    assert tube_mask(x, generator=_gen()).num_visible == 60
    assert motion_aware_mask(_walk(3, 120, 25), generator=_gen()).num_visible == 74
    assert random_mask(3, 750, mask_ratio=0.9, generator=_gen()).num_visible == 74


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 4),
    tubes=st.integers(1, 3),
    tube_len=st.integers(1, 4),
    s=st.integers(1, 3),
    v=st.integers(2, 26),
    ratio=st.floats(0.0, 0.99),
    rounding=st.sampled_from(["reference", "exact"]),
    beta=st.sampled_from([0.0, 0.1, 2.0]),
    seed=st.integers(0, 2**31),
)
def test_tube_mask_count_partition_persistence_and_loops(b, tubes, tube_len, s, v, ratio, rounding, beta, seed) -> None:
    x = _walk(b, tubes * tube_len * s, v, seed=seed)
    raw = v * (1 - ratio)
    k_vis = int(raw) if rounding == "reference" else max(1, int(np.floor(raw + 0.5 - 1e-9)))
    kwargs = {"segment": s, "tube_len": tube_len, "mask_ratio": ratio, "beta": beta, "rounding": rounding}
    if k_vis < 1 or k_vis >= v:
        with pytest.raises(ConfigError, match="mask_ratio"):
            motion_aware_tube_mask(x, generator=_gen(seed), **kwargs)
        return
    tm = motion_aware_tube_mask(x, generator=_gen(seed), **kwargs)
    length = tubes * tube_len * v
    check_token_mask(tm, b, length, tubes * tube_len * k_vis)
    assert tube_persistent(tm.mask, tubes, tube_len, v)
    # the reference with the same uniform draws (drawn first, (B, tubes, V))
    noise = torch.rand(b, tubes, v, generator=_gen(seed)).numpy()
    scores = ref_tube_scores(x.numpy(), noise, s, tube_len, beta)
    assert_lowest(tm.mask.reshape(b, tubes, tube_len, v)[:, :, 0], scores, k_vis)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 4),
    length=st.integers(2, 300),
    ratio=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**31),
)
def test_random_mask_count_partition_and_loops(b, length, ratio, seed) -> None:
    k = int(length * (1 - ratio))
    if k < 1 or k >= length:
        with pytest.raises(ConfigError, match="mask_ratio"):
            random_mask(b, length, mask_ratio=ratio, generator=_gen(seed))
        return
    tm = random_mask(b, length, mask_ratio=ratio, generator=_gen(seed))
    check_token_mask(tm, b, length, k)
    noise = torch.rand(b, length, generator=_gen(seed)).numpy()
    assert np.array_equal(tm.mask.numpy(), ref_keep_lowest(noise, k))


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 4),
    tp=st.integers(2, 12),
    s=st.integers(1, 4),
    v=st.integers(1, 26),
    ratio=st.floats(0.0, 0.99),
    tau=st.sampled_from([0.75, 0.8, 0.2]),
    seed=st.integers(0, 2**31),
)
def test_motion_aware_mask_count_partition_and_loops(b, tp, s, v, ratio, tau, seed) -> None:
    x = _walk(b, tp * s, v, seed=seed)
    length = tp * v
    k = int(length * (1 - ratio))
    if k < 1 or k >= length:
        with pytest.raises(ConfigError, match="mask_ratio"):
            motion_aware_mask(x, segment=s, mask_ratio=ratio, tau=tau, generator=_gen(seed))
        return
    tm = motion_aware_mask(x, segment=s, mask_ratio=ratio, tau=tau, generator=_gen(seed))
    check_token_mask(tm, b, length, k)
    uniform = torch.rand(b, length, generator=_gen(seed)).numpy()
    assert_lowest(tm.mask, ref_mamp_scores(x.numpy(), uniform, s, tau), k)


# --- equality with the loops on fixed inputs (no tolerance) ---------------------------------------------------------


def test_motions_and_intensity_match_loops() -> None:
    x = _walk(3, 30, 7, seed=3)
    x[1, :, 2] = 0  # a joint that never moves
    x[2] = 0  # an all-zero (padded) person
    ref = ref_token_motion(x.numpy(), 3)
    np.testing.assert_allclose(token_motion(x, segment=3).numpy(), ref.reshape(3, -1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        tube_intensity(x, segment=3, tube_len=5).numpy(), ref_tube_intensity(x.numpy(), 3, 5), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(mamp_motion(x, segment=3).numpy(), ref_mamp_motion(x.numpy(), 3), rtol=1e-5, atol=1e-7)
    assert float(tube_intensity(x, segment=3, tube_len=5).max()) <= 1.0
    assert float(tube_intensity(x, segment=3, tube_len=5)[2].abs().max()) == 0.0
    # bf16 input: computed in float32
    assert token_motion(x.bfloat16(), segment=3).dtype == torch.float32


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.2, 5.0])
def test_tube_mask_equals_loops_with_injected_noise(beta: float) -> None:
    x = _walk(6, 90, 25, seed=1)
    noise = torch.rand(6, 6, 25, generator=_gen(7))
    tm = _motion_aware_tube_mask(x, noise, segment=3, tube_len=5, k_vis=2, beta=beta)
    expected = ref_tube_mask(ref_tube_scores(x.numpy(), noise.numpy(), 3, 5, beta), 5, 2)
    assert np.array_equal(tm.mask.numpy(), expected)
    # the public function draws exactly this noise from the generator
    assert torch.equal(motion_aware_tube_mask(x, beta=beta, generator=_gen(7)).mask, tm.mask)


@pytest.mark.parametrize("tau", [0.75, 0.8])
def test_mamp_mask_equals_loops_with_injected_noise(tau: float) -> None:
    x = _walk(4, 120, 25, seed=2)
    uniform = torch.rand(4, 750, generator=_gen(5))
    tm = _motion_aware_mask(x, uniform, segment=4, k=74, tau=tau)
    expected = ref_keep_lowest(ref_mamp_scores(x.numpy(), uniform.numpy(), 4, tau), 74)
    assert np.array_equal(tm.mask.numpy(), expected)
    assert torch.equal(motion_aware_mask(x, tau=tau, generator=_gen(5)).mask, tm.mask)


# --- determinism, independence, devices ----------------------------------------------------------------------------


def test_same_seed_same_mask_and_beta_zero_ignores_x() -> None:
    x, y = _walk(4, 90, 25, seed=0), _walk(4, 90, 25, seed=1) * 10
    for fn in (motion_aware_tube_mask, motion_aware_mask, tube_mask):
        kwargs = {"segment": 3} if fn is motion_aware_mask else {}
        a, b = fn(x, generator=_gen(3), **kwargs), fn(x, generator=_gen(3), **kwargs)
        assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("mask", "keep_idx", "mask_idx", "restore_idx"))
        assert not torch.equal(a.mask, fn(x, generator=_gen(4), **kwargs).mask)
    # β = 0: the data do not matter (not even NaNs); the same draws as the motion-aware mask
    plain = tube_mask(x, generator=_gen(9)).mask
    assert torch.equal(plain, tube_mask(y, generator=_gen(9)).mask)
    assert torch.equal(plain, tube_mask(torch.full_like(x, float("nan")), generator=_gen(9)).mask)
    assert torch.equal(plain, motion_aware_tube_mask(y, beta=0.0, generator=_gen(9)).mask)
    # β > 0: the data do matter (for some seed)
    assert any(
        not torch.equal(
            motion_aware_tube_mask(x, beta=5.0, generator=_gen(s)).mask, tube_mask(x, generator=_gen(s)).mask
        )
        for s in range(3)
    )
    # the generator advances: two calls in a row differ
    g = _gen(0)
    assert not torch.equal(tube_mask(x, generator=g).mask, tube_mask(x, generator=g).mask)


def _devices() -> list[str]:
    return ["cpu", "meta"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _devices())
def test_outputs_on_the_input_device(device: str) -> None:
    x = _walk(2, 120, 25).to(device)
    masks = [
        motion_aware_tube_mask(x, generator=_gen()),
        tube_mask(x, generator=_gen()),
        motion_aware_mask(x, generator=_gen()),
        random_mask(2, 750, mask_ratio=0.9, generator=_gen(), device=device),
    ]
    for tm in masks:
        for f in ("mask", "keep_idx", "mask_idx", "restore_idx"):
            assert getattr(tm, f).device.type == device
    if device == "cuda":  # the same draws give the same masks on every device
        cpu = _walk(2, 120, 25)
        assert torch.equal(motion_aware_tube_mask(cpu, generator=_gen()).mask, masks[0].mask.cpu())
        assert torch.equal(motion_aware_mask(cpu, generator=_gen()).mask, masks[2].mask.cpu())


def test_gradient_flows_through_visible_tokens_only() -> None:
    x = _walk(2, 90, 25).requires_grad_(True)
    tm = motion_aware_tube_mask(x, generator=_gen())
    assert not tm.mask.requires_grad
    tokens = torch.randn(2, 750, 4, requires_grad=True)
    tm.visible(tokens).sum().backward()
    assert torch.equal(tokens.grad[..., 0] != 0, ~tm.mask)


# --- errors ---------------------------------------------------------------------------------------------------------


def test_errors_name_the_values() -> None:
    x = _walk(2, 90, 25)
    with pytest.raises(ConfigError, match=r"90 frames .* segment 4"):
        motion_aware_tube_mask(x, segment=4, generator=_gen())
    with pytest.raises(ConfigError, match=r"30 temporal segments .* tube_len 4"):
        motion_aware_tube_mask(x, tube_len=4, generator=_gen())
    with pytest.raises(ConfigError, match=r"0\.97 leaves no visible token of 25"):
        motion_aware_tube_mask(x, mask_ratio=0.97, generator=_gen())
    assert motion_aware_tube_mask(x, mask_ratio=0.97, rounding="exact", generator=_gen()).num_visible == 30
    with pytest.raises(ConfigError, match="masks none"):
        tube_mask(x, mask_ratio=0.0, generator=_gen())
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        tube_mask(x, mask_ratio=1.0, generator=_gen())
    with pytest.raises(ConfigError, match="rounding"):
        tube_mask(x, rounding="floor", generator=_gen())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="tau"):
        motion_aware_mask(x, segment=3, tau=0.0, generator=_gen())
    with pytest.raises(ConfigError, match="2 temporal patches"):
        motion_aware_mask(x[:, :4], segment=4, mask_ratio=0.5, generator=_gen())
    with pytest.raises(ConfigError, match="beta"):
        motion_aware_tube_mask(x, beta=float("nan"), generator=_gen())
    with pytest.raises(ValueError, match=r"\(B, T, V, C\)"):
        motion_aware_tube_mask(x[None], generator=_gen())
    with pytest.raises(ValueError, match=r"CPU torch\.Generator"):
        tube_mask(x, generator=None)  # type: ignore[arg-type]


# --- statistics on real NW-UCLA clips -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ucla_store(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> SkeletonStore:
    """40 real NW-UCLA sequences (10 actions × subjects 1–4, view 1)."""
    src = tmp_path_factory.mktemp("tokens-ucla-src")
    for f in sorted((shared_data / "nw-ucla" / "all_sqe").glob("a*_s0[1-4]_e00_v01.json")):
        shutil.copy(f, src)
    out = tmp_path_factory.mktemp("tokens") / "ucla"
    prepare_store(get_importer_class("nw-ucla")(src), out)
    return SkeletonStore.open(out)


def _clips(store: SkeletonStore, config: ClipConfig) -> torch.Tensor:
    """``(N, T, V, C)``: the single person of every clip."""
    data = ClipDataset(store=store, config=config.replace(persons=1, train=False))
    return torch.stack([data[i]["x"][0] for i in range(len(data))])


@pytest.fixture(scope="module")
def s2v_clips(ucla_store) -> tuple[torch.Tensor, np.ndarray]:
    """The 40 clips as Skeleton2vec sees them ``(40, 90, 20, 3)`` and their tube intensity from the loops."""
    x = _clips(ucla_store, ClipConfig.skeleton2vec())
    return x, ref_tube_intensity(x.numpy(), 3, 5)


@pytest.fixture(scope="module")
def mamp_clips(ucla_store) -> tuple[torch.Tensor, np.ndarray]:
    """The 40 clips as MAMP sees them ``(40, 120, 20, 3)`` and their per-token motion from the loops."""
    x = _clips(ucla_store, ClipConfig.mamp())
    return x, ref_mamp_motion(x.numpy(), 4)


def _z(freq_a: np.ndarray, freq_b: np.ndarray, draws: int) -> tuple[float, float]:
    """Difference of the mean masked frequencies of two token groups and its standard error under "no effect"."""
    pooled = np.concatenate([freq_a, freq_b]).mean()
    se = np.sqrt(pooled * (1 - pooled) * (1 / freq_a.size + 1 / freq_b.size) / draws)
    return float(freq_a.mean() - freq_b.mean()), float(se)


@pytest.mark.parametrize(("ratio", "rounding"), [(0.9, "reference"), (0.9, "exact"), (0.5, "reference")])
def test_motion_aware_tube_mask_masks_moving_joints_more_on_real_clips(s2v_clips, ratio, rounding) -> None:
    x, intensity = s2v_clips  # (40, 90, 20, 3) and (40, 6, 20), the intensity computed independently
    n, _, v, _ = x.shape
    assert x.shape == (40, 90, 20, 3) and float(x.abs().sum()) > 0
    low, high = intensity <= np.quantile(intensity, 0.25), intensity >= np.quantile(intensity, 0.75)
    draws = 100
    xs = x.repeat(draws, 1, 1, 1)

    def masked_freq(beta: float, seed: int) -> np.ndarray:
        tm = motion_aware_tube_mask(xs, mask_ratio=ratio, beta=beta, rounding=rounding, generator=_gen(seed))
        tubes = tm.mask.reshape(draws, n, 6, 5, v)[:, :, :, 0].float()
        return tubes.mean(dim=0).numpy()  # (40, 6, 20): masked frequency of every tube-joint

    for beta, seed in ((1.0, 0), (5.0, 1), (0.1, 2)):
        freq = masked_freq(beta, seed)
        diff, se = _z(freq[high], freq[low], draws)
        assert diff > 8 * se, (beta, diff, se)  # high-motion joints masked more often, far beyond chance
        if beta >= 1:  # and strongly: low-motion joints stay visible at least twice as often
            assert (1 - freq[low].mean()) > 2 * (1 - freq[high].mean()), beta
    freq = masked_freq(0.0, 3)
    diff, se = _z(freq[high], freq[low], draws)
    assert abs(diff) < 4 * se, (diff, se)  # β = 0: no motion preference beyond noise
    k_vis = visible_count(v, mask_ratio=ratio, rounding=rounding)
    assert abs(freq.mean() - (1 - k_vis / v)) < 1e-6  # the exact count


@pytest.mark.parametrize("ratio", [0.9, 0.5])
def test_mamp_mask_frequency_rises_with_motion_on_real_clips(mamp_clips, ratio) -> None:
    x, motion = mamp_clips  # (40, 120, 20, 3) and (40, 600), the motion computed independently
    n = x.shape[0]
    assert x.shape == (40, 120, 20, 3)
    rel = motion / motion.max(axis=1, keepdims=True)
    edges = np.quantile(rel, [0.25, 0.5, 0.75])
    groups = np.digitize(rel, edges)  # quartile of every token
    draws = 100
    tm = motion_aware_mask(x.repeat(draws, 1, 1, 1), mask_ratio=ratio, tau=0.8, generator=_gen(0))
    freq = tm.mask.reshape(draws, n, -1).float().mean(dim=0).numpy()
    for q in range(3):
        diff, se = _z(freq[groups == q + 1], freq[groups == q], draws)
        assert diff > 4 * se, (q, diff, se)  # strictly rising, quartile by quartile
    uniform = random_mask(n * draws, 600, mask_ratio=ratio, generator=_gen(1))
    base = uniform.mask.reshape(draws, n, -1).float().mean(dim=0).numpy()
    diff, se = _z(base[groups == 3], base[groups == 0], draws)
    assert abs(diff) < 4 * se  # the random mask shows no such trend
