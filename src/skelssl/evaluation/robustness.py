"""Robustness to missing joints (PSTL's "practical evaluation", methods.md §1.9): linear-probe accuracy when
joints are lost.

Missing sets:

- ``k`` random joints per sample, ``k`` in ``ks`` (default 0, 3, 5, 8, 10). Sample ``i`` of the store loses the
  first ``k`` joints of a permutation drawn from ``np.random.default_rng([seed, TAG, i])``: reproducible from
  the seed, independent of batch order and size, different across samples, and nested (the 3 joints lost at
  ``k = 3`` are among the 5 lost at ``k = 5``), so the curve over ``k`` compares like with like.
- every body part of the layout (``left_arm``, ``right_arm``, ``left_leg``, ``right_leg``, ``trunk``) for every
  sample.

Ways of losing joints (``modes``):

- ``graph`` (ST-GCN): the joints are removed from the tensor and from every layer's graph
  (:class:`~skelssl.models.stgcn.STGCN` ``drop_joints``; the encoder sees ``V − k`` joints), as PSTL's
  ``ignore_joint``;
- ``token`` (transformer): their tokens (every segment of a lost joint) are dropped before the blocks
  (``encode(keep_idx=…)``); features are the mean of the remaining tokens;
- ``zero`` (both): the lost joints' coordinates are zero in the encoder's input (after the stream conversion).

Settings: ``test`` — the probe is trained on full skeletons and tested with missing joints; ``train_test`` — the
probe is trained and tested on the same kind of missing data (the training samples' own draws). The probe is
the one :func:`~skelssl.evaluation.linear.run_linear` trains (same recipe, seed and options), so the ``k = 0``
rows equal the plain linear probe; the full-skeleton features come from the shared feature cache.

Report: ``rows`` = ``{"mode", "setting", "missing": k or part name, "joints_missing", "top1", "top5"}`` (body-part
rows also carry ``"part"``); ``top1`` / ``top5`` / ``per_class`` are the ``k = 0`` (plain linear) numbers.
Final-epoch accuracies throughout.
Options: ``ks=0,3,5,8,10``, ``parts=all|none|left_arm,…``, ``modes=graph,zero``, ``settings=test,train_test``,
``batch_size=`` (feature extraction), ``recipe=``, ``lr=``, ``probe_batch_size=``, ``cache=DIR``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import reduce, repeat
from torch import nn
from torch.utils.data import DataLoader

from skelssl.data.augment import drop_joints as zero_joints
from skelssl.data.streams import to_stream
from skelssl.engine.checkpoint import unwrap_module
from skelssl.errors import ConfigError
from skelssl.evaluation.linear import fit_linear, linear_recipe
from skelssl.evaluation.protocols import (
    SELECTION_FINAL,
    EvalContext,
    LoadedEncoder,
    accuracy_report,
    base_report,
    check_options,
    encoder_features,
    feature_cache_dir,
    make_eval_dataset,
    option,
    refuse_raw_input,
    top_accuracy,
)
from skelssl.models.stgcn import STGCN
from skelssl.models.transformer import SkeletonTransformer
from skelssl.skeleton.layouts import PART_NAMES, Layout

__all__ = [
    "MODES",
    "ROBUSTNESS_OPTIONS",
    "SETTINGS",
    "encode_missing",
    "missing_features",
    "missing_joint_sets",
    "plot_robustness",
    "run_robustness",
    "token_keep_index",
]

ROBUSTNESS_OPTIONS = frozenset(
    {"ks", "parts", "modes", "settings", "batch_size", "recipe", "lr", "probe_batch_size", "cache"}
)
MODES = ("graph", "token", "zero")
SETTINGS = ("test", "train_test")
DEFAULT_KS = (0, 3, 5, 8, 10)
_TAG = 0x6D697373  # "miss": keeps these draws apart from any other use of the seed


# -------------------------------------------------------------------------------------------- missing sets


def missing_joint_sets(indices: Sequence[int] | np.ndarray, num_joints: int, k: int, *, seed: int) -> np.ndarray:
    """The ``k`` joints each sample loses: int64 ``(N, k)``, rows sorted.

    Row ``i`` depends only on ``(seed, indices[i])`` (the store index): the first ``k`` entries of a
    permutation of ``range(num_joints)`` from ``np.random.default_rng([seed, TAG, index])``.
    """
    if not 0 <= k < num_joints:
        raise ConfigError(f"cannot drop {k} of {num_joints} joints (at least one must remain)")
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    out = np.empty((idx.size, k), dtype=np.int64)
    for row, i in enumerate(idx):
        perm = np.random.default_rng([int(seed), _TAG, int(i)]).permutation(num_joints)
        out[row] = np.sort(perm[:k])
    return out


def token_keep_index(dropped: torch.Tensor, *, num_joints: int, num_segments: int, persons: int) -> torch.Tensor:
    """Token positions to keep when each sample loses the joints ``dropped`` int64 ``(N, k)``.

    Tokens are t-major (token ``t·V + v``), so the result is ``(N·M, TP·(V − k))``: for each person-sequence
    (every person of a sample loses the same joints), the tokens of the kept joints, in increasing order.
    """
    n, k = dropped.shape
    lost = torch.zeros(n, num_joints, dtype=torch.bool, device=dropped.device)
    lost.scatter_(1, dropped, True)
    if bool((lost.sum(dim=1) != k).any()):
        raise ValueError("token_keep_index: repeated joint index in a missing set")
    kept = torch.argsort(lost.to(torch.uint8), dim=1, stable=True)[:, : num_joints - k]  # (N, V - k), sorted
    t = torch.arange(num_segments, device=dropped.device)
    keep = (t[None, :, None] * num_joints + kept[:, None, :]).reshape(n, -1)  # (N, TP·(V − k)), t-major
    return repeat(keep, "n l -> (n m) l", m=persons)


def encode_missing(encoder: nn.Module, x: torch.Tensor, dropped: torch.Tensor | None, mode: str) -> torch.Tensor:
    """Features ``(N, D)`` of ``x`` ``(N, M, T, V, C)`` (already in the encoder's stream) when each sample loses
    the joints ``dropped`` (int64 ``(N, k)``, or ``(k,)`` shared by the batch; ``None`` or ``k = 0``: none).

    ``graph``: ST-GCN ``drop_joints``; ``token``: transformer ``keep_idx``; ``zero``: zero-filled input.
    """
    model = unwrap_module(encoder)
    if dropped is None or dropped.shape[-1] == 0:
        return model(x)
    dropped = dropped.to(x.device)
    if mode == "zero":
        return model(zero_joints(x, dropped))
    if mode == "graph":
        if not isinstance(model, STGCN):
            raise ConfigError("mode 'graph' removes joints from an ST-GCN graph; use 'token' or 'zero' here")
        return model(x, drop_joints=dropped)
    if mode == "token":
        if not isinstance(model, SkeletonTransformer):
            raise ConfigError("mode 'token' drops transformer tokens; use 'graph' or 'zero' for an ST-GCN")
        if dropped.ndim == 1:
            dropped = repeat(dropped, "k -> n k", n=x.shape[0])
        keep = token_keep_index(
            dropped, num_joints=model.num_joints, num_segments=model.num_segments, persons=x.shape[1]
        )
        z = model.encode(model.tokenize(x), keep_idx=keep)
        return reduce(z, "(n m) l d -> n d", "mean", m=x.shape[1])
    raise ConfigError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")


def missing_features(
    enc: LoadedEncoder,
    dataset: Any,
    *,
    mode: str,
    k: int = 0,
    part: str | None = None,
    seed: int = 0,
    batch_size: int = 128,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frozen features of every item of ``dataset`` (test view) with joints missing: ``k`` random joints per
    sample (:func:`missing_joint_sets`) or the body ``part``. Returns ``(features (N, D) float32, labels (N,),
    store indices (N,))``; the encoder is run in eval mode (training flags restored)."""
    layout: Layout = dataset.layout
    shared: torch.Tensor | None = None
    if part is not None:
        if part not in layout.parts:
            raise ConfigError(f"layout {layout.name!r} has no body part {part!r}; parts: {', '.join(PART_NAMES)}")
        shared = torch.tensor(sorted(layout.parts[part]), dtype=torch.int64)
        if shared.numel() >= layout.num_joints:
            raise ConfigError(f"body part {part!r} holds every joint of {layout.name!r}")
    model = unwrap_module(enc.module)
    flags = [(m, m.training) for m in model.modules()]
    feats: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    indices: list[np.ndarray] = []
    try:
        model.eval()
        with torch.inference_mode():
            for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=torch.Generator()):
                idx = torch.as_tensor(batch["index"]).reshape(-1)
                x = to_stream(batch["x"].to(device), enc.stream, layout)
                if shared is not None:
                    dropped: torch.Tensor | None = shared
                elif k > 0:
                    dropped = torch.from_numpy(missing_joint_sets(idx.numpy(), layout.num_joints, k, seed=seed))
                else:
                    dropped = None
                out = encode_missing(model, x, dropped, mode)
                feats.append(out.float().cpu().numpy())
                labels.append(torch.as_tensor(batch["label"]).reshape(-1).numpy())
                indices.append(idx.numpy())
    finally:
        for m, training in flags:
            m.training = training
    return np.concatenate(feats), np.concatenate(labels).astype(np.int64), np.concatenate(indices).astype(np.int64)


