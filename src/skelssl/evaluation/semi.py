"""Semi-supervised evaluation (``skelssl eval semi``): a class-balanced fraction of the training labels.

The subset (:func:`balanced_subset`): for every class ``c`` with ``n_c`` training sequences,
``max(1, round(p · n_c))`` of them (round half up), drawn without replacement by
``np.random.default_rng([seed, c])`` from that class's store indices in ascending order. It depends on the
seed, the fraction and the store only — never on the process, rank or time — so every DDP rank and every
rerun draws the same one. It is saved (:func:`write_subset`) as JSON: the sorted sequence names, fraction,
seed, per-class counts and the store it was drawn from, written byte-identically for the same inputs.

Deviation from the references, on purpose: PSTL's ``Feeder_semi`` is class-balanced but seeded through
Python's ``random``; Skeleton2vec and MAMP draw unbalanced, unseeded (or per-rank) subsets (spec §1.9,
§2.9, §3.4). Here the subset is class-balanced and seeded, as the issue asks.

The head: a linear probe on frozen features (:func:`skelssl.evaluation.linear.run_linear`, default) or
``head=finetune`` (:func:`skelssl.evaluation.finetune.run_finetune`). ``seeds=1,2,3`` repeats the whole
thing per seed (subset and head both seeded by it) and reports mean ± std.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from skelssl.data.store import SkeletonStore
from skelssl.errors import ConfigError
from skelssl.evaluation.protocols import (
    EvalContext,
    base_report,
    check_options,
    feature_cache_dir,
    option,
    refuse_raw_input,
)

__all__ = ["SEMI_OPTIONS", "balanced_subset", "run_semi", "subset_record", "write_subset"]

#: options of ``semi`` itself; the head's options (``recipe``, ``selection``, ``lr`` …) pass through.
SEMI_OPTIONS = frozenset({"fraction", "seeds", "head"})


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def balanced_subset(labels: np.ndarray, indices: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Store indices of a class-balanced subset of the training sequences (module docstring).

    ``labels`` ``(N,)`` and ``indices`` ``(N,)``: the training part's labels and store indices. Returns the
    chosen store indices, sorted ascending.
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    if labels.shape != indices.shape:
        raise ValueError("labels and indices must have the same shape")
    chosen: list[np.ndarray] = []
    for c in np.unique(labels):
        pool = np.sort(indices[labels == c])
        take = min(len(pool), max(1, _round_half_up(fraction * len(pool))))
        rng = np.random.default_rng([int(seed), int(c)])
        chosen.append(rng.choice(pool, size=take, replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


def subset_record(
    store: SkeletonStore, subset: np.ndarray, *, fraction: float, seed: int, split: str, part: str
) -> dict[str, Any]:
    """The JSON-able description of a subset: sorted names, fraction, seed, counts per class, store."""
    labels = store.labels[subset]
    names = sorted(str(n) for n in store.names[subset])
    counts = {store.class_names[c]: int(np.sum(labels == c)) for c in range(store.num_classes)}
    pool = store.split_indices(split, part)
    available = {store.class_names[c]: int(np.sum(store.labels[pool] == c)) for c in range(store.num_classes)}
    return {
        "format": "skelssl-subset",
        "version": 1,
        "store_checksum": store.meta.get("input_checksum"),
        "source": store.meta.get("source"),
        "split": split,
        "part": part,
        "fraction": float(fraction),
        "seed": int(seed),
        "rule": "per class max(1, round_half_up(fraction * n_c)), np.random.default_rng([seed, class])",
        "size": len(names),
        "counts": counts,
        "available": available,
        "names": names,
    }


def write_subset(path: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` as JSON (sorted keys, fixed layout: byte-identical for the same record)."""
    from skelssl.utils import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=1, sort_keys=True, ensure_ascii=True) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode("ascii")))
    return path


def _seeds(ctx: EvalContext) -> list[int]:
    raw = option(ctx, "seeds", str(ctx.seed))
    try:
        seeds = [int(s) for s in raw.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"seeds={raw!r}: expected comma-separated integers such as 1,2,3") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={raw!r}: give distinct integers")
    return seeds


