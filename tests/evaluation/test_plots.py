"""Plots are written headless; the 2-D projections are right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from skelssl.evaluation.plots import pca_2d, plot_accuracy_vs_missing, plot_confusion, plot_embeddings, tsne_2d

PNG = b"\x89PNG\r\n\x1a\n"


def test_pca_matches_the_covariance_eigenvectors() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) @ np.diag([5.0, 3.0, 1.0, 0.5, 0.2, 0.1]) + 7
    xy = pca_2d(x)
    centred = x - x.mean(0)
    vals, vecs = np.linalg.eigh(np.cov(centred.T))
    top = vecs[:, np.argsort(vals)[::-1][:2]]
    ref = centred @ top
    for j in range(2):  # equal up to the sign of each component
        assert np.allclose(np.abs(xy[:, j]), np.abs(ref[:, j]), atol=1e-8)
    assert np.var(xy[:, 0]) >= np.var(xy[:, 1])


def test_tsne_separates_clusters() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(30, 10)), rng.normal(size=(30, 10)) + 8])
    y = tsne_2d(x, perplexity=10, iterations=300, seed=0)
    a, b = y[:30], y[30:]
    spread = max(a.std(0).max(), b.std(0).max())
    assert np.linalg.norm(a.mean(0) - b.mean(0)) > 3 * spread
    assert np.array_equal(y, tsne_2d(x, perplexity=10, iterations=300, seed=0))


def test_plots_are_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    plot_confusion(rng.integers(0, 5, (4, 4)), tmp_path / "c.png", class_names=list("abcd"))
    plot_confusion(rng.integers(0, 5, (70, 70)), tmp_path / "big.png")
    plot_embeddings(rng.normal(size=(50, 5)), np.arange(50) % 4, tmp_path / "e.png", class_names=list("abcd"))
    plot_embeddings(rng.normal(size=(50, 5)), np.arange(50) % 4, tmp_path / "t.png", method="tsne")
    rows = [{"missing": k, "where": w, "top1": 0.5} for k in (0, 3) for w in ("test", "train+test")]
    plot_accuracy_vs_missing(rows, tmp_path / "m.png")
    h4 = [{"mode": "zero", "setting": "test", "missing": "left_arm", "joints_missing": 6, "top1": 0.4}]
    assert plot_accuracy_vs_missing(h4, tmp_path / "p.png") is not None
    for name in ("c", "big", "e", "t", "m", "p"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG
    assert plot_accuracy_vs_missing([{"k": 1, "top1": 0.3}], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    with pytest.raises(ValueError, match="pca"):
        plot_embeddings(np.zeros((3, 2)), np.zeros(3), tmp_path / "x.png", method="umap")
