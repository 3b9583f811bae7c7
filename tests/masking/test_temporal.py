"""Motion Attention Temporal Masking: the reference's deterministic step, its random step, the stochastic mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skelssl.data.importers import get_importer_class
from skelssl.errors import ConfigError
from skelssl.masking import motion_attention_temporal_mask, motion_energy

SAMPLE = "S001C001P001R001A011.skeleton"


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def real_clip(shared_data) -> torch.Tensor:
    """A genuine NTU clip (reading), resampled to 50 frames, as ``(1, M=2, T=50, V=25, C=3)`` with an empty person."""
    folder = shared_data / "ntu60-samples" / "skeletons"
    seq = get_importer_class("ntu60")(folder).run(folder / SAMPLE).sequences[0]
    kp = seq.keypoints  # (T, M, V, C)
    frames = np.linspace(0, kp.shape[0] - 1, 50).round().astype(int)
    clip = np.zeros((1, 2, 50, 25, 3), dtype=np.float32)
    clip[0, : kp.shape[1]] = kp[frames].transpose(1, 0, 2, 3)
    return torch.from_numpy(clip)


def _reference_energy(x: np.ndarray) -> np.ndarray:
    """Per-frame motion energy written with loops: mean over (M, V, C) of (x[t+1] − x[t])², last frame 0."""
    n, m, t, v, c = x.shape
    out = np.zeros((n, t))
    for i in range(n):
        for f in range(t - 1):
            total = 0.0
            for p in range(m):
                step = x[i, p, f + 1].astype(np.float64) - x[i, p, f].astype(np.float64)
                total += float((step**2).sum())
            out[i, f] = total / (m * v * c)
    return out


def _reference_calm_frames(x: np.ndarray, k: int) -> list[list[int]]:
    """The reference's first step per sample: the T − k frames of least motion, in temporal order."""
    energy = _reference_energy(x)
    t = x.shape[2]
    calm = []
    for row in energy:
        order = sorted(range(t), key=lambda f: (row[f], f))  # ties: the earlier frame is kept
        calm.append(sorted(order[: t - k]))
    return calm


