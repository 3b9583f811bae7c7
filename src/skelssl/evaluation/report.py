"""Writing an evaluation report: ``report.json``, ``report.md`` and the plots.

Every protocol returns a report dict (see :mod:`skelssl.evaluation.protocols`); :func:`write_report` checks
it (:func:`check_report`), writes it as JSON, renders a small Markdown page a person reads, and draws
``confusion.png`` (when the report has a confusion matrix or logits and labels are given),
``embeddings.png`` (when embeddings are given) and ``missing_joints.png`` (when rows carry a numeric
``missing``). :func:`summary_line` is the one-line summary the CLI prints.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skelssl.utils import atomic_write

__all__ = ["REPORT_KEYS", "check_report", "render_markdown", "summary_line", "to_jsonable", "write_report"]

#: Keys every report dict has.
REPORT_KEYS = (
    "protocol",
    "encoder",
    "data",
    "settings",
    "top1",
    "top5",
    "per_class",
    "rows",
    "seconds",
    "selection",
)


def check_report(report: dict[str, Any]) -> None:
    """``ValueError`` naming the missing or malformed keys of a report dict."""
    missing = [k for k in REPORT_KEYS if k not in report]
    if missing:
        raise ValueError(f"report lacks {', '.join(missing)}")
    for key in ("top1", "top5"):
        value = report[key]
        if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 1):
            raise ValueError(f"report[{key!r}] must be a fraction in [0, 1] or None, got {value!r}")
    if not isinstance(report["rows"], list):
        raise ValueError("report['rows'] must be a list")
    if report["per_class"] is not None and not isinstance(report["per_class"], dict):
        raise ValueError("report['per_class'] must be a dict {class name: accuracy}")


def to_jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples, paths and non-finite floats made JSON-safe."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.2f}"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k} {_cell(v)}" for k, v in value.items())
    return str(value).replace("|", "\\|")


def _baseline(encoder: dict[str, Any]) -> str | None:
    """``"raw input"`` / ``"random init"`` for a report's baseline encoder entry, ``None`` for an encoder."""
    return "raw input" if encoder.get("raw_input") else "random init" if encoder.get("random_init") else None


