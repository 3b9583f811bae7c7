"""Batched augmentations against the reference formulas (written here independently, in numpy), invariants
on real NTU skeletons, per-sample vs batch-shared draws, determinism and shapes."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skelssl.data import augment as A
from skelssl.data.augment import AugmentConfig, augment
from skelssl.data.importers import get_importer_class
from skelssl.errors import ConfigError
from skelssl.skeleton.layouts import PART_NAMES, get_layout

NTU = get_layout("ntu25")
# PSTL model.py random_spatial_flip order, copied here as data to check the layout against.
PSTL_FLIP_ORDER = [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 20, 23, 24, 21, 22]

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def ntu_batch(shared_data: Path) -> torch.Tensor:
    """Real NTU clips ``(5, 2, 40, 25, 3)``: the first 40 frames of each sample file (one has two bodies)."""
    folder = shared_data / "ntu60-samples" / "skeletons"
    importer = get_importer_class("ntu60")(folder)
    clips = []
    for path in sorted(folder.glob("*.skeleton")):
        kp = importer.run(str(path)).sequences[0].keypoints[:40]  # (T, M, V, C)
        out = np.zeros((2, 40, 25, 3), np.float32)
        out[: kp.shape[1]] = kp.transpose(1, 0, 2, 3)
        clips.append(out)
    batch = torch.from_numpy(np.stack(clips))
    return batch - batch[:, :1, :1, 20:21]  # centred on the first frame's spine-shoulder, as PSTL's input


def random_batch(n: int = 4, m: int = 2, t: int = 30, v: int = 25, c: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, m, t, v, c, generator=gen(seed))


def identical_batch(n: int = 32, seed: int = 1) -> torch.Tensor:
    """``n`` copies of one random sample: outputs differ only through the drawn parameters."""
    return random_batch(1, 2, 30, 25, 3, seed).expand(n, -1, -1, -1, -1).contiguous()


# --------------------------------------------------------------------------------------------------
# Reference formulas (PSTL model.py / MAMP feeder/tools.py, rewritten in numpy on (N, C, T, V, M) arrays)


def ref_axis_matrix(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    if axis == 0:
        r = [[1, 0, 0], [0, c, s], [0, -s, c]]
    elif axis == 1:
        r = [[c, 0, -s], [0, 1, 0], [s, 0, c]]
    else:
        r = [[c, s, 0], [-s, c, 0], [0, 0, 1]]
    return np.array(r, dtype=np.float64)


def ref_pstl_rotate_one(x_ctvm: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """PSTL: rotate about x, then y, then z, each as einsum('c t v m, c d -> d t v m', x, R.T)."""
    out = x_ctvm.astype(np.float64)
    for axis in range(3):
        out = np.einsum("ctvm,cd->dtvm", out, ref_axis_matrix(axis, angles[axis]).T)
    return out


def ref_mamp_rotate_one(x_ctvm: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """MAMP random_rot: rot = rz @ ry @ rx applied as matmul(rot, x) on (T, C, V*M)."""
    rot = ref_axis_matrix(2, angles[2]) @ ref_axis_matrix(1, angles[1]) @ ref_axis_matrix(0, angles[0])
    c, t, v, m = x_ctvm.shape
    flat = x_ctvm.astype(np.float64).transpose(1, 0, 2, 3).reshape(t, c, v * m)
    return (rot @ flat).reshape(t, c, v, m).transpose(1, 0, 2, 3)


def to_nctvm(x: torch.Tensor) -> np.ndarray:
    return x.double().numpy().transpose(0, 4, 2, 3, 1)


def from_nctvm(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 4, 2, 3, 1)


def ref_mirror_crop_one(x_mtvc: np.ndarray, start: int, pad: int) -> np.ndarray:
    t = x_mtvc.shape[1]
    if pad == 0:
        return x_mtvc.copy()
    first = x_mtvc[:, :pad][:, ::-1]
    last = x_mtvc[:, -pad:][:, ::-1]
    padded = np.concatenate([first, x_mtvc, last], axis=1)
    return padded[:, start : start + t]


def recover_angles(r: np.ndarray) -> np.ndarray:
    """(α, β, γ) of R = Rz(γ)·Ry(β)·Rx(α) with the reference axis matrices (each a rotation by −angle)."""
    beta = math.asin(np.clip(r[2, 0], -1, 1))
    alpha = -math.atan2(r[2, 1], r[2, 2])
    gamma = -math.atan2(r[1, 0], r[0, 0])
    return np.array([alpha, beta, gamma])


def matrices_from_output(fn, n: int, **kwargs) -> np.ndarray:
    """The linear map a transform applied, read off by transforming the unit vectors (as 3 joints)."""
    basis = torch.eye(3, dtype=torch.float64).reshape(1, 1, 1, 3, 3).expand(n, 1, 1, 3, 3).contiguous()
    out = fn(basis, **kwargs)[:, 0, 0].numpy()  # (n, joint j = e_j, coordinate i) = R[i, j]
    return out.transpose(0, 2, 1)


# --------------------------------------------------------------------------------------------------
# Rotation


@pytest.mark.parametrize("batch_shared", [False, True])
def test_pstl_rotation_equals_reference_formula(ntu_batch: torch.Tensor, batch_shared: bool) -> None:
    x = ntu_batch.double()
    out = A.random_rotate_pstl(x, generator=gen(3), batch_shared=batch_shared)
    angles = A.sample_pstl_angles(len(x), generator=gen(3), batch_shared=batch_shared).numpy()
    xs = to_nctvm(x)
    ref = np.stack([ref_pstl_rotate_one(xs[i], angles[i]) for i in range(len(x))])
    np.testing.assert_allclose(out.numpy(), from_nctvm(ref), atol=1e-12)
    if batch_shared:
        assert (angles == angles[0]).all()
    else:
        assert len({tuple(a) for a in angles}) == len(x)


@pytest.mark.parametrize("batch_shared", [False, True])
def test_uniform_rotation_equals_mamp_formula(ntu_batch: torch.Tensor, batch_shared: bool) -> None:
    x = ntu_batch.double()
    out = A.random_rotate(x, generator=gen(4), batch_shared=batch_shared)
    angles = A.sample_uniform_angles(len(x), generator=gen(4), batch_shared=batch_shared).numpy()
    xs = to_nctvm(x)
    ref = np.stack([ref_mamp_rotate_one(xs[i], angles[i]) for i in range(len(x))])
    np.testing.assert_allclose(out.numpy(), from_nctvm(ref), atol=1e-12)
    assert (np.abs(angles) <= 0.3).all()


def test_euler_rotation_matches_reference_matrices() -> None:
    angles = A.sample_uniform_angles(16, generator=gen(5), theta=math.pi)
    r = A.euler_rotation(angles).numpy()
    for i, (a, b, c) in enumerate(angles.numpy()):
        ref = ref_axis_matrix(2, c) @ ref_axis_matrix(1, b) @ ref_axis_matrix(0, a)
        np.testing.assert_allclose(r[i], ref, atol=1e-12)
        np.testing.assert_allclose(r[i] @ r[i].T, np.eye(3), atol=1e-12)
        assert np.linalg.det(r[i]) == pytest.approx(1.0)


@pytest.mark.parametrize("batch_shared", [False, True])
def test_pstl_angles_recovered_from_matrices_are_in_range(batch_shared: bool) -> None:
    n = 400
    r = matrices_from_output(A.random_rotate_pstl, n, generator=gen(6), batch_shared=batch_shared)
    degrees = np.degrees(np.stack([recover_angles(m) for m in r]))
    drawn = np.degrees(A.sample_pstl_angles(n, generator=gen(6), batch_shared=batch_shared).numpy())
    np.testing.assert_allclose(degrees, drawn, atol=1e-9)
    assert (degrees >= -1e-9).all() and (degrees <= 30 + 1e-9).all()
    assert (np.sort(degrees, axis=1)[:, :2] <= 1 + 1e-9).all()  # at most one axis beyond 1°
    if batch_shared:
        assert np.allclose(degrees, degrees[0])
    else:
        main = degrees.argmax(axis=1)[degrees.max(axis=1) > 1]
        counts = np.bincount(main, minlength=3)
        assert counts.min() > 0.25 * len(main)  # each axis is the main one about a third of the time
        assert degrees.max() > 25


@pytest.mark.parametrize("fn", [A.random_rotate, A.random_rotate_pstl])
def test_rotation_keeps_bone_lengths_and_distances(ntu_batch: torch.Tensor, fn) -> None:
    out = fn(ntu_batch, generator=gen(7))
    assert out.shape == ntu_batch.shape and out.dtype == ntu_batch.dtype
    assert not torch.allclose(out, ntu_batch)
    bones = torch.tensor(NTU.parents)
    before = (ntu_batch - ntu_batch[..., bones, :]).norm(dim=-1)
    after = (out - out[..., bones, :]).norm(dim=-1)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cdist(out, out), torch.cdist(ntu_batch, ntu_batch), atol=1e-5, rtol=0)


def test_rotation_of_2d_input_is_in_plane() -> None:
    x = random_batch(c=2)
    out = A.random_rotate(x, generator=gen(8))
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))
    with pytest.raises(ValueError, match="2 or 3"):
        A.random_rotate(random_batch(c=4), generator=gen(8))


# --------------------------------------------------------------------------------------------------
# Shear, crop, flip, reverse


@pytest.mark.parametrize("batch_shared", [False, True])
def test_shear_matches_einsum_formula(ntu_batch: torch.Tensor, batch_shared: bool) -> None:
    out = A.random_shear(ntu_batch, generator=gen(9), amplitude=1.0, batch_shared=batch_shared)
    s = A.sample_shear(len(ntu_batch), generator=gen(9), amplitude=1.0, batch_shared=batch_shared).numpy()
    assert (np.diagonal(s, axis1=1, axis2=2) == 1).all()
    off = s[:, ~np.eye(3, dtype=bool)]
    assert (np.abs(off) <= 1).all() and (off != 0).all()
    xs = to_nctvm(ntu_batch)
    ref = np.stack([np.einsum("ctvm,cd->dtvm", xs[i], s[i]) for i in range(len(s))])  # PSTL's formula
    np.testing.assert_allclose(out.numpy(), from_nctvm(ref), atol=1e-5)
    assert (s == s[0]).all() if batch_shared else len({s[i].tobytes() for i in range(len(s))}) == len(s)


def test_shear_amplitude_bounds_entries() -> None:
    s = A.sample_shear(2000, generator=gen(10), amplitude=0.5).numpy()
    off = s[:, ~np.eye(3, dtype=bool)]
    assert np.abs(off).max() <= 0.5 and np.abs(off).max() > 0.49
    assert abs(off.mean()) < 0.01


@pytest.mark.parametrize("batch_shared", [False, True])
def test_temporal_crop_equals_mirror_pad_and_slice(ntu_batch: torch.Tensor, batch_shared: bool) -> None:
    x = ntu_batch
    t = x.shape[2]
    pad = t // 6
    out = A.random_temporal_crop(x, generator=gen(11), batch_shared=batch_shared)
    starts = torch.randint(0, 2 * pad + 1, (1 if batch_shared else len(x),), generator=gen(11))
    starts = starts.expand(len(x)).numpy()
    for i in range(len(x)):
        np.testing.assert_array_equal(out[i].numpy(), ref_mirror_crop_one(x[i].numpy(), int(starts[i]), pad))


def test_mirror_crop_every_start_and_short_clips() -> None:
    for t, ratio in [(50, 6), (7, 6), (5, 6), (1, 1), (12, 1)]:
        x = random_batch(n=1, t=t)
        pad = t // ratio
        for s in range(2 * pad + 1):
            out = A.mirror_crop(x, torch.tensor([s]), pad=pad)
            np.testing.assert_array_equal(out[0].numpy(), ref_mirror_crop_one(x[0].numpy(), s, pad))
    with pytest.raises(ValueError, match="crop starts"):
        A.mirror_crop(random_batch(n=1, t=12), torch.tensor([5]), pad=2)


def test_pstl_crop_start_is_uniform() -> None:
    x = torch.arange(50, dtype=torch.float32).reshape(1, 1, 50, 1, 1).expand(4000, 1, 50, 1, 1)
    out = A.random_temporal_crop(x, generator=gen(12))
    starts = out[:, 0, 8, 0, 0].long()  # the crop's frame pad = 8 is padded position s + 8, original frame s
    counts = torch.bincount(starts, minlength=17)
    assert len(counts) == 17 and counts.min() > 4000 / 17 * 0.7


def test_flip_uses_layout_pairs_and_twice_is_identity(ntu_batch: torch.Tensor) -> None:
    assert list(NTU.flip_permutation) == PSTL_FLIP_ORDER
    once = A.flip(ntu_batch, NTU)
    torch.testing.assert_close(once, ntu_batch[..., PSTL_FLIP_ORDER, :], rtol=0, atol=0)
    torch.testing.assert_close(A.flip(once, NTU), ntu_batch, rtol=0, atol=0)
    mirrored = A.flip(ntu_batch, NTU, mirror_axis=0)
    torch.testing.assert_close(mirrored[..., 0], -once[..., 0], rtol=0, atol=0)
    torch.testing.assert_close(mirrored[..., 1:], once[..., 1:], rtol=0, atol=0)
    torch.testing.assert_close(A.flip(mirrored, NTU, mirror_axis=0), ntu_batch, rtol=0, atol=0)
    for name in ("kinect20", "sbu15", "florence15", "coco17"):
        layout = get_layout(name)
        x = random_batch(v=layout.num_joints)
        torch.testing.assert_close(A.flip(A.flip(x, layout), layout), x, rtol=0, atol=0)


@pytest.mark.parametrize("batch_shared", [False, True])
def test_random_flip_twice_with_same_draws_is_identity(ntu_batch: torch.Tensor, batch_shared: bool) -> None:
    kw = {"generator": gen(13), "batch_shared": batch_shared, "mirror_axis": 0}
    once = A.random_flip(ntu_batch, NTU, **kw)
    kw["generator"] = gen(13)
    torch.testing.assert_close(A.random_flip(once, NTU, **kw), ntu_batch, rtol=0, atol=0)


def test_reverse_and_random_reverse() -> None:
    x = random_batch()
    torch.testing.assert_close(A.reverse(x), x[:, :, list(range(x.shape[2] - 1, -1, -1))], rtol=0, atol=0)
    torch.testing.assert_close(A.reverse(A.reverse(x)), x, rtol=0, atol=0)
    out = A.random_reverse(identical_batch(64), generator=gen(14))
    flipped = [bool(torch.equal(out[i], A.reverse(out[:1])[0])) for i in range(64)]
    kept = [bool(torch.equal(out[i], identical_batch(64)[0])) for i in range(64)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True)) and 10 < sum(flipped) < 54
    assert A.random_reverse(x, generator=gen(0), p=0.0).equal(x)
    assert A.random_reverse(x, generator=gen(0), p=1.0).equal(A.reverse(x))


# --------------------------------------------------------------------------------------------------
# Noise and blur


def test_noise_std_and_mean() -> None:
    x = torch.zeros(64, 2, 50, 25, 3)
    noise = A.gaussian_noise(x, generator=gen(15), std=0.01)
    assert noise.std().item() == pytest.approx(0.01, rel=0.01)
    assert abs(noise.mean().item()) < 1e-4
    assert A.gaussian_noise(x, generator=gen(15)).equal(noise)
    assert not A.gaussian_noise(x, generator=gen(16)).equal(noise)


def test_blur_kernels() -> None:
    sigmas = torch.tensor([0.1, 0.5, 1.0, 2.0], dtype=torch.float64)
    k = A.gaussian_kernels(sigmas, 15)
    assert k.shape == (4, 15)
    torch.testing.assert_close(k.sum(dim=1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(k, k.flip(1))
    raw = A.gaussian_kernels(sigmas, 15, normalize=False).numpy()
    idx = np.arange(-7, 8)
    for i, s in enumerate(sigmas.numpy()):  # PSTL GaussianBlurConv: exp(-k^2 / (2 sigma^2)), not normalised
        np.testing.assert_allclose(raw[i], np.exp(-(idx**2.0) / (2.0 * s**2.0)))
    assert raw[3].sum() == pytest.approx(2.0 * math.sqrt(2 * math.pi), rel=1e-3)
    with pytest.raises(ValueError, match="odd"):
        A.gaussian_kernels(sigmas, 14)


def test_blur_equals_zero_padded_convolution_per_sample() -> None:
    x = random_batch(n=3, m=2, t=20, v=4).double()
    sigmas = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)
    kernels = A.gaussian_kernels(sigmas, 7)
    out = A.gaussian_blur(x, kernels).numpy()
    xs = x.numpy()
    for n in range(3):
        for m in range(2):
            for v in range(4):
                for c in range(3):
                    ref = np.convolve(xs[n, m, :, v, c], kernels[n].numpy(), mode="same")
                    np.testing.assert_allclose(out[n, m, :, v, c], ref, atol=1e-12)


@pytest.mark.parametrize("batch_shared", [False, True])
def test_random_blur_draws(batch_shared: bool) -> None:
    x = identical_batch(64)
    out = A.random_gaussian_blur(x, generator=gen(17), batch_shared=batch_shared)
    changed = [not torch.equal(out[i], x[i]) for i in range(64)]
    distinct = {out[i].numpy().tobytes() for i in range(64)}
    if batch_shared:
        assert len(distinct) == 1
    else:
        assert 10 < sum(changed) < 54 and len(distinct) == sum(changed) + 1
    assert A.random_gaussian_blur(x, generator=gen(0), p=0.0).equal(x)
    # a nearly flat signal stays flat under a normalised blur (away from the zero-padded ends)
    flat = torch.ones(2, 1, 40, 3, 3)
    blurred = A.random_gaussian_blur(flat, generator=gen(0), p=1.0)
    torch.testing.assert_close(blurred[:, :, 7:-7], flat[:, :, 7:-7])


# --------------------------------------------------------------------------------------------------
# Joint and part dropping


@pytest.mark.parametrize("batch_shared", [False, True])
def test_joint_drop(batch_shared: bool) -> None:
    x = random_batch(n=16) + 10  # no zero coordinates before dropping
    idx = A.sample_joint_drop(16, 25, 5, generator=gen(18), batch_shared=batch_shared)
    assert idx.shape == (16, 5)
    for row in idx.tolist():
        assert row == sorted(set(row)) and all(0 <= j < 25 for j in row)
    out = A.random_joint_drop(x, 5, generator=gen(18), batch_shared=batch_shared)
    for i in range(16):
        zero = (out[i] == 0).all(dim=(0, 1, 3)).nonzero().flatten().tolist()
        assert zero == idx[i].tolist()
        keep = [j for j in range(25) if j not in zero]
        assert out[i][:, :, keep].equal(x[i][:, :, keep])
    rows = {tuple(r) for r in idx.tolist()}
    assert len(rows) == 1 if batch_shared else len(rows) > 1
    # a shared (k,) index list and a bool mask do the same
    torch.testing.assert_close(
        A.drop_joints(x, torch.tensor([3, 7])), A.drop_joints(x, A.joint_mask(torch.tensor([3, 7]), 25))
    )


def test_joint_drop_is_uniform() -> None:
    idx = A.sample_joint_drop(5000, 25, 8, generator=gen(19))
    counts = torch.bincount(idx.flatten(), minlength=25).double() / 5000
    torch.testing.assert_close(counts, torch.full((25,), 8 / 25, dtype=torch.float64), atol=0.03, rtol=0)


@pytest.mark.parametrize("name", ["ntu25", "kinect20", "sbu15", "coco17"])
@pytest.mark.parametrize("num_parts", [0, 1, 2, 5])
def test_part_drop_is_a_union_of_parts(name: str, num_parts: int) -> None:
    layout = get_layout(name)
    mask = A.sample_part_drop(200, layout, num_parts, generator=gen(20))
    assert mask.shape == (200, layout.num_joints) and mask.dtype == torch.bool
    parts = [set(layout.parts[p]) for p in PART_NAMES]
    seen = set()
    for row in mask.tolist():
        dropped = {j for j, d in enumerate(row) if d}
        chosen = [i for i, p in enumerate(parts) if p <= dropped]
        assert len(chosen) == num_parts and set().union(*[parts[i] for i in chosen]) == dropped
        seen.add(tuple(chosen))
    if num_parts in (1, 2):
        assert len(seen) == math.comb(5, num_parts)
    x = random_batch(n=3, v=layout.num_joints) + 10
    out = A.random_part_drop(x, num_parts, layout=name, generator=gen(21))
    assert ((out == 0).all(dim=(1, 2, 4)) == A.sample_part_drop(3, layout, num_parts, generator=gen(21))).all()


# --------------------------------------------------------------------------------------------------
# Per-sample vs batch-shared draws, for every random transform

RANDOM_TRANSFORMS = {
    "crop": lambda x, **k: A.random_temporal_crop(x, **k),
    "shear": lambda x, **k: A.random_shear(x, **k),
    "rotate_pstl": lambda x, **k: A.random_rotate_pstl(x, **k),
    "rotate": lambda x, **k: A.random_rotate(x, **k),
    "flip": lambda x, **k: A.random_flip(x, NTU, **k),
    "reverse": lambda x, **k: A.random_reverse(x, **k),
    "blur": lambda x, **k: A.random_gaussian_blur(x, **k),
    "joint_drop": lambda x, **k: A.random_joint_drop(x, 3, **k),
    "part_drop": lambda x, **k: A.random_part_drop(x, 1, layout=NTU, **k),
}
BINARY = {"flip", "reverse", "blur"}  # applied or not: per-sample outputs take (at least) two values


@pytest.mark.parametrize("name", sorted(RANDOM_TRANSFORMS))
def test_per_sample_draws_differ_and_shared_draws_are_equal(name: str) -> None:
    fn = RANDOM_TRANSFORMS[name]
    x = identical_batch(32)
    per_sample = fn(x, generator=gen(22))
    distinct = {per_sample[i].numpy().tobytes() for i in range(32)}
    assert len(distinct) >= (2 if name in BINARY else 5)
    if name not in BINARY | {"crop", "joint_drop", "part_drop"}:
        assert len(distinct) == 32
    for seed in range(3):
        shared = fn(x, generator=gen(seed), batch_shared=True)
        assert all(torch.equal(shared[i], shared[0]) for i in range(32))
    assert not torch.equal(per_sample, x) or name in BINARY


# --------------------------------------------------------------------------------------------------
# Pipeline


def test_presets() -> None:
    assert AugmentConfig.pstl().transforms == ("crop", "shear", "rotate_pstl", "flip")
    pstl = AugmentConfig.pstl()
    assert (pstl.padding_ratio, pstl.shear_amplitude, pstl.flip_p, pstl.batch_shared) == (6, 1.0, 0.5, False)
    assert (pstl.rotation_main_max_deg, pstl.rotation_other_max_deg, pstl.mirror_axis) == (30.0, 1.0, None)
    assert AugmentConfig.pstl(batch_shared=True).batch_shared
    for cfg in (AugmentConfig.skeleton2vec(), AugmentConfig.mamp()):
        assert cfg.transforms == ("rotate",) and cfg.rotation_theta == 0.3 and not cfg.batch_shared
    with pytest.raises(dataclasses.FrozenInstanceError):
        pstl.batch_shared = True  # type: ignore[misc]


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="did you mean 'rotate'"):
        AugmentConfig(transforms=("rotat",))
    for bad in (
        {"flip_p": 1.5},
        {"blur_kernel": 4},
        {"padding_ratio": 0},
        {"blur_sigma": (2.0, 1.0)},
        {"drop_parts": 6},
    ):
        with pytest.raises(ConfigError):
            AugmentConfig(**bad)
    assert AugmentConfig(transforms=["crop"]).transforms == ("crop",)  # type: ignore[arg-type]


@pytest.mark.parametrize("batch_shared", [False, True])
def test_pstl_pipeline_is_the_chain_in_reference_order(ntu_batch: torch.Tensor, batch_shared: bool) -> None:
    cfg = AugmentConfig.pstl(batch_shared=batch_shared)
    out = augment(ntu_batch, cfg, layout="ntu25", generator=gen(23))
    g = gen(23)
    ref = A.random_temporal_crop(ntu_batch, generator=g, padding_ratio=6, batch_shared=batch_shared)
    ref = A.random_shear(ref, generator=g, amplitude=1.0, batch_shared=batch_shared)
    ref = A.random_rotate_pstl(ref, generator=g, batch_shared=batch_shared)
    ref = A.random_flip(ref, NTU, generator=g, p=0.5, batch_shared=batch_shared)
    assert out.equal(ref)
    # three calls with one generator: three independent views
    g = gen(23)
    views = [augment(ntu_batch, cfg, layout=NTU, generator=g) for _ in range(3)]
    assert views[0].equal(out) and not views[1].equal(views[0]) and not views[2].equal(views[1])


ALL = AugmentConfig(
    transforms=(
        "crop",
        "shear",
        "rotate_pstl",
        "rotate",
        "flip",
        "reverse",
        "noise",
        "blur",
        "joint_drop",
        "part_drop",
    ),
    mirror_axis=0,
)


def test_same_seed_same_output_and_input_untouched(ntu_batch: torch.Tensor) -> None:
    before = ntu_batch.clone()
    a = augment(ntu_batch, ALL, layout=NTU, generator=gen(24))
    b = augment(ntu_batch, ALL, layout=NTU, generator=gen(24))
    c = augment(ntu_batch, ALL, layout=NTU, generator=gen(25))
    assert a.equal(b) and not a.equal(c)
    assert ntu_batch.equal(before)
    empty = augment(ntu_batch, AugmentConfig(), layout=None, generator=gen(0))
    assert empty.equal(ntu_batch) and empty.data_ptr() != ntu_batch.data_ptr()


def test_pipeline_errors() -> None:
    with pytest.raises(ValueError, match="needs a layout"):
        augment(random_batch(), AugmentConfig.pstl(), layout=None, generator=gen(0))
    with pytest.raises(ValueError, match="joints"):
        augment(random_batch(v=20), AugmentConfig.pstl(), layout=NTU, generator=gen(0))
    with pytest.raises(ValueError, match=r"\(N, M, T, V, C\)"):
        augment(torch.zeros(2, 30, 25, 3), AugmentConfig.pstl(), layout=NTU, generator=gen(0))


@pytest.mark.parametrize("device", DEVICES)
def test_output_does_not_depend_on_device(ntu_batch: torch.Tensor, device: str) -> None:
    ref = augment(ntu_batch, ALL, layout=NTU, generator=gen(26))
    out = augment(ntu_batch.to(device), ALL, layout=NTU, generator=gen(26))
    assert out.device.type == device
    torch.testing.assert_close(out.cpu(), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_input(ntu_batch: torch.Tensor, device: str) -> None:
    x = ntu_batch.to(device)
    ref = augment(x, ALL, layout=NTU, generator=gen(27))
    out = augment(x.bfloat16(), ALL, layout=NTU, generator=gen(27))
    assert out.dtype == torch.bfloat16 and out.device == x.device
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.02)


# --------------------------------------------------------------------------------------------------
# Shapes (hypothesis)

shapes = st.tuples(
    st.integers(1, 4), st.integers(1, 3), st.integers(1, 40), st.integers(2, 30), st.sampled_from([2, 3])
)


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), shared=st.booleans(), data=st.data())
def test_any_shape(shape: tuple[int, int, int, int, int], seed: int, shared: bool, data: st.DataObject) -> None:
    n, _, t, v, _ = shape
    x = torch.randn(shape, generator=gen(seed))
    kw = {"generator": gen(seed), "batch_shared": shared}
    # temporal crop: the reference mirror-pad-and-slice, per sample
    ratio = data.draw(st.integers(1, 8))
    out = A.random_temporal_crop(x, padding_ratio=ratio, **kw)
    pad = t // ratio
    starts = torch.randint(0, 2 * pad + 1, (1 if shared else n,), generator=gen(seed)).expand(n)
    for i in range(n):
        np.testing.assert_array_equal(out[i].numpy(), ref_mirror_crop_one(x[i].numpy(), int(starts[i]), pad))
    # rotations keep norms; shear, noise, blur, reverse, drops keep the shape
    for fn in (A.random_rotate, A.random_rotate_pstl):
        torch.testing.assert_close(fn(x, **kw).norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)
    for out in (
        A.random_shear(x, **kw),
        A.random_reverse(x, **kw),
        A.random_gaussian_blur(x, **kw),
        A.gaussian_noise(x, generator=gen(seed)),
        A.random_joint_drop(x, data.draw(st.integers(0, v)), **kw),
    ):
        assert out.shape == x.shape and out.dtype == x.dtype
    # flipping by any left/right pairing twice is the identity
    order = data.draw(st.permutations(range(v)))
    k = data.draw(st.integers(0, v // 2))
    perm = list(range(v))
    for a, b in zip(order[: 2 * k : 2], order[1 : 2 * k : 2], strict=True):
        perm[a], perm[b] = b, a
    once = A.random_flip(x, perm, generator=gen(seed), batch_shared=shared)
    assert A.random_flip(once, perm, generator=gen(seed), batch_shared=shared).equal(x)
