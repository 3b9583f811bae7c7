"""``skelssl viz``: pictures of sequences, masks, training curves and embeddings.

```
skelssl viz sequence --data STORE (--index I | --name NAME) --out FILE.png|FILE.gif [--frames N] [--view xy|xz|zy]
skelssl viz masks --data STORE (--index I | --name NAME) --out DIR [--method pstl|skeleton2vec|mamp|all]
                  [--config PRESET] [--seed S]
skelssl viz curves --run RUN --out FILE.png
skelssl viz embeddings --features features.npy --out FILE.png [--method pca|tsne]
```
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from skelssl.errors import BadInputError, ConfigError

__all__ = ["add_viz_parser", "resolve_sequence", "run_viz"]

_VIEWS = ("xy", "xz", "zy")


def resolve_sequence(store: Any, index: int | None, name: str | None) -> int:
    """The store index of ``--index`` or ``--name`` (exactly one of them), with a clear error if unknown."""
    if (index is None) == (name is None):
        raise ConfigError("give exactly one of --index I or --name NAME")
    n = len(store)
    if index is not None:
        if not -n <= index < n:
            raise ConfigError(f"--index {index} is out of range: the store {store.path} has {n} sequences (0..{n - 1})")
        return index % n
    hits = np.flatnonzero(np.asarray(store.names) == name)
    if not hits.size:
        from skelssl.utils import closest

        near = closest(str(name), [str(s) for s in store.names])
        hint = f"; did you mean {near!r}?" if near else ""
        raise ConfigError(f"no sequence named {name!r} in the store {store.path}{hint}")
    return int(hits[0])


def _open(path: Path) -> Any:
    from skelssl.data.store import SkeletonStore

    return SkeletonStore.open(path)


def _kb(path: Path) -> str:
    return f"{path.stat().st_size / 1024:.0f} KB"


def _sequence(args: argparse.Namespace) -> int:
    from skelssl.viz.skeleton import draw_sequence, from_store

    if args.view not in _VIEWS:
        raise ConfigError(f"--view {args.view!r}: use one of {', '.join(_VIEWS)}")
    store = _open(args.data)
    i = resolve_sequence(store, args.index, args.name)
    item = store[i]
    label = store.class_names[int(item.label)] if 0 <= int(item.label) < store.num_classes else str(item.label)
    title = f"{item.name} ({label})"
    pic = draw_sequence(
        from_store(item.keypoints), store.layout, args.out, frames=args.frames, view=args.view, title=title
    )
    kind = "animation" if pic.path.suffix.lower() == ".gif" else "strip"
    print(
        f"drew sequence {i} {item.name} ({label}): {kind} of {len(pic.frames)} frames -> {pic.path} ({_kb(pic.path)})"
    )
    return 0


def _masks(args: argparse.Namespace) -> int:
    from skelssl.viz.masks import plot_mask_figures

    if args.view not in _VIEWS:
        raise ConfigError(f"--view {args.view!r}: use one of {', '.join(_VIEWS)}")
    store = _open(args.data)
    i = resolve_sequence(store, args.index, args.name)
    method, options, clips = args.method or "all", None, None
    if args.config is not None:
        from skelssl.config import load_config
        from skelssl.configs import resolve
        from skelssl.engine.pretrain import PretrainConfig
        from skelssl.viz.masks import preset_masks

        preset, clip, options = preset_masks(load_config(PretrainConfig, resolve(args.config)))
        if args.method not in (None, preset):
            raise ConfigError(
                f"--config {args.config} pretrains {preset}, not --method {args.method}: give one of them"
            )
        method, clips = preset, {preset: clip}
    pictures = plot_mask_figures(
        store, i, args.out, method=method, seed=args.seed, view=args.view, options=options, clips=clips
    )
    for name, pic in pictures.items():
        if hasattr(pic, "masked_joints"):
            what = f"joints {', '.join(store.layout.joints[j] for j in pic.masked_joints)} removed"
        elif hasattr(pic, "dropped_frames"):
            what = f"{len(pic.dropped_frames)} of {len(pic.energy)} frames removed"
        else:
            total = pic.mask.shape[1] * pic.mask.shape[2]
            what = f"{pic.num_visible} of {total} tokens visible per person"
        print(f"  {name:<18} {what} -> {pic.path}")
    print(f"drew {len(pictures)} mask figure(s) of sequence {i} {store.names[i]} (seed {args.seed}) -> {args.out}")
    return 0


def _curves(args: argparse.Namespace) -> int:
    from skelssl.viz.curves import plot_curves

    pic = plot_curves(args.run, args.out)
    points = sum(len(xs) for xs, _ in pic.series.values())
    print(f"drew {', '.join(pic.panels)} curves ({points} points) of {args.run} -> {pic.path} ({_kb(pic.path)})")
    return 0


def _embeddings(args: argparse.Namespace) -> int:
    from skelssl.evaluation.embed import names_path
    from skelssl.evaluation.plots import plot_embeddings

    feats_path = Path(args.features)
    if not feats_path.is_file():
        raise BadInputError(feats_path, "no such file; write one with `skelssl embed ... --out features.npy`")
    try:
        feats = np.load(feats_path, allow_pickle=False)
    except ValueError as err:
        raise BadInputError(feats_path, f"not a .npy array ({err})") from None
    if feats.ndim != 2 or not len(feats):
        raise BadInputError(feats_path, f"expected features (N, D), got shape {feats.shape}")
    meta_path = names_path(feats_path)
    labels = np.zeros(len(feats), dtype=np.int64)
    class_names: list[str] | None = None
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("labels") is not None:
            labels = np.asarray(meta["labels"], dtype=np.int64)
            if len(labels) != len(feats):
                raise BadInputError(meta_path, f"{len(labels)} labels for {len(feats)} feature rows")
            class_names = list(meta.get("class_names") or []) or None
    else:
        print(f"  no {meta_path.name} beside the features: every point drawn in one colour")
    if args.method not in ("pca", "tsne"):
        raise ConfigError(f"--method {args.method!r}: use pca or tsne")
    out = plot_embeddings(feats, labels, args.out, class_names=class_names, method=args.method, seed=args.seed)
    print(f"drew {len(feats)} embeddings ({args.method.upper()}) of {feats_path} -> {out} ({_kb(out)})")
    return 0


def add_viz_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``skelssl viz`` and its four sub-commands on ``subparsers`` (``func`` set to :func:`run_viz`)."""
    p = subparsers.add_parser("viz", help="pictures: sequences, masks, training curves, embeddings (PNG/GIF)")
    sub = p.add_subparsers(dest="viz_command", required=True, metavar="WHAT")

    def sequence_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--data", required=True, type=Path, help="store directory (skelssl prepare)")
        q.add_argument("--index", type=int, default=None, help="sequence index in the store")
        q.add_argument("--name", default=None, help="sequence name (e.g. a01_s01_e00_v01)")
        q.add_argument("--view", default="xy", help="projection plane: xy (front), xz (top) or zy (side)")

    q = sub.add_parser("sequence", help="a stored sequence as a strip of frames (.png) or an animation (.gif)")
    sequence_args(q)
    q.add_argument("--out", required=True, type=Path, help="FILE.png (strip) or FILE.gif (animation)")
    q.add_argument("--frames", type=int, default=None, help="frames shown (default: 8 in a strip, all in a GIF)")

    q = sub.add_parser("masks", help="each method's masks on a real clip (CSM, MATM, tubes, MAMP)")
    sequence_args(q)
    q.add_argument("--out", required=True, type=Path, help="output folder for the PNGs")
    q.add_argument(
        "--method", default=None, choices=("pstl", "skeleton2vec", "mamp", "all"), help="default all (reference masks)"
    )
    q.add_argument(
        "--config",
        default=None,
        help="a pretraining preset or YAML (e.g. mamp/nw-ucla): its method's masks on its clips, as it trains",
    )
    q.add_argument("--seed", type=int, default=0, help="seed of the masks (default 0)")

    q = sub.add_parser("curves", help="loss, learning rate and kNN monitor of a run (metrics.jsonl)")
    q.add_argument("--run", required=True, type=Path, help="run directory (or its metrics.jsonl)")
    q.add_argument("--out", required=True, type=Path, help="FILE.png")

    q = sub.add_parser("embeddings", help="features from `skelssl embed` in 2-D, coloured by class")
    q.add_argument("--features", required=True, type=Path, help="features.npy (names.json beside it)")
    q.add_argument("--out", required=True, type=Path, help="FILE.png")
    q.add_argument("--method", default="pca", help="pca (default) or tsne")
    q.add_argument("--seed", type=int, default=0, help="t-SNE seed (default 0)")
    p.set_defaults(func=run_viz)
    return p


def run_viz(args: argparse.Namespace) -> int:
    """Run the ``skelssl viz`` sub-command in ``args.viz_command``."""
    handlers = {"sequence": _sequence, "masks": _masks, "curves": _curves, "embeddings": _embeddings}
    return handlers[args.viz_command](args)