def run_semi(ctx: EvalContext) -> dict[str, Any]:
    """Semi-supervised evaluation (module docstring). Options: ``fraction=0.1`` (e.g. 0.01), ``seeds=S1,S2,…``
    (default ``ctx.seed``), ``head=linear|finetune``, and the head's own options.

    Writes ``subset.json`` (one seed) or ``subset-seed{S}.json`` (several) to ``ctx.out_dir``; each seed's head
    writes its artefacts (``logits.npy`` …) to ``ctx.out_dir`` (one seed) or ``ctx.out_dir/seed{S}``. The report's
    ``top1``/``top5`` are means over seeds with ``top1_std``/``top5_std`` (population std, 0 for one seed),
    ``per_class`` the mean per class, ``confusion`` the sum; ``rows`` one per seed.
    """
    start = time.perf_counter()
    fraction = option(ctx, "fraction", 0.1, float)
    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
    seeds = _seeds(ctx)
    head = option(ctx, "head", "linear")
    if head not in ("linear", "finetune"):
        raise ConfigError(f"head={head!r}: expected linear or finetune")
    passthrough = {k: v for k, v in ctx.options.items() if k not in SEMI_OPTIONS}
    if head == "linear":
        from skelssl.evaluation.linear import LINEAR_OPTIONS, run_linear

        check_options(ctx, SEMI_OPTIONS | LINEAR_OPTIONS, "semi")
    else:
        from skelssl.evaluation.finetune import run_finetune

        refuse_raw_input(ctx.encoder, "semi head=finetune")
    store = ctx.store
    pool = store.split_indices(ctx.split, ctx.train_part).astype(np.int64)
    passthrough.setdefault("cache", str(feature_cache_dir(ctx)))
    out = Path(ctx.out_dir)
    rows: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    for seed in seeds:
        subset = balanced_subset(store.labels[pool], pool, fraction, seed)
        record = subset_record(store, subset, fraction=fraction, seed=seed, split=ctx.split, part=ctx.train_part)
        name = "subset.json" if len(seeds) == 1 else f"subset-seed{seed}.json"
        write_subset(out / name, record)
        sub = dataclasses.replace(
            ctx, seed=seed, out_dir=out if len(seeds) == 1 else out / f"seed{seed}", options=dict(passthrough)
        )
        if head == "linear":
            r = run_linear(sub, train_indices=subset)
        else:
            r = run_finetune(sub, train_indices=subset)
        reports.append(r)
        rows.append(
            {
                "seed": seed,
                "top1": r["top1"],
                "top5": r.get("top5"),
                "labelled": len(subset),
                "subset": name,
                "selection": r.get("selection"),
            }
        )
    top1 = np.array([r["top1"] for r in reports], dtype=np.float64)
    top5 = np.array([r["top5"] for r in reports if r.get("top5") is not None], dtype=np.float64)
    settings = {
        "fraction": fraction,
        "seeds": seeds,
        "head": head,
        "labelled": [row["labelled"] for row in rows],
        "subset_rule": "class-balanced: per class max(1, round_half_up(fraction * n_c))",
        "head_settings": reports[0].get("settings", {}),
    }
    report = base_report(ctx, "semi", settings)
    class_names = list(store.class_names)
    per_class: dict[str, float | None] = {}
    for name in class_names:
        vals = [r["per_class"].get(name) for r in reports if r.get("per_class")]
        vals = [v for v in vals if v is not None]
        per_class[name] = float(np.mean(vals)) if vals else None
    confusion = np.sum([np.asarray(r["confusion"]) for r in reports if r.get("confusion") is not None], axis=0)
    report.update(
        {
            "top1": float(top1.mean()),
            "top1_std": float(top1.std()),
            "top5": float(top5.mean()) if len(top5) else None,
            "top5_std": float(top5.std()) if len(top5) else None,
            "per_class": per_class,
            "confusion": confusion.tolist() if np.ndim(confusion) == 2 else None,
            "rows": rows,
            "selection": reports[0].get("selection"),
            "seconds": time.perf_counter() - start,
        }
    )
    return report
