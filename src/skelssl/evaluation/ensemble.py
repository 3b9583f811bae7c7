"""Multi-stream ensemble (the papers' "3s" rows): one linear probe per encoder, logits fused with weights.

Each encoder of ``ctx.encoders`` (typically joint, bone and motion, each pretrained on its own stream, which its
card names) gets the plain linear probe of :func:`~skelssl.evaluation.linear.run_linear` in its own
sub-directory of ``ctx.out_dir`` (``joint/``, ``bone/``, ``motion/``; the linear options apply to every probe, and
the feature cache is shared). The test logits are then fused: ``Σ_i w_i · logits_i`` (``fuse=logits``, the
AimCLR/CrosSCLR-family practice of adding the streams' scores) or ``Σ_i w_i · softmax(logits_i)``
(``fuse=softmax``). Options: ``weights=1,1,1`` (one per encoder, default all 1), ``fuse=logits|softmax``, and the
linear probe's (``recipe``, ``selection``, ``lr``, ``batch_size``, ``cache``).

Report: ``rows`` = one per stream (``{"stream", "encoder", "weight", "top1", "top5"}``) and a ``"fused"`` row;
``top1`` / ``top5`` / ``per_class`` are the fused numbers. Writes ``logits.npy`` (fused) and ``labels.npy``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skelssl.errors import ConfigError
from skelssl.evaluation.linear import LINEAR_OPTIONS, run_linear
from skelssl.evaluation.protocols import (
    SELECTION_BEST,
    SELECTION_FINAL,
    EvalContext,
    accuracy_report,
    base_report,
    check_options,
    feature_cache_dir,
    option,
)

__all__ = ["ENSEMBLE_OPTIONS", "FUSIONS", "fuse_logits", "run_ensemble"]

ENSEMBLE_OPTIONS = frozenset(LINEAR_OPTIONS | {"weights", "fuse"})
FUSIONS = ("logits", "softmax")


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fuse_logits(logits: Sequence[np.ndarray], weights: Sequence[float], *, fuse: str = "logits") -> np.ndarray:
    """``Σ_i weights[i] · f(logits[i])`` with ``f`` the identity (``fuse="logits"``) or a row softmax
    (``"softmax"``); every ``logits[i]`` is ``(N, K)``. Returns float64 ``(N, K)``."""
    if fuse not in FUSIONS:
        raise ConfigError(f"fuse={fuse!r}: expected one of {', '.join(FUSIONS)}")
    if len(logits) != len(weights) or not logits:
        raise ConfigError(f"{len(weights)} weights for {len(logits)} streams")
    shape = np.asarray(logits[0]).shape
    total = np.zeros(shape, dtype=np.float64)
    for scores, w in zip(logits, weights, strict=True):
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != shape:
            raise ValueError(f"every stream's logits must be {shape}, got {scores.shape}")
        total += float(w) * (_softmax(scores) if fuse == "softmax" else scores)
    return total


def _weights(ctx: EvalContext, n: int) -> list[float]:
    raw = ctx.options.get("weights")
    if raw is None:
        return [1.0] * n
    try:
        weights = [float(v) for v in raw.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"option weights={raw!r}: expected comma-separated numbers") from None
    if len(weights) != n:
        raise ConfigError(f"option weights={raw!r} gives {len(weights)} weights for {n} encoders")
    return weights


def _subdirs(streams: list[str]) -> list[str]:
    if len(set(streams)) == len(streams):
        return streams
    return [f"{i}-{s}" for i, s in enumerate(streams)]


def run_ensemble(ctx: EvalContext) -> dict[str, Any]:
    """Linear probe per encoder, then weighted logit fusion (see the module docstring)."""
    check_options(ctx, ENSEMBLE_OPTIONS, "ensemble")
    start = time.perf_counter()
    if not ctx.encoders:
        raise ConfigError("ensemble: give at least one encoder")
    weights = _weights(ctx, len(ctx.encoders))
    fuse = option(ctx, "fuse", "logits")
    if fuse not in FUSIONS:
        raise ConfigError(f"fuse={fuse!r}: expected one of {', '.join(FUSIONS)}")
    linear_options = {k: v for k, v in ctx.options.items() if k in LINEAR_OPTIONS}
    linear_options["cache"] = str(feature_cache_dir(ctx))  # one cache for the campaign, not one per stream
    out = Path(ctx.out_dir)
    streams = [e.stream for e in ctx.encoders]
    logits: list[np.ndarray] = []
    labels: np.ndarray | None = None
    rows: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    for enc, sub, w in zip(ctx.encoders, _subdirs(streams), weights, strict=True):
        sub_ctx = EvalContext(
            encoders=[enc],
            store=ctx.store,
            split=ctx.split,
            train_part=ctx.train_part,
            test_part=ctx.test_part,
            device=ctx.device,
            seed=ctx.seed,
            epochs=ctx.epochs,
            out_dir=out / sub,
            options=dict(linear_options),
        )
        rep = run_linear(sub_ctx)
        stream_logits = np.load(out / sub / "logits.npy", allow_pickle=False)
        stream_labels = np.load(out / sub / "labels.npy", allow_pickle=False)
        if labels is None:
            labels = stream_labels
        elif not np.array_equal(labels, stream_labels):
            raise RuntimeError("the streams' test sets differ (labels out of order)")
        logits.append(stream_logits)
        reports.append(rep)
        rows.append(
            {
                "stream": enc.stream,
                "encoder": str(enc.path),
                "method": enc.method,
                "random_init": enc.random_init,
                "raw_input": enc.raw_input,
                "weight": w,
                "top1": rep["top1"],
                "top5": rep["top5"],
                "dir": sub,
            }
        )
    assert labels is not None
    fused = fuse_logits(logits, weights, fuse=fuse)
    acc = accuracy_report(fused, labels, class_names=ctx.store.class_names)
    rows.append(
        {"stream": "fused", "encoder": "+".join(streams), "weight": None, "top1": acc["top1"], "top5": acc["top5"]}
    )
    selection = option(ctx, "selection", "final")
    report = base_report(
        ctx,
        "ensemble",
        {
            "streams": streams,
            "weights": weights,
            "fuse": fuse,
            "probe": reports[0]["settings"].get("recipe"),
            "probe_settings": [r["settings"] for r in reports],
            "subdirs": _subdirs(streams),
        },
    )
    report.update(acc)
    report["rows"] = rows
    report["selection"] = SELECTION_BEST if selection == "best" else SELECTION_FINAL
    np.save(out / "logits.npy", fused.astype(np.float32), allow_pickle=False)
    np.save(out / "labels.npy", labels.astype(np.int64), allow_pickle=False)
    report["artefacts"] = ["logits.npy", "labels.npy"]
    report["seconds"] = time.perf_counter() - start
    return report
