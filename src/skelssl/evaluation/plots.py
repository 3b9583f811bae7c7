"""Evaluation plots (PNG, headless): confusion matrix, 2-D embeddings, accuracy against missing joints.

matplotlib is imported lazily with the Agg backend (no display needed). :func:`pca_2d` and :func:`tsne_2d`
are the projections used by :func:`plot_embeddings` (numpy only: no sklearn).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["pca_2d", "plot_accuracy_vs_missing", "plot_confusion", "plot_embeddings", "tsne_2d"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_confusion(
    confusion: np.ndarray | Sequence[Sequence[int]],
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    title: str = "",
    normalize: bool = True,
) -> Path:
    """The confusion matrix ``(K, K)`` (rows: true class, columns: predicted) as an image; with
    ``normalize`` each row is divided by its count (recall per class on the diagonal)."""
    plt = _pyplot()
    cm = np.asarray(confusion, dtype=np.float64)
    k = cm.shape[0]
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    size = min(4 + 0.35 * k, 24)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if class_names is not None and k <= 60:
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(class_names, rotation=90, fontsize=7)
        ax.set_yticklabels(class_names, fontsize=7)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    colour = "white" if shown[i, j] > 0.5 * (shown.max() or 1) else "black"
                    text = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=6, color=colour)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix" + (" (row-normalised)" if normalize else ""))
    return _save(fig, path)


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components of ``x`` ``(N, D)`` → ``(N, 2)`` (centred; SVD, sign fixed so each
    component's largest-magnitude loading is positive)."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    if x.shape[0] < 2:
        return np.zeros((x.shape[0], 2))
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:2]
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1, signs)[:, None]
    out = x @ comps.T
    if out.shape[1] < 2:
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out


def tsne_2d(
    x: np.ndarray, *, perplexity: float = 30.0, iterations: int = 500, seed: int = 0, pca_dims: int = 50
) -> np.ndarray:
    """A plain exact t-SNE (van der Maaten & Hinton 2008) of ``x`` ``(N, D)`` → ``(N, 2)``, numpy only.

    O(N²) memory and time: meant for a few thousand points. PCA to ``pca_dims`` first; binary search of each
    point's bandwidth to ``perplexity``; early exaggeration 12 for the first quarter of the iterations;
    gradient descent with momentum and gains; the start drawn from ``np.random.default_rng(seed)``.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if n < 4:
        return pca_2d(x)
    x = x - x.mean(axis=0)
    if x.shape[1] > pca_dims:
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        x = x @ vt[:pca_dims].T
    d2 = np.maximum(np.sum(x**2, 1)[:, None] + np.sum(x**2, 1)[None, :] - 2 * x @ x.T, 0)
    target = np.log(min(perplexity, (n - 1) / 3))
    p = np.zeros((n, n))
    for i in range(n):
        lo, hi, beta = 0.0, np.inf, 1.0
        di = np.delete(d2[i], i)
        for _ in range(50):
            w = np.exp(-(di - di.min()) * beta)
            sw = w.sum()
            h = np.log(sw) + beta * np.sum((di - di.min()) * w) / sw
            if abs(h - target) < 1e-5:
                break
            if h > target:
                lo = beta
                beta = beta * 2 if hi == np.inf else (beta + hi) / 2
            else:
                hi = beta
                beta = (beta + lo) / 2
        p[i, np.arange(n) != i] = w / sw
    p = (p + p.T) / (2 * n)
    p = np.maximum(p, 1e-12)
    rng = np.random.default_rng(seed)
    y = rng.normal(0, 1e-4, (n, 2))
    velocity = np.zeros_like(y)
    gains = np.ones_like(y)
    for it in range(iterations):
        exaggeration = 12.0 if it < iterations // 4 else 1.0
        sq = np.sum(y**2, 1)
        num = 1.0 / (1.0 + sq[:, None] + sq[None, :] - 2 * y @ y.T)
        np.fill_diagonal(num, 0)
        q = np.maximum(num / num.sum(), 1e-12)
        pq = (exaggeration * p - q) * num
        grad = 4 * (np.diag(pq.sum(1)) - pq) @ y
        momentum = 0.5 if it < 250 else 0.8
        gains = np.where(np.sign(grad) != np.sign(velocity), gains + 0.2, gains * 0.8).clip(0.01)
        velocity = momentum * velocity - 200.0 * gains * grad
        y = y + velocity
        y = y - y.mean(axis=0)
    return y


