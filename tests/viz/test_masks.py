"""Mask figures on a real clip: what is drawn is the masking function's output for the same seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skelssl.errors import ConfigError
from skelssl.masking import (
    central_spatial_mask,
    motion_attention_temporal_mask,
    motion_aware_mask,
    motion_aware_tube_mask,
)
from skelssl.viz.masks import (
    method_clip,
    plot_csm,
    plot_mamp_mask,
    plot_mask_figures,
    plot_matm,
    plot_tube_mask,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _png_ok(path: Path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 3000
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_csm_draws_the_masked_joint_set(viz_store, tmp_path: Path) -> None:
    clip = method_clip(viz_store, 2, "pstl")
    assert tuple(clip.shape) == (1, 50, 20, 3)
    sets = set()
    for seed in (0, 1, 2):
        pic = plot_csm(clip, viz_store.layout, tmp_path / f"csm{seed}.png", seed=seed, frames=4)
        want = central_spatial_mask(viz_store.layout, num_joints=8, generator=_gen(seed), batch_shared=True)
        assert pic.masked_joints == tuple(want.tolist())
        assert 1 <= len(pic.masked_joints) <= 8 and len(pic.frames) == 4
        sets.add(pic.masked_joints)
        _png_ok(pic.path)
    assert len(sets) > 1  # the seed is used


def test_matm_greys_the_removed_frames(viz_store, tmp_path: Path) -> None:
    clip = method_clip(viz_store, 4, "pstl")
    pic = plot_matm(clip, viz_store.layout, tmp_path / "matm.png", seed=3)
    _, keep = motion_attention_temporal_mask(clip[None], num_frames=10, generator=_gen(3))
    assert pic.kept_frames == tuple(keep[0].tolist())
    assert len(pic.dropped_frames) == 20 and sorted(pic.kept_frames + pic.dropped_frames) == list(range(50))
    # the energy drawn is the mean squared frame-to-frame motion (last frame 0), computed here independently
    x = clip.numpy().astype(np.float64)
    energy = [((x[:, t + 1] - x[:, t]) ** 2).mean() for t in range(49)] + [0.0]
    np.testing.assert_allclose(pic.energy, energy, rtol=1e-5, atol=1e-12)
    # the reference mode always drops the 10 highest-motion frames
    top10 = set(np.argsort(-np.asarray(energy), kind="stable")[:10].tolist())
    assert top10 <= set(pic.dropped_frames)
    _png_ok(pic.path)


def test_tube_mask_grid_is_the_function_output(viz_store, tmp_path: Path) -> None:
    clip = method_clip(viz_store, 5, "skeleton2vec")
    assert tuple(clip.shape) == (1, 90, 20, 3)
    for ratio, k_vis in ((0.9, 1), (0.8, 3)):  # int(20·(1 − r)) in floating point (1.999…, 3.999…), as the reference
        pic = plot_tube_mask(clip, viz_store.layout, tmp_path / f"tube{ratio}.png", mask_ratio=ratio, seed=7)
        want = motion_aware_tube_mask(clip, mask_ratio=ratio, generator=_gen(7)).mask
        assert pic.mask.shape == (1, 30, 20) and pic.motion.shape == (1, 30, 20)
        np.testing.assert_array_equal(pic.mask.reshape(1, -1), want.numpy())
        assert pic.num_visible == 30 * k_vis and int((~pic.mask).sum()) == 30 * k_vis
        tubes = pic.mask.reshape(1, 6, 5, 20)
        assert (tubes == tubes[:, :, :1]).all()  # a tube keeps the same joints over its 5 segments
        per_tube = pic.motion.reshape(1, 6, 5, 20)
        assert (per_tube == per_tube[:, :, :1]).all()  # μ̂ is one value per tube and joint
        np.testing.assert_allclose(per_tube.max(axis=3), 1.0, atol=1e-3)  # normalised by the tube's maximum
        _png_ok(pic.path)


def test_mamp_grid_and_motion(viz_store, tmp_path: Path) -> None:
    clip = method_clip(viz_store, 6, "mamp")
    assert tuple(clip.shape) == (1, 120, 20, 3)
    pic = plot_mamp_mask(clip, viz_store.layout, tmp_path / "mamp.png", seed=11)
    want = motion_aware_mask(clip, generator=_gen(11))
    np.testing.assert_array_equal(pic.mask.reshape(1, -1), want.mask.numpy())
    assert pic.mask.shape == (1, 30, 20) and pic.num_visible == want.num_visible
    assert int((~pic.mask).sum()) == pic.num_visible == int(600 * (1 - 0.9))
    # per-token motion: mean |p_t − p_{t−1}| over the 4 frames × 3 coords of a joint's patch, first copies second
    x = clip.numpy()[0].astype(np.float64)  # (T, V, C)
    motion = np.zeros((30, 20))
    for t in range(1, 30):
        for v in range(20):
            motion[t, v] = np.abs(x[4 * t : 4 * t + 4, v] - x[4 * t - 4 : 4 * t, v]).mean()
    motion[0] = motion[1]
    np.testing.assert_allclose(pic.motion[0], motion, rtol=1e-4, atol=1e-7)
    _png_ok(pic.path)


def test_all_figures_and_options(viz_store, tmp_path: Path) -> None:
    pics = plot_mask_figures(
        viz_store,
        1,
        tmp_path / "m",
        seed=2,
        options={"skeleton2vec-tube": {"mask_ratio": 0.8}, "pstl-csm": {"frames": 3}},
    )
    assert sorted(pics) == ["mamp-mask", "pstl-csm", "pstl-matm", "skeleton2vec-tube"]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted(f"{k}.png" for k in pics)
    assert pics["skeleton2vec-tube"].num_visible == 90 and len(pics["pstl-csm"].frames) == 3
    with pytest.raises(ConfigError, match="unknown method"):
        plot_mask_figures(viz_store, 1, tmp_path / "n", method="mae")
    with pytest.raises(ConfigError, match="unknown mask figure"):
        plot_mask_figures(viz_store, 1, tmp_path / "n", method="mamp", options={"tube": {}})


@pytest.mark.parametrize("method", ["mamp", "skeleton2vec", "pstl"])
def test_preset_masks_follow_the_preset(viz_store, tmp_path: Path, method: str) -> None:
    from skelssl.config import load_config
    from skelssl.configs import resolve
    from skelssl.engine.pretrain import PretrainConfig, pretrain_clip_config
    from skelssl.viz.masks import preset_masks

    cfg = load_config(PretrainConfig, resolve(f"{method}/nw-ucla"))
    name, clip_cfg, options = preset_masks(cfg)
    d = cfg.data
    assert name == method and not clip_cfg.train
    assert clip_cfg == pretrain_clip_config(cfg, train=False)  # the preset's own (test-time) clips
    assert clip_cfg.frames == {"mamp": 32, "skeleton2vec": 30, "pstl": 50}[method]
    pics = plot_mask_figures(viz_store, 6, tmp_path, method=name, seed=3, options=options, clips={name: clip_cfg})
    clip = method_clip(viz_store, 6, name, config=clip_cfg)
    assert tuple(clip.shape) == (d.persons, clip_cfg.frames, 20, 3)
    if method == "mamp":  # the preset's grid: 32 frames / 4 = 8 segments x 20 joints, 15 visible (int(160 x 0.1))
        m = cfg.mamp
        want = motion_aware_mask(clip, segment=m.segment, mask_ratio=m.mask_ratio, tau=m.tau, generator=_gen(3))
        assert pics["mamp-mask"].mask.shape == (1, 8, 20) and pics["mamp-mask"].num_visible == 15
        np.testing.assert_array_equal(pics["mamp-mask"].mask.reshape(1, -1), want.mask.numpy())
    elif method == "skeleton2vec":  # 30 frames / 3 = 10 segments; ratio 0.8: 3 of 20 joints visible per tube
        s = cfg.skeleton2vec
        pic = pics["skeleton2vec-tube"]
        assert pic.mask.shape == (1, 10, 20) and pic.num_visible == 2 * 3 * 5
        want = motion_aware_tube_mask(
            clip, segment=s.segment, tube_len=s.tube_len, mask_ratio=s.mask_ratio, beta=s.beta, generator=_gen(3)
        )
        np.testing.assert_array_equal(pic.mask.reshape(1, -1), want.mask.numpy())
    else:  # PSTL: its CSM draws and MATM frames on its 50-frame, 2-person AimCLR clips
        p = cfg.pstl
        assert len(pics["pstl-matm"].dropped_frames) == 2 * p.matm_frames
        want = central_spatial_mask(viz_store.layout, num_joints=p.csm_joints, mode=p.csm_mode, generator=_gen(3),
                                    batch_shared=True)  # fmt: skip
        assert pics["pstl-csm"].masked_joints == tuple(sorted(int(j) for j in want.tolist()))


def test_preset_masks_refuse_random_masks() -> None:
    from skelssl.config import load_config
    from skelssl.configs import resolve
    from skelssl.engine.pretrain import PretrainConfig
    from skelssl.viz.masks import preset_masks

    cfg = load_config(PretrainConfig, resolve("skeleton2vec/nw-ucla"), ["skeleton2vec.mask=random"])
    with pytest.raises(ConfigError, match="only tube masks"):
        preset_masks(cfg)