# -------------------------------------------------------------------------------------------- protocol


def _int_list(ctx: EvalContext, key: str, default: Sequence[int]) -> list[int]:
    if key not in ctx.options:
        return list(default)
    try:
        values = [int(v) for v in ctx.options[key].split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"option {key}={ctx.options[key]!r}: expected comma-separated integers") from None
    return values


def _names(ctx: EvalContext, key: str, default: Sequence[str], allowed: Sequence[str]) -> list[str]:
    raw = ctx.options.get(key)
    if raw is None:
        return list(default)
    if raw.strip().lower() == "none":
        return []
    if raw.strip().lower() == "all":
        return list(allowed)
    names = [v.strip() for v in raw.split(",") if v.strip()]
    for name in names:
        if name not in allowed:
            raise ConfigError(f"option {key}: unknown {name!r}; choose from {', '.join(allowed)}")
    return names


def _row(mode: str, setting: str, missing: int | str, joints: int, top: tuple[float, float]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "mode": mode,
        "setting": setting,
        "missing": missing,
        "joints_missing": joints,
        "top1": top[0],
        "top5": top[1],
    }
    if isinstance(missing, str):
        row["part"] = missing
    return row


def run_robustness(ctx: EvalContext) -> dict[str, Any]:
    """Linear-probe accuracy of ``ctx.encoder`` with missing joints (see the module docstring).

    Writes ``ctx.out_dir/logits.npy`` / ``labels.npy`` (the ``k = 0`` test logits); the plot of accuracy
    against missing joints is drawn from ``rows`` (:func:`plot_robustness`). CPU cost: one test-view feature
    pass over the test part per (mode, missing set), plus one over the training part per (mode, missing set)
    for ``train_test``.
    """
    check_options(ctx, ROBUSTNESS_OPTIONS, "robustness")
    start = time.perf_counter()
    enc = ctx.encoder
    refuse_raw_input(enc, "robustness")
    model = unwrap_module(enc.module)
    kind = "stgcn" if isinstance(model, STGCN) else "transformer" if isinstance(model, SkeletonTransformer) else None
    if kind is None:
        raise ConfigError(f"robustness: no missing-joint modes for a {type(model).__name__} encoder")
    default_modes = ("graph", "zero") if kind == "stgcn" else ("token", "zero")
    modes = _names(ctx, "modes", default_modes, default_modes)
    settings = _names(ctx, "settings", SETTINGS, SETTINGS)
    ks = _int_list(ctx, "ks", DEFAULT_KS)
    recipe = linear_recipe(ctx, batch_size_key="probe_batch_size")
    batch_size = option(ctx, "batch_size", 128, int)
    test_ds = make_eval_dataset(ctx, ctx.test_part, train=False)
    layout = test_ds.layout
    parts = _names(ctx, "parts", PART_NAMES, PART_NAMES)
    for k in ks:
        if not 0 <= k < layout.num_joints:
            raise ConfigError(f"ks: cannot drop {k} of the {layout.num_joints} joints of {layout.name!r}")
    if not modes or not settings:
        raise ConfigError("robustness: give at least one mode and one setting")
    train_ds = make_eval_dataset(ctx, ctx.train_part, train=False) if "train_test" in settings else None

    # full skeletons: the cached features run_linear uses, and the plain probe (the k = 0 rows)
    train_f, train_y, _ = encoder_features(ctx, ctx.train_part, batch_size=batch_size)
    test_f, test_y, test_idx = encoder_features(ctx, ctx.test_part, batch_size=batch_size)
    num_classes = ctx.store.num_classes

    def fit(tr_f: np.ndarray, tr_y: np.ndarray, te_f: np.ndarray) -> np.ndarray:
        labels = np.concatenate([test_y] * (len(te_f) // len(test_y)))
        result = fit_linear(
            tr_f, tr_y, te_f, labels, num_classes=num_classes, recipe=recipe, seed=ctx.seed, device=ctx.device
        )
        return result.logits

    conditions: list[tuple[str | int, int, str | None]] = []  # (missing label, k, part)
    conditions += [(k, k, None) for k in ks if k > 0]
    conditions += [(p, len(layout.parts[p]), p) for p in parts]
    extract = dict(seed=ctx.seed, batch_size=batch_size, device=ctx.device)
    rows: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    # the full-skeleton probe, tested on every missing-joint test set at once (its training never sees them)
    base_logits: np.ndarray | None = None
    for mode in modes:
        t0 = time.perf_counter()
        test_sets: list[np.ndarray] = []
        for _, k, part in conditions:
            f, y, idx = missing_features(enc, test_ds, mode=mode, k=k, part=part, **extract)
            if not (np.array_equal(idx, test_idx) and np.array_equal(y, test_y)):
                raise RuntimeError("missing-joint features are out of order with the cached features")
            test_sets.append(f)
        logits = fit(train_f, train_y, np.concatenate([test_f, *test_sets]))
        chunks = np.split(logits, len(test_sets) + 1)
        if base_logits is None:
            base_logits = chunks[0]
        top0 = top_accuracy(chunks[0], test_y)
        for setting in settings:
            if 0 in ks:
                rows.append(_row(mode, setting, 0, 0, top0))
            for (label, k, _part), chunk, feats in zip(conditions, chunks[1:], test_sets, strict=True):
                if setting == "test":
                    top = top_accuracy(chunk, test_y)
                else:
                    assert train_ds is not None
                    tr_f, tr_y, _ = missing_features(enc, train_ds, mode=mode, k=k, part=_part, **extract)
                    top = top_accuracy(fit(tr_f, tr_y, feats), test_y)
                rows.append(_row(mode, setting, label, k, top))
        seconds[mode] = time.perf_counter() - t0
    assert base_logits is not None
    report = base_report(
        ctx,
        "robustness",
        {
            "modes": modes,
            "settings": settings,
            "ks": ks,
            "parts": {p: list(layout.parts[p]) for p in parts},
            "missing_sets": "per sample: first k of a permutation from default_rng([seed, TAG, store index])",
            "probe": recipe.name,
            "probe_epochs": recipe.epochs,
            "probe_lr": recipe.lr,
            "probe_batch_size": recipe.batch_size,
            "feature_batch_size": batch_size,
            "feature_cache": str(feature_cache_dir(ctx)),
            "seconds_per_mode": seconds,
        },
    )
    report.update(accuracy_report(base_logits, test_y, class_names=ctx.store.class_names))
    report["rows"] = rows
    report["selection"] = SELECTION_FINAL
    out = Path(ctx.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "logits.npy", base_logits.astype(np.float32))
    np.save(out / "labels.npy", test_y.astype(np.int64))
    report["artefacts"] = ["logits.npy", "labels.npy"]
    report["seconds"] = time.perf_counter() - start
    return report


def plot_robustness(rows: list[dict[str, Any]], path: str | Path, *, title: str = "") -> Path | None:
    """Top-1 against the number of random joints missing, one line per (mode, setting); body-part rows as
    markers at their joint count. Written with matplotlib's Agg backend; ``None`` when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is an optional dependency
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    keys = sorted({(r["mode"], r["setting"]) for r in rows})
    for i, (mode, setting) in enumerate(keys):
        color = f"C{i}"
        mine = [r for r in rows if (r["mode"], r["setting"]) == (mode, setting)]
        pts = sorted((r["missing"], r["top1"]) for r in mine if isinstance(r["missing"], int))
        if pts:
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "o-", color=color, label=f"{mode} / {setting}")
        parts = [r for r in mine if isinstance(r["missing"], str)]
        for r in parts:
            ax.plot(r["joints_missing"], 100 * r["top1"], "x", color=color)
            ax.annotate(r["missing"], (r["joints_missing"], 100 * r["top1"]), fontsize=6, color=color)
    ax.set_xlabel("missing joints (x: a whole body part)")
    ax.set_ylabel("top-1 (%)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
