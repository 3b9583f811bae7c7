"""Skeleton strips and animations: projection, shared limits, frames drawn, files and image sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from skelssl.errors import ConfigError
from skelssl.viz.skeleton import (
    animate_sequence,
    clip_limits,
    draw_sequence,
    frame_indices,
    from_store,
    plot_strip,
    present_persons,
    project,
    pyplot,
    strip_figure,
)


def _clip(viz_store, i: int = 0) -> np.ndarray:
    return from_store(viz_store[i].keypoints)


def test_from_store_and_project(viz_store) -> None:
    kp = viz_store[0].keypoints  # (T, M, V, C)
    clip = from_store(kp)
    assert clip.shape == (kp.shape[1], kp.shape[0], kp.shape[2], kp.shape[3]) and clip.dtype == np.float32
    t, m, v = 3, 0, 7
    for view, (a, b) in {"xy": (0, 1), "xz": (0, 2), "zy": (2, 1)}.items():
        xy = project(clip, view)
        assert xy.shape == (*clip.shape[:3], 2)
        assert xy[m, t, v, 0] == kp[t, m, v, a] and xy[m, t, v, 1] == kp[t, m, v, b]
    with pytest.raises(ConfigError, match="unknown view"):
        project(clip, "yx")
    with pytest.raises(ConfigError, match="3-D"):
        project(clip[..., :2], "xz")


@settings(max_examples=40, deadline=None)
@given(length=st.integers(1, 200), count=st.integers(1, 250))
def test_frame_indices(length: int, count: int) -> None:
    idx = frame_indices(length, count)
    assert len(idx) == min(length, count)
    assert list(idx) == sorted(set(idx)) and idx[0] == 0 and all(0 <= i < length for i in idx)
    if count > 1:
        assert idx[-1] == length - 1


def test_limits_hold_every_present_joint_and_missing_persons_are_skipped(viz_store) -> None:
    clip = _clip(viz_store)
    padded = np.concatenate([clip, np.zeros_like(clip)], axis=0)  # a zero-padded second person
    padded[0, 2, 5] = 0.0  # a missing joint in frame 2
    assert present_persons(padded) == (0,)
    (x0, x1), (y0, y1) = clip_limits(padded, "xy")
    pts = project(clip, "xy").reshape(-1, 2)
    pts = pts[np.abs(clip).max(axis=-1).reshape(-1) > 0]
    assert x0 < pts[:, 0].min() and pts[:, 0].max() < x1 and y0 < pts[:, 1].min() and pts[:, 1].max() < y1
    assert clip_limits(padded, "xy") == clip_limits(clip, "xy")  # zeros do not stretch the box


def test_strip_panels_share_limits_and_equal_aspect(viz_store) -> None:
    clip = _clip(viz_store)
    fig, bottom, frames, persons, limits = strip_figure(clip, viz_store.layout, frames=5, view="xy")
    try:
        assert bottom is None and persons == (0,) and frames == frame_indices(clip.shape[1], 5)
        assert len(fig.axes) == 5
        for ax in fig.axes:
            assert ax.get_xlim() == pytest.approx(limits[0]) and ax.get_ylim() == pytest.approx(limits[1])
            assert ax.get_aspect() == 1.0
            # one LineCollection of bones: every edge with both joints present
            assert len(ax.collections[0].get_segments()) == len(viz_store.layout.edges)
    finally:
        pyplot().close(fig)


def test_strip_png_written_and_wider_with_more_frames(viz_store, tmp_path: Path) -> None:
    clip = _clip(viz_store, 3)
    few = plot_strip(clip, viz_store.layout, tmp_path / "a.png", frames=3)
    many = plot_strip(clip, viz_store.layout, tmp_path / "b.png", frames=9, view="zy")
    assert few.path.stat().st_size > 2000 and many.path.stat().st_size > 2000
    assert len(few.frames) == 3 and len(many.frames) == 9
    w3, h3 = Image.open(few.path).size
    w9, h9 = Image.open(many.path).size
    assert w9 > 2 * w3 * 0.8 and abs(h9 - h3) < 0.3 * h3
    with pytest.raises(ConfigError, match="frame indices"):
        plot_strip(clip, viz_store.layout, tmp_path / "c.png", frames=[0, clip.shape[1]])


def test_gif_has_one_frame_per_clip_frame(viz_store, tmp_path: Path) -> None:
    clip = _clip(viz_store, 1)[:, :40]
    pic = animate_sequence(clip, viz_store.layout, tmp_path / "a.gif", frames=7, fps=10)
    with Image.open(pic.path) as im:
        assert im.format == "GIF" and im.n_frames == 7 == len(pic.frames)
    pic = draw_sequence(clip[:, :12], viz_store.layout, tmp_path / "all.gif")  # every frame by default
    with Image.open(pic.path) as im:
        assert im.n_frames == 12
    with pytest.raises(ConfigError, match=r"\.png"):
        draw_sequence(clip, viz_store.layout, tmp_path / "a.jpg")
