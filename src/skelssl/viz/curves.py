"""Training curves of a run from its ``metrics.jsonl`` (:class:`~skelssl.engine.metrics.MetricsLog`).

The log holds one JSON object per line with ``kind`` and ``step``: ``train`` rows (``loss``, ``lr`` and the
method's scalars, e.g. ``loss_csm``), ``epoch`` rows (mean ``loss`` of the epoch, ``lr``) and ``knn`` rows
(``knn_top1@K`` of the kNN monitor, ``epoch``). :func:`plot_curves` draws up to three panels — loss against
the step (every ``loss*`` scalar of the train rows, the epoch means as markers), the learning rate, and the
kNN monitor's top-1 (%) against the epoch — leaving out a panel with nothing to show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skelssl.errors import BadInputError
from skelssl.viz.skeleton import pyplot, save_figure

__all__ = ["CurvesPicture", "curve_series", "plot_curves"]

Series = dict[str, tuple[list[float], list[float]]]


@dataclass(frozen=True)
class CurvesPicture:
    """What was drawn: the file, the panels (``loss``, ``lr``, ``knn``) and every series ``name → (x, y)``
    (``train/loss``, ``epoch/loss``, ``lr``, ``knn_top1@20`` …; kNN values in %)."""

    path: Path
    panels: tuple[str, ...]
    series: Series = field(default_factory=dict)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def curve_series(records: Sequence[dict[str, Any]]) -> dict[str, Series]:
    """Panel → series of the records of a ``metrics.jsonl``; each series sorted by its x (the step, or the
    epoch for kNN), a later record at the same x replacing an earlier one (a resumed run)."""
    panels: dict[str, dict[str, dict[float, float]]] = {"loss": {}, "lr": {}, "knn": {}}
    for rec in records:
        kind, step = rec.get("kind"), _number(rec.get("step"))
        if step is None:
            continue
        for key, value in rec.items():
            y = _number(value)
            if y is None or key in ("step", "epoch"):
                continue
            if kind == "train" and key.startswith("loss"):
                panels["loss"].setdefault(f"train/{key}", {})[step] = y
            elif kind == "epoch" and key == "loss":
                panels["loss"].setdefault("epoch/loss", {})[step] = y
            elif kind == "train" and key == "lr":
                panels["lr"].setdefault("lr", {})[step] = y
            elif kind == "knn" and key.startswith("knn"):
                x = _number(rec.get("epoch"))
                panels["knn"].setdefault(key, {})[step if x is None else x] = 100 * y if y <= 1 else y
    out: dict[str, Series] = {}
    for panel, series in panels.items():
        if series:
            out[panel] = {
                name: ([x for x in sorted(pts)], [pts[x] for x in sorted(pts)]) for name, pts in series.items()
            }
    return out


def plot_curves(run: str | Path, path: str | Path, *, title: str = "") -> CurvesPicture:
    """The training curves of the run directory ``run`` (or its ``metrics.jsonl`` given directly) as a PNG."""
    from skelssl.engine.metrics import read_metrics

    run = Path(run)
    run_dir = run.parent if run.name == "metrics.jsonl" else run
    log = run_dir / "metrics.jsonl"
    if not log.is_file():
        raise BadInputError(log, "no metrics.jsonl here; give a run directory written by `skelssl pretrain`")
    try:
        records = read_metrics(run_dir)
    except ValueError as err:
        raise BadInputError(log, f"not JSON lines ({err})") from None
    panels = curve_series(records)
    if not panels:
        raise BadInputError(log, "no loss, lr or kNN records to draw")
    plt = pyplot()
    names = tuple(panels)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.0), squeeze=False)
    for ax, panel in zip(axes[0], names, strict=True):
        series = panels[panel]
        if panel == "loss":
            for name, (xs, ys) in sorted(series.items(), key=lambda kv: (kv[0] != "train/loss", kv[0])):
                if name == "epoch/loss":
                    ax.plot(xs, ys, "o", markersize=3.5, color="black", label="epoch mean")
                else:
                    main = name == "train/loss"
                    ax.plot(xs, ys, linewidth=1.4 if main else 0.9, alpha=1.0 if main else 0.7, label=name[6:])
            values = [y for _, ys in series.values() for y in ys]
            if min(values) > 0 and max(values) / min(values) > 20:
                ax.set_yscale("log")
            ax.set_xlabel("step")
            ax.set_ylabel("loss")
        elif panel == "lr":
            xs, ys = series["lr"]
            ax.plot(xs, ys, color="#2ca02c")
            ax.set_xlabel("step")
            ax.set_ylabel("learning rate")
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        else:
            for name, (xs, ys) in sorted(series.items(), key=lambda kv: (len(kv[0]), kv[0])):  # @1, @5, @20
                ax.plot(xs, ys, marker="o", markersize=3.5, label=name.replace("knn_", "kNN "))
            ax.set_xlabel("epoch")
            ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
        if panel != "lr":
            ax.legend(fontsize=7, frameon=False)
        ax.set_title({"loss": "loss", "lr": "learning rate", "knn": "kNN monitor"}[panel], fontsize=9)
    fig.suptitle(title or f"training curves: {run_dir.name}", fontsize=9)
    fig.tight_layout()
    out = save_figure(fig, path, dpi=80)
    flat = {name: pts for series in panels.values() for name, pts in series.items()}
    return CurvesPicture(path=out, panels=names, series=flat)
