"""Central Spatial Masking: the reference multiset sampler's statistics, the exact sampler, shapes, seeds."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
import torch

from skelssl.errors import ConfigError
from skelssl.masking import central_spatial_mask, group_by_count
from skelssl.skeleton.layouts import LAYOUTS

# degree of each ntu25 joint (1-based joints 1..25 in the spec), written out independently of the graph code
NTU_DEGREE = [3, 2, 2, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 1, 4, 1, 2, 1, 2]
DRAWS = 100_000


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _distinct_count_distribution(degrees: list[int], draws: int) -> dict[int, float]:
    """Exact P(m distinct joints) for `draws` entries drawn without replacement from the degree multiset.

    Counts draws-subsets of the multiset by the number of joints they touch: the product over joints of
    (1 + Σ_i C(d_j, i) x^i y), read at x^draws.
    """
    poly = {(0, 0): 1}  # (entries, distinct) -> number of subsets
    for d in degrees:
        nxt: dict[tuple[int, int], int] = {}
        for (e, m), ways in poly.items():
            for i in range(min(d, draws - e) + 1):
                key = (e + i, m + (i > 0))
                nxt[key] = nxt.get(key, 0) + ways * comb(d, i)
        poly = nxt
    total = comb(sum(degrees), draws)
    return {m: ways / total for (e, m), ways in poly.items() if e == draws}


@pytest.fixture(scope="module")
def reference_masks() -> torch.Tensor:
    return central_spatial_mask("ntu25", batch_size=DRAWS, generator=_gen(1), mode="reference")


def test_exact_distribution_matches_the_spec_monte_carlo():
    dist = _distinct_count_distribution(NTU_DEGREE, 8)
    spec = {8: 0.468, 7: 0.418, 6: 0.106, 5: 0.008}
    for m, p in spec.items():
        assert dist[m] == pytest.approx(p, abs=0.002)
    # the spec's 2·10⁵ draws missed the rare 4 (0.02 %) and 3 (8·10⁻⁷: joint 21 ×4, joint 1 ×3, one more)
    assert set(dist) == {3, 4, 5, 6, 7, 8} and dist[4] + dist[3] < 3e-4
    assert sum(m * p for m, p in dist.items()) == pytest.approx(7.34, abs=0.01)


def test_reference_distinct_counts(reference_masks):
    assert reference_masks.shape == (DRAWS, 25) and reference_masks.dtype == torch.bool
    counts = reference_masks.sum(dim=1).numpy()
    exact = _distinct_count_distribution(NTU_DEGREE, 8)
    assert set(np.unique(counts)) <= {3, 4, 5, 6, 7, 8}
    for m, p in exact.items():
        sigma = np.sqrt(p * (1 - p) / DRAWS)
        assert abs((counts == m).mean() - p) < 5 * sigma + 1e-4, m
    assert counts.mean() == pytest.approx(7.34, abs=0.01)


def test_reference_joint_probabilities(reference_masks):
    freq = reference_masks.double().mean(dim=0).numpy()
    for j, d in enumerate(NTU_DEGREE):
        p = 1 - comb(48 - d, 8) / comb(48, 8)  # joint j is missed only if all 8 draws avoid its d entries
        assert abs(freq[j] - p) < 5 * np.sqrt(p * (1 - p) / DRAWS), (j, freq[j], p)
    assert freq[20] == pytest.approx(0.53, abs=0.01)  # spine-shoulder, degree 4
    assert freq[0] == pytest.approx(0.43, abs=0.01)  # base of spine, degree 3
    assert freq[[3, 15, 19, 21, 23]] == pytest.approx(0.17, abs=0.01)  # the five leaves


def test_reference_batch_shared_is_one_multiset_draw():
    seen = np.zeros(25)
    sizes = []
    for seed in range(2000):  # one generator per draw: the batch-shared path, as the engine seeds it
        joints = central_spatial_mask("ntu25", generator=_gen(seed), batch_shared=True)
        assert joints.dtype == torch.long and joints.dim() == 1
        assert torch.equal(joints, torch.unique(joints))  # distinct and sorted
        sizes.append(joints.numel())
        seen[joints.numpy()] += 1
    assert set(sizes) <= {3, 4, 5, 6, 7, 8} and np.mean(sizes) == pytest.approx(7.34, abs=0.1)
    assert seen[20] / 2000 == pytest.approx(0.53, abs=0.05)


def test_exact_mode_shapes_and_counts():
    idx = central_spatial_mask("ntu25", batch_size=500, generator=_gen(2), mode="exact")
    assert idx.shape == (500, 8) and idx.dtype == torch.long
    assert bool((idx.diff(dim=1) > 0).all())  # sorted and distinct per row
    assert int(idx.min()) >= 0 and int(idx.max()) < 25
    shared = central_spatial_mask("ntu25", generator=_gen(2), mode="exact", batch_shared=True, num_joints=5)
    assert shared.shape == (5,) and bool((shared.diff() > 0).all())


def test_exact_mode_is_successive_sampling_by_degree():
    """Marginals match numpy's weighted draw without replacement (successive sampling ∝ degree)."""
    ours = central_spatial_mask("ntu25", batch_size=DRAWS, generator=_gen(3), mode="exact")
    ours_freq = torch.zeros(25).index_add_(0, ours.flatten(), torch.ones(ours.numel())).numpy() / DRAWS
    rng = np.random.default_rng(0)
    w = np.asarray(NTU_DEGREE, dtype=float)
    trials = 20_000
    ref_freq = np.zeros(25)
    for _ in range(trials):
        ref_freq[rng.choice(25, size=8, replace=False, p=w / w.sum())] += 1
    ref_freq /= trials
    np.testing.assert_allclose(ours_freq, ref_freq, atol=0.02)
    by_degree = {d: ours_freq[[j for j, dj in enumerate(NTU_DEGREE) if dj == d]].mean() for d in (1, 2, 3, 4)}
    assert by_degree[4] > by_degree[3] > by_degree[2] > by_degree[1] + 0.1