def test_motion_energy_matches_loops(real_clip):
    x = torch.cat([real_clip, torch.randn(3, 2, 50, 25, 3)])
    np.testing.assert_allclose(motion_energy(x).numpy(), _reference_energy(x.numpy()), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("batch_shared", [True, False])
def test_reference_mode_against_loops(real_clip, batch_shared):
    x = torch.cat([real_clip, torch.randn(5, 2, 50, 25, 3)])
    out, keep = motion_attention_temporal_mask(x, num_frames=10, generator=_gen(0), batch_shared=batch_shared)
    assert out.shape == (6, 2, 30, 25, 3) and keep.shape == (6, 30) and keep.dtype == torch.long
    assert bool((keep.diff(dim=1) > 0).all())  # temporal order, no repeats
    calm = _reference_calm_frames(x.numpy(), 10)
    positions = []
    for i in range(6):
        kept = keep[i].tolist()
        assert set(kept) <= set(calm[i])  # only frames the deterministic step keeps
        positions.append([calm[i].index(f) for f in kept])
        energy = _reference_energy(x[i : i + 1].numpy())[0]
        assert not set(np.argsort(-energy, kind="stable")[:10].tolist()) & set(kept)  # top-10 motion never kept
        np.testing.assert_array_equal(out[i].numpy(), x[i].numpy()[:, kept])
    distinct = {tuple(p) for p in positions}
    assert len(distinct) == (1 if batch_shared else 6)


def test_reference_random_step_is_uniform(real_clip):
    x = real_clip.expand(4000, -1, -1, -1, -1)
    _, keep = motion_attention_temporal_mask(x, num_frames=10, generator=_gen(1))
    calm = _reference_calm_frames(real_clip.numpy(), 10)[0]
    freq = np.zeros(50)
    np.add.at(freq, keep.flatten().numpy(), 1)
    freq /= 4000
    assert freq[[f for f in range(50) if f not in calm]].max() == 0
    np.testing.assert_allclose(freq[calm], 0.75, atol=4 * np.sqrt(0.75 * 0.25 / 4000))


def test_batch_size_one_and_seeds(real_clip):
    a_out, a = motion_attention_temporal_mask(real_clip, generator=_gen(3))
    _, b = motion_attention_temporal_mask(real_clip, generator=_gen(3))
    _, c = motion_attention_temporal_mask(real_clip, generator=_gen(4))
    assert a_out.shape == (1, 2, 30, 25, 3)
    assert torch.equal(a, b) and not torch.equal(a, c)
    for mode in ("reference", "stochastic"):
        out, keep = motion_attention_temporal_mask(real_clip, generator=_gen(0), mode=mode, batch_shared=True)
        assert out.shape == (1, 2, 30, 25, 3) and keep.shape == (1, 30)


def test_ties_keep_the_earlier_frame():
    x = torch.zeros(1, 1, 8, 2, 3)
    x[0, 0, 5:] = 1.0  # one jump between frames 4 and 5; all other frames still
    _, keep = motion_attention_temporal_mask(x, num_frames=1, generator=_gen(0))
    assert 4 not in keep[0].tolist() and keep.shape == (1, 6)
    # the deterministic step kept 7 frames (all but 4); the random step dropped one of them
    assert set(keep[0].tolist()) < {0, 1, 2, 3, 5, 6, 7}


def test_gradient_and_half_precision(real_clip):
    x = real_clip.clone().requires_grad_()
    out, keep = motion_attention_temporal_mask(x, generator=_gen(0), mode="stochastic")
    out.sum().backward()
    grad_frames = (x.grad[0].abs().sum(dim=(0, 2, 3)) > 0).nonzero().squeeze(1)
    assert torch.equal(grad_frames, keep[0])
    half, keep_h = motion_attention_temporal_mask(real_clip.bfloat16(), generator=_gen(0))
    assert half.dtype == torch.bfloat16 and keep_h.shape == (1, 30)


def test_stochastic_matches_softmax_without_replacement():
    """T = 3, drop 2: P(keep c) = Σ over orders (a, b) of p_a · p_b / (1 − p_a), p = softmax(ẽ / τ)."""
    x = torch.zeros(1, 1, 3, 1, 3)
    x[0, 0, 1] = 1.0
    x[0, 0, 2] = 1.5  # energies: e0 = 1, e1 = 0.25, e2 = 0 (mean over C = 3 of squared steps)
    temperature = 0.7
    energy = np.array([1.0, 0.25, 0.0])
    logits = energy / energy.mean() / temperature
    p = np.exp(logits) / np.exp(logits).sum()
    expected = np.zeros(3)
    for c in range(3):
        a, b = [f for f in range(3) if f != c]
        expected[c] = p[a] * p[b] / (1 - p[a]) + p[b] * p[a] / (1 - p[b])
    draws = 40_000
    _, keep = motion_attention_temporal_mask(
        x.expand(draws, -1, -1, -1, -1), num_frames=1, generator=_gen(5), mode="stochastic", temperature=temperature
    )
    freq = np.bincount(keep.flatten().numpy(), minlength=3) / draws
    np.testing.assert_allclose(freq, expected, atol=4 * np.sqrt(0.25 / draws))
    # without normalisation the raw energies are the logits
    _, raw = motion_attention_temporal_mask(
        x.expand(draws, -1, -1, -1, -1), num_frames=1, generator=_gen(6), mode="stochastic", normalize=False
    )
    p = np.exp(energy) / np.exp(energy).sum()
    for c in range(3):
        a, b = [f for f in range(3) if f != c]
        expected[c] = p[a] * p[b] / (1 - p[a]) + p[b] * p[a] / (1 - p[b])
    np.testing.assert_allclose(np.bincount(raw.flatten().numpy(), minlength=3) / draws, expected, atol=0.01)


def test_stochastic_drops_high_motion_frames_more_often(real_clip):
    draws = 3000
    _, keep = motion_attention_temporal_mask(
        real_clip.expand(draws, -1, -1, -1, -1), num_frames=10, generator=_gen(2), mode="stochastic"
    )
    assert keep.shape == (draws, 30) and bool((keep.diff(dim=1) > 0).all())
    dropped = 1 - np.bincount(keep.flatten().numpy(), minlength=50) / draws
    energy = _reference_energy(real_clip.numpy())[0]
    order = np.argsort(energy)
    assert dropped[order[-10:]].mean() > dropped[order[:10]].mean() + 0.2
    rank = np.argsort(np.argsort(energy))
    spearman = np.corrcoef(rank, np.argsort(np.argsort(dropped)))[0, 1]
    assert spearman > 0.8
    # a colder softmax concentrates the drops on the moving frames; a very hot one is uniform
    _, cold = motion_attention_temporal_mask(
        real_clip.expand(draws, -1, -1, -1, -1), generator=_gen(2), mode="stochastic", temperature=0.2
    )
    cold_dropped = 1 - np.bincount(cold.flatten().numpy(), minlength=50) / draws
    assert cold_dropped[order[-10:]].mean() > dropped[order[-10:]].mean()
    _, hot = motion_attention_temporal_mask(
        real_clip.expand(draws, -1, -1, -1, -1), generator=_gen(2), mode="stochastic", temperature=1e6
    )
    hot_dropped = 1 - np.bincount(hot.flatten().numpy(), minlength=50) / draws
    np.testing.assert_allclose(hot_dropped, 0.4, atol=0.05)


def test_stochastic_batch_shared_shares_the_noise():
    x = torch.randn(1, 2, 20, 25, 3).expand(6, -1, -1, -1, -1)
    _, keep = motion_attention_temporal_mask(x, num_frames=3, generator=_gen(0), mode="stochastic", batch_shared=True)
    assert all(torch.equal(keep[0], row) for row in keep)  # same clip, same noise: same frames
    _, per = motion_attention_temporal_mask(x, num_frames=3, generator=_gen(0), mode="stochastic")
    assert len({tuple(r.tolist()) for r in per}) > 1


def test_errors():
    x = torch.randn(2, 1, 10, 25, 3)
    with pytest.raises(ConfigError):
        motion_attention_temporal_mask(x, num_frames=5, generator=_gen(0))
    with pytest.raises(ConfigError):
        motion_attention_temporal_mask(x, generator=_gen(0), num_frames=2, mode="softmax")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        motion_attention_temporal_mask(x, generator=_gen(0), num_frames=2, mode="stochastic", temperature=0)
    with pytest.raises(ValueError):
        motion_attention_temporal_mask(x[0], generator=_gen(0))
    out, keep = motion_attention_temporal_mask(x, num_frames=0, generator=_gen(0))
    assert torch.equal(out, x) and torch.equal(keep, torch.arange(10).expand(2, -1))