def plot_embeddings(
    features: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    method: str = "pca",
    title: str = "",
    seed: int = 0,
    max_points: int = 5000,
) -> Path:
    """Features ``(N, D)`` projected to 2-D (``method="pca"`` or ``"tsne"``) and coloured by class. More than
    ``max_points`` points are subsampled (evenly, deterministic)."""
    plt = _pyplot()
    features = np.asarray(features)
    labels = np.asarray(labels).astype(np.int64)
    if len(features) > max_points:
        keep = np.linspace(0, len(features) - 1, max_points).round().astype(np.int64)
        features, labels = features[keep], labels[keep]
    if method == "pca":
        xy = pca_2d(features)
    elif method == "tsne":
        xy = tsne_2d(features, seed=seed)
    else:
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    fig, ax = plt.subplots(figsize=(7, 6))
    classes = np.unique(labels)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "nipy_spectral")
    for j, c in enumerate(classes):
        sel = labels == c
        colour = cmap(j % cmap.N) if len(classes) <= 20 else cmap(j / max(len(classes) - 1, 1))
        name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
        ax.scatter(xy[sel, 0], xy[sel, 1], s=8, alpha=0.75, color=colour, label=name, linewidths=0)
    if len(classes) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="best", frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"embeddings ({method.upper()}, {len(features)} sequences)")
    return _save(fig, path)


def _series_key(row: dict[str, Any]) -> str:
    skip = ("part", "parts", "missing")
    parts = [f"{k}={v}" for k, v in sorted(row.items()) if isinstance(v, str) and k not in skip]
    return ", ".join(parts) or "accuracy"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _missing_point(row: dict[str, Any]) -> tuple[float, str | None] | None:
    """``(joints missing, body-part name or None)`` of a robustness row, or ``None`` if it has none."""
    part = row.get("part") or row.get("parts")
    if isinstance(row.get("missing"), str):  # {"missing": "left_arm", "joints_missing": 6}
        part = part or row["missing"]
    count = row.get("joints_missing", row.get("missing"))
    if not _is_number(count) or not _is_number(row.get("top1")):
        return None
    return float(count), (str(part) if part else None)


def plot_accuracy_vs_missing(rows: Sequence[dict[str, Any]], path: str | Path, *, title: str = "") -> Path | None:
    """Top-1 against the number of missing joints, one line per setting.

    A row qualifies with a numeric ``top1`` and a numeric ``joints_missing`` or ``missing``; body-part rows
    (``missing`` a part name, or a ``part`` key) are drawn as labelled markers. Lines are named by the row's
    other string-valued keys (e.g. ``mode=zero, setting=test``). Returns ``None`` when no row qualifies.
    """
    usable = [(r, p) for r in rows if (p := _missing_point(r)) is not None]
    if not usable:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[tuple[float, float]]] = {}
    parts: dict[str, list[tuple[float, float, str]]] = {}
    for r, (count, part) in usable:
        key = _series_key(r)
        if part is not None:
            parts.setdefault(key, []).append((count, 100 * float(r["top1"]), part))
        else:
            series.setdefault(key, []).append((count, 100 * float(r["top1"])))
    for key, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key)
    for key, pts in sorted(parts.items()):
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker="x", label=f"body parts: {key}")
        for x, y, name in pts:
            ax.annotate(name, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("missing joints")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(title or "accuracy against missing joints")
    return _save(fig, path)