@pytest.mark.parametrize("mode", ["reference", "exact"])
def test_seeded_and_per_sample(mode):
    a = central_spatial_mask("ntu25", batch_size=64, generator=_gen(7), mode=mode)
    b = central_spatial_mask("ntu25", batch_size=64, generator=_gen(7), mode=mode)
    c = central_spatial_mask("ntu25", batch_size=64, generator=_gen(8), mode=mode)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len({tuple(row.tolist()) for row in a}) > 32  # per-sample draws differ


def test_generator_state_advances():
    g = _gen(0)
    a = central_spatial_mask("ntu25", generator=g, batch_shared=True, mode="exact")
    b = central_spatial_mask("ntu25", generator=g, batch_shared=True, mode="exact")
    draws = [central_spatial_mask("ntu25", generator=g, batch_shared=True, mode="exact") for _ in range(5)]
    assert any(not torch.equal(x, a) for x in [b, *draws])


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_layout(name):
    v = len(LAYOUTS[name].joints)
    mask = central_spatial_mask(name, batch_size=4, num_joints=4, generator=_gen(0))
    assert mask.shape == (4, v) and bool((mask.sum(dim=1) >= 1).all())
    idx = central_spatial_mask(
        name, batch_size=4, num_joints=4, generator=_gen(0), mode="exact", centrality="closeness"
    )
    assert idx.shape == (4, 4)


def test_group_by_count_rebuilds_the_mask(reference_masks):
    mask = reference_masks[:300]
    groups = group_by_count(mask)
    assert [int(j.shape[1]) for _, j in groups] == sorted({int(c) for c in mask.sum(dim=1)})
    rebuilt = torch.zeros_like(mask)
    for rows, joints in groups:
        assert bool((joints.diff(dim=1) > 0).all())
        rebuilt[rows.unsqueeze(1), joints] = True
    assert torch.equal(rebuilt, mask)
    assert sum(r.numel() for r, _ in groups) == 300


def test_device_and_errors():
    out = central_spatial_mask("ntu25", generator=_gen(0), batch_shared=True, device="cpu")
    assert out.device.type == "cpu"
    with pytest.raises(ConfigError, match="integer"):
        central_spatial_mask("ntu25", generator=_gen(0), batch_shared=True, centrality="closeness")
    with pytest.raises(ConfigError, match="batch_size"):
        central_spatial_mask("ntu25", generator=_gen(0))
    with pytest.raises(ConfigError, match="mode"):
        central_spatial_mask("ntu25", generator=_gen(0), batch_shared=True, mode="uniform")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="distinct"):
        central_spatial_mask("ntu25", generator=_gen(0), batch_shared=True, mode="exact", num_joints=26)
