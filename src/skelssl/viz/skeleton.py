"""Skeleton sequences drawn as pictures: a strip of frames (PNG) or an animated GIF, headless.

A clip is ``(M, T, V, C)`` (persons, frames, joints, coordinates), as one :class:`~skelssl.data.clips.ClipDataset`
item; a stored sequence ``(T, M, V, C)`` is turned into that with :func:`from_store`. 3-D coordinates are
projected onto a plane (``view``: ``"xy"`` front, ``"xz"`` top, ``"zy"`` side; the first letter is the
horizontal axis); bones come from the layout's edges; every person has its own colour. A joint whose
coordinates are all zero is missing (padding, a lost body) and not drawn; a person missing in every frame is
left out. Every panel has equal aspect and the same axis limits, computed over the whole clip, so the body
does not jump between frames.

matplotlib is imported lazily with the Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from einops import rearrange

from skelssl.errors import ConfigError
from skelssl.skeleton.layouts import Layout, get_layout

__all__ = [
    "PERSON_COLOURS",
    "SequencePicture",
    "animate_sequence",
    "clip_limits",
    "draw_frame",
    "draw_sequence",
    "frame_indices",
    "from_store",
    "plot_strip",
    "present_persons",
    "project",
    "strip_figure",
]

View = Literal["xy", "xz", "zy"]
VIEWS: tuple[str, ...] = ("xy", "xz", "zy")
_AXIS = {"x": 0, "y": 1, "z": 2}
#: one colour per person (matplotlib's tab10 blue, orange, green, purple, …)
PERSON_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")
MASK_COLOUR = "#d62728"
GREY = "#c8c8c8"


def pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, *, dpi: int = 80) -> Path:
    """Write ``fig`` to ``path`` (parents created) and close it."""
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


@dataclass(frozen=True)
class SequencePicture:
    """What was drawn: the file, the clip's frame indices shown (in order), the persons drawn and the shared
    axis limits ``((x0, x1), (y0, y1))`` of every panel."""

    path: Path
    frames: tuple[int, ...]
    persons: tuple[int, ...]
    limits: tuple[tuple[float, float], tuple[float, float]]


def from_store(keypoints: np.ndarray) -> np.ndarray:
    """A stored sequence ``(T, M, V, C)`` → a clip ``(M, T, V, C)`` float32."""
    if np.ndim(keypoints) != 4:
        raise ValueError(f"expected a stored sequence (T, M, V, C), got shape {np.shape(keypoints)}")
    return rearrange(np.asarray(keypoints, dtype=np.float32), "t m v c -> m t v c")


def _check_clip(clip: Any, layout: Layout) -> np.ndarray:
    x = np.asarray(clip.detach().cpu() if hasattr(clip, "detach") else clip, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError(f"expected a clip (M, T, V, C), got shape {x.shape}")
    if x.shape[2] != layout.num_joints:
        raise ValueError(f"the clip has {x.shape[2]} joints, the layout {layout.name} {layout.num_joints}")
    if x.shape[3] not in (2, 3):
        raise ValueError(f"expected 2-D or 3-D coordinates, got C = {x.shape[3]}")
    return x


def project(clip: np.ndarray, view: str = "xy") -> np.ndarray:
    """Coordinates ``(..., C)`` → ``(..., 2)`` on the plane ``view`` (``"xy"``, ``"xz"`` or ``"zy"``).

    2-D input (C = 2) only has the ``"xy"`` view.
    """
    if view not in VIEWS:
        raise ConfigError(f"unknown view {view!r}; use one of {', '.join(VIEWS)}")
    c = np.shape(clip)[-1]
    a, b = _AXIS[view[0]], _AXIS[view[1]]
    if max(a, b) >= c:
        raise ConfigError(f"view {view!r} needs 3-D coordinates; these have {c}")
    return np.stack([np.asarray(clip)[..., a], np.asarray(clip)[..., b]], axis=-1)


def present_persons(clip: np.ndarray) -> tuple[int, ...]:
    """Persons of ``clip`` ``(M, T, V, C)`` with at least one non-zero coordinate."""
    return tuple(int(m) for m in np.flatnonzero(np.abs(np.asarray(clip)).reshape(len(clip), -1).max(axis=1) > 0))


def _valid(clip: np.ndarray) -> np.ndarray:
    """``(M, T, V)`` bool: the joint is present (not all-zero)."""
    return np.abs(clip).max(axis=-1) > 0


def clip_limits(
    clip: np.ndarray, view: str = "xy", *, margin: float = 0.06
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Shared axis limits ``((x0, x1), (y0, y1))`` of ``clip`` ``(M, T, V, C)`` on ``view``: the box of every
    present joint of every frame, widened by ``margin`` of its larger side and made square-ish so that an
    equal-aspect panel is filled."""
    xy = project(clip, view)[_valid(clip)]
    if xy.size == 0:
        return (-1.0, 1.0), (-1.0, 1.0)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    side = float(max(hi - lo)) or 1.0
    pad = margin * side
    centre = (lo + hi) / 2
    half = (hi - lo) / 2 + pad
    half = np.maximum(half, 0.25 * side)  # keep thin poses from giving needle-thin panels
    return (
        (float(centre[0] - half[0]), float(centre[0] + half[0])),
        (float(centre[1] - half[1]), float(centre[1] + half[1])),
    )


