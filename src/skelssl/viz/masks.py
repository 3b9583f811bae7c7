"""The masks made visible on a real clip, each computed by the masking function the method trains with.

- :func:`plot_csm` — PSTL's Central Spatial Masking: the removed joints ringed in red on the skeleton frames.
- :func:`plot_matm` — PSTL's Motion Attention Temporal Masking: every frame of the clip, the removed ones
  greyed out, above the per-frame motion energy the mask ranks by.
- :func:`plot_tube_mask` — Skeleton2vec's motion-aware tube mask: the token grid joints × time segments
  (masked / visible, tubes outlined) beside the normalised per-tube motion that biases it.
- :func:`plot_mamp_mask` — MAMP's motion-aware (Gumbel) mask: the token grid beside the per-token motion.

Each function takes a clip ``(M, T, V, C)`` (one :class:`~skelssl.data.clips.ClipDataset` item, in the
method's own clip view: :func:`method_clip`) and a ``seed``; the mask is drawn from
``torch.Generator().manual_seed(seed)``, so calling the masking function with the same generator gives the
same mask (the tests check this). Every function returns the data it drew. Defaults are the reference
hyper-parameters (§1.5, §1.6, §2.4, §3.3 of the spec). Token masks are computed for all ``M`` person rows of
the clip, as the methods do (``N·M`` person-sequences); the grids of persons present in the clip are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange

from skelssl.data.clips import ClipConfig
from skelssl.errors import ConfigError
from skelssl.masking import (
    central_spatial_mask,
    mamp_motion,
    motion_attention_temporal_mask,
    motion_aware_mask,
    motion_aware_tube_mask,
    motion_energy,
    tube_intensity,
)
from skelssl.skeleton.layouts import Layout, get_layout
from skelssl.viz.skeleton import MASK_COLOUR, plot_strip, present_persons, pyplot, save_figure, strip_figure

__all__ = [
    "MASK_METHODS",
    "CSMPicture",
    "MATMPicture",
    "TokenPicture",
    "method_clip",
    "plot_csm",
    "plot_mamp_mask",
    "plot_mask_figures",
    "plot_matm",
    "plot_tube_mask",
    "preset_masks",
]

#: ``skelssl viz masks --method`` choices and the figures each writes
MASK_METHODS: dict[str, tuple[str, ...]] = {
    "pstl": ("pstl-csm", "pstl-matm"),
    "skeleton2vec": ("skeleton2vec-tube",),
    "mamp": ("mamp-mask",),
}


@dataclass(frozen=True)
class CSMPicture:
    """CSM as drawn: the file, the masked joints (sorted), the frames shown."""

    path: Path
    masked_joints: tuple[int, ...]
    frames: tuple[int, ...]


@dataclass(frozen=True)
class MATMPicture:
    """MATM as drawn: the file, the kept and dropped frame indices (increasing), the per-frame motion energy."""

    path: Path
    kept_frames: tuple[int, ...]
    dropped_frames: tuple[int, ...]
    energy: np.ndarray  # (T,)


@dataclass(frozen=True)
class TokenPicture:
    """A token mask as drawn: the file, the mask ``(M, TP, V)`` (``True`` = masked) of every person row, the
    motion shown beside it ``(M, TP, V)``, the visible tokens per row, and the persons drawn."""

    path: Path
    mask: np.ndarray
    motion: np.ndarray
    num_visible: int
    persons: tuple[int, ...]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _tensor(clip: Any) -> torch.Tensor:
    x = clip if isinstance(clip, torch.Tensor) else torch.as_tensor(np.asarray(clip))
    if x.dim() != 4:
        raise ValueError(f"expected a clip (M, T, V, C), got shape {tuple(x.shape)}")
    return x.detach().float().cpu()


def _layout(layout: Layout | str) -> Layout:
    return get_layout(layout) if isinstance(layout, str) else layout


def method_clip(
    store: Any, index: int, method: str, *, persons: int | None = None, config: ClipConfig | None = None
) -> torch.Tensor:
    """Sequence ``index`` of ``store`` in ``method``'s test-time clip view ``(M, T, V, C)``: PSTL 50 frames
    (AimCLR normalisation), Skeleton2vec 90 (PySKL), MAMP 120 (MAMP's crop-resize); ``M`` = the store's
    persons unless given. ``config``: this clip view instead (a preset's, see :func:`preset_masks`)."""
    from skelssl.data.clips import ClipDataset

    presets = {"pstl": ClipConfig.pstl, "skeleton2vec": ClipConfig.skeleton2vec, "mamp": ClipConfig.mamp}
    if method not in presets:
        raise ConfigError(f"unknown method {method!r}; use one of {', '.join(presets)}")
    if config is None:
        config = presets[method](persons=int(persons or store.num_persons))
    return ClipDataset(store=store, config=config.replace(train=False), indices=[int(index)])[0]["x"]


def preset_masks(cfg: Any) -> tuple[str, ClipConfig, dict[str, dict[str, Any]]]:
    """What a pretraining config (a :class:`~skelssl.engine.pretrain.PretrainConfig`, e.g. a preset) masks and
    on which clips: ``(method, its test-time clip view, options for`` :func:`plot_mask_figures` ``)`` — MAMP's
    segment, ratio and τ; Skeleton2vec's segment, tube length, ratio, β (0 for plain tubes) and rounding;
    PSTL's CSM joints and mode, MATM frames and mode."""
    from skelssl.engine.pretrain import pretrain_clip_config

    clip = pretrain_clip_config(cfg, train=False)
    if cfg.method == "mamp":
        m = cfg.mamp
        return "mamp", clip, {"mamp-mask": {"segment": m.segment, "mask_ratio": m.mask_ratio, "tau": m.tau}}
    if cfg.method == "skeleton2vec":
        s = cfg.skeleton2vec
        if s.mask not in ("motion_tube", "tube"):
            raise ConfigError(f"skeleton2vec.mask={s.mask!r}: only tube masks (motion_tube, tube) are drawn")
        beta = s.beta if s.mask == "motion_tube" else 0.0
        tube = {"segment": s.segment, "tube_len": s.tube_len, "mask_ratio": s.mask_ratio, "beta": beta}
        return "skeleton2vec", clip, {"skeleton2vec-tube": {**tube, "rounding": s.rounding}}
    if cfg.method == "pstl":
        p = cfg.pstl
        return (
            "pstl",
            clip,
            {
                "pstl-csm": {"num_joints": p.csm_joints, "mode": p.csm_mode},
                "pstl-matm": {"num_frames": p.matm_frames, "mode": p.matm_mode},
            },
        )
    raise ConfigError(f"unknown method {cfg.method!r}; use one of {', '.join(MASK_METHODS)}")


def plot_csm(
    clip: Any,
    layout: Layout | str,
    path: str | Path,
    *,
    num_joints: int = 8,
    mode: str = "reference",
    seed: int = 0,
    frames: int = 6,
    view: str = "xy",
    panel: float = 1.6,
    title: str | None = None,
) -> CSMPicture:
    """PSTL's CSM on ``clip`` ``(M, T, V, C)``: ``central_spatial_mask(layout, num_joints=, mode=,
    batch_shared=True)`` (one set for the clip, as the reference), ringed in red on ``frames`` frames."""
    lay = _layout(layout)
    x = _tensor(clip)
    joints = central_spatial_mask(lay, num_joints=num_joints, mode=mode, generator=_generator(seed), batch_shared=True)
    masked = tuple(int(j) for j in joints.tolist())
    if title is None:
        title = f"PSTL CSM ({mode}, {num_joints} draws ∝ degree, seed {seed}):\n{len(masked)} joints removed (red)"
    pic = plot_strip(x, lay, path, frames=frames, view=view, highlight=masked, title=title, panel=panel)
    return CSMPicture(path=pic.path, masked_joints=masked, frames=pic.frames)


def plot_matm(
    clip: Any,
    layout: Layout | str,
    path: str | Path,
    *,
    num_frames: int = 10,
    mode: str = "reference",
    seed: int = 0,
    view: str = "xy",
    columns: int = 10,
    panel: float = 1.0,
    title: str | None = None,
) -> MATMPicture:
    """PSTL's MATM on ``clip`` ``(M, T, V, C)``: ``motion_attention_temporal_mask(clip[None], num_frames=,
    mode=)``; every frame drawn (``columns`` per row), the removed ``2·num_frames`` greyed out, with the
    per-frame motion energy as bars below (removed frames in red)."""
    lay = _layout(layout)
    x = _tensor(clip)
    t = x.shape[1]
    _, keep = motion_attention_temporal_mask(x[None], num_frames=num_frames, mode=mode, generator=_generator(seed))
    kept = tuple(int(f) for f in keep[0].tolist())
    dropped = tuple(sorted(set(range(t)) - set(kept)))
    energy = motion_energy(x[None])[0].numpy()
    if title is None:
        title = f"PSTL MATM ({mode}, seed {seed}): {len(dropped)} of {t} frames removed (grey), {len(kept)} kept"
    fig, ax, _, _, _ = strip_figure(
        x,
        lay,
        frames=list(range(t)),
        view=view,
        grey_frames=dropped,
        columns=columns,
        title=title,
        bottom=1.0,
        panel=panel,
    )
    colours = [MASK_COLOUR if f in set(dropped) else "#1f77b4" for f in range(t)]
    ax.bar(np.arange(t), energy, color=colours, width=0.8)
    ax.set_xlim(-0.6, t - 0.4)
    ax.set_ylabel("motion", fontsize=7)
    ax.set_xlabel("frame (red: removed)", fontsize=7, labelpad=1)
    ax.tick_params(labelsize=6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    out = save_figure(fig, path, dpi=80)
    return MATMPicture(path=out, kept_frames=kept, dropped_frames=dropped, energy=energy)


def _plot_token_grid(
    mask: np.ndarray,
    motion: np.ndarray,
    layout: Layout,
    path: str | Path,
    *,
    persons: tuple[int, ...],
    tube_len: int | None,
    motion_label: str,
    title: str,
) -> Path:
    """For each person drawn: the motion ``(TP, V)`` heat map and the mask grid ``(TP, V)``, joints on the
    vertical axis and time segments on the horizontal one; ``tube_len`` outlines the tubes."""
    from matplotlib.colors import ListedColormap

    plt = pyplot()
    tp, v = mask.shape[1:]
    rows = len(persons)
    fig, axes = plt.subplots(rows, 2, figsize=(9.2, 0.16 * v * rows + 0.9), squeeze=False)
    grid_cmap = ListedColormap(["#8fd18f", "#3b3b3b"])  # visible, masked
    top = float(motion[list(persons)].max()) or 1.0
    for r, m in enumerate(persons):
        for c, (data, cmap, label, vmax) in enumerate(
            (
                (motion[m], "viridis", motion_label, top),
                (mask[m].astype(np.float32), grid_cmap, "mask: dark = masked, green = visible", 1.0),
            )
        ):
            ax = axes[r, c]
            im = ax.imshow(
                rearrange(data, "t v -> v t"), aspect="auto", cmap=cmap, interpolation="nearest", vmin=0, vmax=vmax
            )
            if c == 0:
                fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01).ax.tick_params(labelsize=5)
                ax.set_yticks(range(v))
                ax.set_yticklabels(layout.joints, fontsize=5)
            else:
                ax.set_yticks([])
            if tube_len:
                for b in range(tube_len, tp, tube_len):
                    ax.axvline(b - 0.5, color="white" if c == 0 else "#d62728", linewidth=0.8)
            ax.set_xticks(range(0, tp, 5))
            ax.tick_params(axis="x", labelsize=6)
            ax.set_xlabel("time segment", fontsize=7, labelpad=1)
            who = f"person {m}: " if rows > 1 else ""
            ax.set_title(f"{who}{label}", fontsize=7, pad=2)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)


def _persons_or_first(x: torch.Tensor) -> tuple[int, ...]:
    return present_persons(x.numpy()) or (0,)


def plot_tube_mask(
    clip: Any,
    layout: Layout | str,
    path: str | Path,
    *,
    segment: int = 3,
    tube_len: int = 5,
    mask_ratio: float = 0.9,
    beta: float = 0.1,
    rounding: str = "reference",
    seed: int = 0,
    title: str | None = None,
) -> TokenPicture:
    """Skeleton2vec's ``motion_aware_tube_mask`` of ``clip`` ``(M, T, V, C)`` (its ``M`` person rows), drawn as
    the token grid ``(TP, V)`` with the tubes outlined, beside the normalised tube motion ``μ̂`` (per tube,
    repeated over its segments)."""
    lay = _layout(layout)
    x = _tensor(clip)
    tm = motion_aware_tube_mask(
        x,
        segment=segment,
        tube_len=tube_len,
        mask_ratio=mask_ratio,
        beta=beta,
        rounding=rounding,  # type: ignore[arg-type]
        generator=_generator(seed),
    )
    v = x.shape[2]
    mask = rearrange(tm.mask, "b (t v) -> b t v", v=v).numpy()
    intensity = tube_intensity(x, segment=segment, tube_len=tube_len).numpy()  # (M, tubes, V)
    motion = np.repeat(intensity, tube_len, axis=1)
    persons = _persons_or_first(x)
    tp = mask.shape[1]
    if title is None:
        title = (
            f"Skeleton2vec motion-aware tube mask (ratio {mask_ratio}, β {beta}, tubes of {tube_len} segments × "
            f"{segment} frames, seed {seed}): {tm.num_visible} of {tp * v} tokens visible"
        )
    out = _plot_token_grid(
        mask, motion, lay, path, persons=persons, tube_len=tube_len, motion_label="tube motion μ̂", title=title
    )
    return TokenPicture(path=out, mask=mask, motion=motion, num_visible=tm.num_visible, persons=persons)


def plot_mamp_mask(
    clip: Any,
    layout: Layout | str,
    path: str | Path,
    *,
    segment: int = 4,
    mask_ratio: float = 0.9,
    tau: float = 0.8,
    seed: int = 0,
    title: str | None = None,
) -> TokenPicture:
    """MAMP's ``motion_aware_mask`` of ``clip`` ``(M, T, V, C)`` (its ``M`` person rows), drawn as the token
    grid ``(TP, V)`` beside the per-token motion it samples by."""
    lay = _layout(layout)
    x = _tensor(clip)
    tm = motion_aware_mask(x, segment=segment, mask_ratio=mask_ratio, tau=tau, generator=_generator(seed))
    v = x.shape[2]
    mask = rearrange(tm.mask, "b (t v) -> b t v", v=v).numpy()
    motion = rearrange(mamp_motion(x, segment=segment), "b (t v) -> b t v", v=v).numpy()
    persons = _persons_or_first(x)
    tp = mask.shape[1]
    if title is None:
        title = (
            f"MAMP motion-aware mask (ratio {mask_ratio}, τ {tau}, {segment}-frame tokens, seed {seed}): "
            f"{tm.num_visible} of {tp * v} tokens visible"
        )
    out = _plot_token_grid(
        mask, motion, lay, path, persons=persons, tube_len=None, motion_label="token motion", title=title
    )
    return TokenPicture(path=out, mask=mask, motion=motion, num_visible=tm.num_visible, persons=persons)


def plot_mask_figures(
    store: Any,
    index: int,
    out_dir: str | Path,
    *,
    method: str = "all",
    seed: int = 0,
    view: str = "xy",
    options: dict[str, dict[str, Any]] | None = None,
    clips: dict[str, ClipConfig] | None = None,
) -> dict[str, Any]:
    """Every mask figure of ``method`` (``pstl``, ``skeleton2vec``, ``mamp`` or ``all``) for sequence ``index``
    of ``store``, each on the method's own clip view, into ``out_dir/<name>.png``. ``options`` maps a figure
    name to keyword arguments of its function (e.g. ``{"skeleton2vec-tube": {"mask_ratio": 0.8}}``); the
    defaults are the reference hyper-parameters. ``clips`` maps a method to the clip view to draw on instead
    of its reference one (a preset's: :func:`preset_masks`). Returns name → picture."""
    if method != "all" and method not in MASK_METHODS:
        raise ConfigError(f"unknown method {method!r}; use one of {', '.join([*MASK_METHODS, 'all'])}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lay = store.layout
    chosen = list(MASK_METHODS) if method == "all" else [method]
    opts = dict(options or {})
    unknown = set(opts) - {name for names in MASK_METHODS.values() for name in names}
    if unknown:
        raise ConfigError(f"unknown mask figure(s) {', '.join(sorted(unknown))} in options")
    pictures: dict[str, Any] = {}
    for m in chosen:
        clip = method_clip(store, index, m, config=(clips or {}).get(m))
        for name in MASK_METHODS[m]:
            kw = {"seed": seed, **opts.get(name, {})}
            if name.startswith("pstl"):
                kw.setdefault("view", view)
            pictures[name] = _FIGURES[name](clip, lay, out / f"{name}.png", **kw)
    return pictures


_FIGURES: dict[str, Any] = {
    "pstl-csm": plot_csm,
    "pstl-matm": plot_matm,
    "skeleton2vec-tube": plot_tube_mask,
    "mamp-mask": plot_mamp_mask,
}