def render_markdown(report: dict[str, Any], *, images: Sequence[str] = ()) -> str:
    """A small Markdown page: what was evaluated on what, the settings, the accuracies, per-setting rows,
    per-class accuracy and the images."""
    enc = report.get("encoder") or {}
    data = report.get("data") or {}
    lines = [f"# {report['protocol']} evaluation", ""]
    encs = report.get("encoders") or [enc]
    for e in encs:
        tag = f" ({label})" if (label := _baseline(e)) else ""
        lines.append(
            f"- encoder: `{e.get('path')}`{tag} — {e.get('method')} {e.get('kind')}, stream {e.get('stream')}, "
            f"weights digest `{str(e.get('digest'))[:12]}`"
        )
    counts = data.get("counts") or {}
    lines.append(
        f"- data: `{data.get('store')}` ({data.get('source')}, layout {data.get('layout')}), split "
        f"{data.get('split')}: {data.get('train_part')} {counts.get(data.get('train_part'))} → "
        f"{data.get('test_part')} {counts.get(data.get('test_part'))}" + (" — transfer" if data.get("transfer") else "")
    )
    lines.append(f"- seed {report.get('seed')}, device {report.get('device')}, skelssl {report.get('skelssl')}")
    lines.append(f"- selection: {report.get('selection')}; {report.get('seconds', 0):.1f} s")
    lines += ["", "| top-1 (%) | top-5 (%) |", "|---:|---:|"]
    top1 = _pct(report.get("top1"))
    if report.get("top1_std") is not None:
        top1 += f" ± {100 * report['top1_std']:.2f}"
    top5 = _pct(report.get("top5"))
    if report.get("top5_std") is not None:
        top5 += f" ± {100 * report['top5_std']:.2f}"
    lines += [f"| {top1} | {top5} |", ""]
    settings = report.get("settings") or {}
    if settings:
        lines += ["## Settings", "", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in settings.items()]
        lines.append("")
    rows = report.get("rows") or []
    if rows:
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        lines += ["## Rows", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for r in rows:
            cells = [
                _pct(r.get(k)) + " %" if k.startswith("top") and isinstance(r.get(k), (int, float)) else _cell(r.get(k))
                for k in keys
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    per_class = report.get("per_class") or {}
    if per_class:
        lines += ["## Per class", "", "| class | top-1 (%) |", "|---|---:|"]
        lines += [f"| {_cell(name)} | {_pct(acc)} |" for name, acc in per_class.items()]
        lines.append("")
    for image in images:
        lines += [f"![{Path(image).stem}]({image})", ""]
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def write_report(
    out_dir: str | Path,
    report: dict[str, Any],
    *,
    logits: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    embedding_labels: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    plots: bool = True,
    embedding_method: str = "pca",
) -> Path:
    """Write ``report.json``, ``report.md`` and the plots into ``out_dir``; returns the ``report.json`` path.

    ``logits`` ``(N, K)`` and ``labels`` ``(N,)``: for the confusion matrix when the report has none.
    ``embeddings`` ``(N, D)`` with ``embedding_labels`` (default ``labels``): ``embeddings.png`` (PCA, or
    ``embedding_method="tsne"``). ``class_names`` default to the keys of ``report["per_class"]``.
    """
    from skelssl.evaluation import plots as P

    check_report(report)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if class_names is None and isinstance(report.get("per_class"), dict):
        class_names = list(report["per_class"])
    images: list[str] = []
    if plots:
        confusion = report.get("confusion")
        if confusion is None and logits is not None and labels is not None:
            from skelssl.evaluation.protocols import accuracy_report

            confusion = accuracy_report(logits, labels, class_names=class_names)["confusion"]
        if confusion is not None and np.ndim(confusion) == 2:
            title = f"{report['protocol']}: confusion (top-1 {_pct(report.get('top1'))} %)"
            P.plot_confusion(confusion, out / "confusion.png", class_names=class_names, title=title)
            images.append("confusion.png")
        if embeddings is not None:
            emb_labels = embedding_labels if embedding_labels is not None else labels
            if emb_labels is not None and len(emb_labels) == len(embeddings):
                P.plot_embeddings(
                    embeddings, emb_labels, out / "embeddings.png", class_names=class_names, method=embedding_method
                )
                images.append("embeddings.png")
        if P.plot_accuracy_vs_missing(report.get("rows") or [], out / "missing_joints.png") is not None:
            images.append("missing_joints.png")
    report = dict(report)
    report["images"] = images
    text = json.dumps(to_jsonable(report), indent=2, allow_nan=False) + "\n"
    path = out / "report.json"
    _write_text(path, text)
    _write_text(out / "report.md", render_markdown(report, images=images) + "\n")
    return path


def summary_line(report: dict[str, Any], path: str | Path) -> str:
    """``linear top1 61.2% top5 95.0% (final-epoch, pstl recipe, 150 epochs) … → DIR/report.json``."""
    parts = [str(report.get("protocol"))]
    enc = report.get("encoder") or {}
    if label := _baseline(enc):
        parts.append(f"[{label}]")
    top1 = report.get("top1")
    if top1 is not None:
        text = f"top1 {100 * top1:.1f}%"
        if report.get("top1_std") is not None and len(report.get("rows") or []) > 1:
            text += f" ± {100 * report['top1_std']:.1f}"
        parts.append(text)
    if report.get("top5") is not None:
        parts.append(f"top5 {100 * report['top5']:.1f}%")
    rows = report.get("rows") or []
    if report.get("protocol") == "knn" and rows:
        parts.append("(" + ", ".join(f"k={r['k']} {100 * r['top1']:.1f}%" for r in rows) + ")")
    extra = []
    if report.get("selection"):
        extra.append(str(report["selection"]))
    settings = report.get("settings") or {}
    for key in ("recipe", "fraction", "epochs"):
        if key in settings:
            extra.append(f"{key} {settings[key]}")
    probe = {**(settings.get("head_settings") or {}), **settings}  # semi: its head's settings
    if str(probe.get("pool", "")).startswith("joint"):
        extra.append("pool joint")
    if probe.get("augment"):
        extra.append(f"augment {probe['augment']}")
    if extra:
        parts.append("[" + ", ".join(extra) + "]")
    parts.append(f"in {report.get('seconds', 0):.1f} s → {path}")
    return " ".join(parts)


def write_run_report(ctx: Any, report: dict[str, Any], *, embedding: str = "pca") -> Path:
    """:func:`write_report` for a protocol that ran in ``ctx`` (an ``EvalContext``): picks up the ``logits.npy`` /
    ``labels.npy`` the protocol saved in ``ctx.out_dir`` and, unless ``embedding="none"``, plots the encoder's
    cached test features (``"pca"`` or ``"tsne"``). Returns the ``report.json`` path."""
    from skelssl.evaluation.protocols import encoder_features

    out = Path(ctx.out_dir)
    logits = np.load(out / "logits.npy", allow_pickle=False) if (out / "logits.npy").is_file() else None
    labels = np.load(out / "labels.npy", allow_pickle=False) if (out / "labels.npy").is_file() else None
    embeddings = emb_labels = None
    if embedding != "none":
        embeddings, emb_labels, _ = encoder_features(ctx, ctx.test_part)
    return write_report(
        out,
        report,
        logits=logits,
        labels=labels,
        embeddings=embeddings,
        embedding_labels=emb_labels,
        class_names=list(ctx.store.class_names),
        embedding_method="pca" if embedding == "none" else embedding,
    )