def frame_indices(length: int, count: int | None) -> tuple[int, ...]:
    """``count`` frame indices of a ``length``-frame clip, evenly spaced from the first to the last
    (every frame when ``count`` is ``None`` or at least ``length``)."""
    if length < 1:
        raise ValueError("the clip has no frames")
    if count is None or count >= length:
        return tuple(range(length))
    if count < 1:
        raise ConfigError(f"--frames must be at least 1, got {count}")
    if count == 1:
        return (0,)
    return tuple(int(i) for i in np.linspace(0, length - 1, count).round().astype(np.int64))


def draw_frame(
    ax: Any,
    xy: np.ndarray,
    valid: np.ndarray,
    layout: Layout,
    *,
    persons: Sequence[int],
    highlight: Sequence[int] = (),
    grey: bool = False,
    limits: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> None:
    """Draw one frame on ``ax``: ``xy`` ``(M, V, 2)`` projected joints, ``valid`` ``(M, V)`` present joints.

    Bones are lines in the person's colour (all grey when ``grey``); ``highlight`` joints are drawn as red
    rings with their bones dashed and faded (removed joints). Equal aspect, no ticks, ``limits`` shared.
    """
    from matplotlib.collections import LineCollection

    marked = set(int(j) for j in highlight)
    for m in persons:
        colour = GREY if grey else PERSON_COLOURS[m % len(PERSON_COLOURS)]
        kept, cut = [], []
        for child, parent in layout.edges:
            if valid[m, child] and valid[m, parent]:
                (cut if (child in marked or parent in marked) else kept).append((xy[m, child], xy[m, parent]))
        ax.add_collection(LineCollection(kept, colors=colour, linewidths=1.6, capstyle="round"))
        if cut:
            ax.add_collection(LineCollection(cut, colors=GREY, linewidths=1.0, linestyles=(0, (2, 1.5))))
        on = np.array([valid[m, j] and j not in marked for j in range(layout.num_joints)])
        ax.scatter(xy[m, on, 0], xy[m, on, 1], s=5, color=colour, zorder=3, linewidths=0)
        off = np.array([valid[m, j] and j in marked for j in range(layout.num_joints)])
        if off.any():
            ax.scatter(
                xy[m, off, 0], xy[m, off, 1], s=26, facecolors="none", edgecolors=MASK_COLOUR, linewidths=1.2, zorder=4
            )
    if limits is not None:
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("#dddddd")


def strip_figure(
    clip: Any,
    layout: Layout | str,
    *,
    frames: int | Sequence[int] | None = 8,
    view: str = "xy",
    highlight: Sequence[int] = (),
    grey_frames: Sequence[int] = (),
    columns: int | None = None,
    title: str = "",
    labels: bool = True,
    bottom: float = 0.0,
    panel: float = 1.25,
) -> tuple[Any, Any, tuple[int, ...], tuple[int, ...], tuple[tuple[float, float], tuple[float, float]]]:
    """The figure of :func:`plot_strip`, not saved: ``(fig, bottom_ax, frames, persons, limits)``.

    ``panel`` is the height of one frame's panel in inches. ``bottom`` > 0 adds an axis of that height
    (inches) under the strip, spanning every column (``bottom_ax``, else ``None``).
    """
    lay = get_layout(layout) if isinstance(layout, str) else layout
    x = _check_clip(clip, lay)
    t = x.shape[1]
    shown = frame_indices(t, frames) if frames is None or isinstance(frames, int) else tuple(int(f) for f in frames)
    if not shown or any(not 0 <= f < t for f in shown):
        raise ConfigError(f"frame indices must lie in 0..{t - 1}")
    persons = present_persons(x)
    limits = clip_limits(x, view)
    xy, valid = project(x, view), _valid(x)
    greyed = set(int(f) for f in grey_frames)
    plt = pyplot()
    n = len(shown)
    cols = min(columns or n, n)
    rows = -(-n // cols)
    (x0, x1), (y0, y1) = limits
    width = max(cols * panel * (x1 - x0) / (y1 - y0), 3.0)
    heights = [panel] * rows + ([bottom] if bottom > 0 else [])
    head = 0.35 if title else 0.15  # inches above the panels: the title and the frame numbers
    height = sum(heights) + head + 0.12 * len(heights) + 0.3 * (bottom > 0)
    fig = plt.figure(figsize=(width, height))
    grid = fig.add_gridspec(
        len(heights),
        cols,
        height_ratios=heights,
        wspace=0.04,
        hspace=0.12 + 0.25 * (bottom > 0) / len(heights),
        left=0.01 if bottom <= 0 else 0.06,
        right=0.99,
        top=1 - head / height,
        bottom=0.3 * (bottom > 0) / height + 0.01,
    )
    for k in range(n):
        ax = fig.add_subplot(grid[k // cols, k % cols])
        f = shown[k]
        draw_frame(
            ax, xy[:, f], valid[:, f], lay, persons=persons, highlight=highlight, grey=f in greyed, limits=limits
        )
        if labels:
            ax.set_title(f"{f}", fontsize=6, pad=1.5, color="#999999" if f in greyed else "black")
    bottom_ax = fig.add_subplot(grid[rows, :]) if bottom > 0 else None
    if title:
        fig.suptitle(title, fontsize=8, y=1 - 0.06 / height, va="top")
    return fig, bottom_ax, shown, persons, limits


def plot_strip(
    clip: Any,
    layout: Layout | str,
    path: str | Path,
    *,
    frames: int | Sequence[int] | None = 8,
    view: str = "xy",
    highlight: Sequence[int] = (),
    grey_frames: Sequence[int] = (),
    columns: int | None = None,
    title: str = "",
    labels: bool = True,
    panel: float = 1.25,
    dpi: int = 80,
) -> SequencePicture:
    """A strip of frames of ``clip`` ``(M, T, V, C)`` as a PNG.

    ``frames``: how many frames, evenly spaced (:func:`frame_indices`), or the explicit frame indices.
    ``highlight``: joints drawn as removed (red rings) in every frame; ``grey_frames``: frames drawn greyed
    out (removed frames). ``columns`` wraps the strip into rows (default: one row). Returns what was drawn.
    """
    fig, _, shown, persons, limits = strip_figure(
        clip,
        layout,
        frames=frames,
        view=view,
        highlight=highlight,
        grey_frames=grey_frames,
        columns=columns,
        title=title,
        labels=labels,
        panel=panel,
    )
    out = save_figure(fig, path, dpi=dpi)
    return SequencePicture(path=out, frames=shown, persons=persons, limits=limits)


def animate_sequence(
    clip: Any,
    layout: Layout | str,
    path: str | Path,
    *,
    frames: int | None = None,
    view: str = "xy",
    fps: int = 15,
    title: str = "",
    dpi: int = 60,
) -> SequencePicture:
    """``clip`` ``(M, T, V, C)`` as an animated GIF (matplotlib's PillowWriter), one GIF frame per clip frame
    shown: every frame, or ``frames`` evenly spaced. Returns what was drawn."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    lay = get_layout(layout) if isinstance(layout, str) else layout
    x = _check_clip(clip, lay)
    shown = frame_indices(x.shape[1], frames)
    persons = present_persons(x)
    limits = clip_limits(x, view)
    xy, valid = project(x, view), _valid(x)
    plt = pyplot()
    (x0, x1), (y0, y1) = limits
    aspect = (x1 - x0) / (y1 - y0)
    fig, ax = plt.subplots(figsize=(3.0 * aspect + 0.2, 3.2))

    def update(k: int) -> list[Any]:
        ax.clear()
        f = shown[k]
        draw_frame(ax, xy[:, f], valid[:, f], lay, persons=persons, limits=limits)
        ax.set_title(f"{title}  frame {f + 1}/{x.shape[1]}".strip(), fontsize=8)
        return []

    anim = FuncAnimation(fig, update, frames=len(shown), blit=False)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    anim.save(str(out), writer=PillowWriter(fps=fps), dpi=dpi)
    plt.close(fig)
    return SequencePicture(path=out, frames=shown, persons=persons, limits=limits)


def draw_sequence(
    clip: Any,
    layout: Layout | str,
    path: str | Path,
    *,
    frames: int | None = None,
    view: str = "xy",
    title: str = "",
) -> SequencePicture:
    """A strip (``.png``, 8 frames by default) or an animation (``.gif``, every frame by default) by the suffix
    of ``path``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        return plot_strip(clip, layout, path, frames=8 if frames is None else frames, view=view, title=title)
    if suffix == ".gif":
        return animate_sequence(clip, layout, path, frames=frames, view=view, title=title)
    raise ConfigError(f"--out must end in .png (a strip of frames) or .gif (an animation), got {path}")
