"""Cosine k-nearest-neighbour classification of frozen features (the MAMP-family kNN protocol, §3.4).

Features are L2-normalised (a zero vector stays zero: similarity 0 to everything); the similarity of a
test and a training sample is their dot product, computed as a torch matmul over chunks of test rows, so
memory stays at about ``chunk × N_train × 4`` bytes (≈ 0.8 GB for 4096 × 50k) whatever the test size.

Neighbours are ranked by similarity, highest first, equal similarities by smaller training index (a
total order, so "the k nearest" is always well defined, also when similarities tie at the k-th place).

Voting among the k nearest:

- ``temperature=None`` (default): majority vote. With ``tie_break="similarity"`` (default) a tie in the
  vote count goes to the tied class whose neighbours have the larger summed similarity, then to the
  smallest label; with ``tie_break="label"`` straight to the smallest label (what sklearn's
  ``KNeighborsClassifier(weights="uniform")``, used by the STARS/MAMP ``knn_eval.py``, does).
- ``temperature=T``: each neighbour votes ``exp(sim / T)`` (InstDisc / DINO weighted kNN; T = 0.07 there);
  the class with the largest summed weight wins, ties to the smallest label.

"Smallest label" means in the order of the label values (any integers are accepted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from skelssl.errors import ConfigError
from skelssl.evaluation.features import extract_features
from skelssl.skeleton.layouts import Layout

__all__ = ["TieBreak", "knn_accuracy", "knn_classify", "knn_monitor", "nearest_neighbors"]

TieBreak = Literal["similarity", "label"]
ArrayLike = np.ndarray | torch.Tensor


def _features(x: ArrayLike, name: str, device: torch.device) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {tuple(t.shape)}")
    t = t.to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} holds NaN or infinite values")
    return F.normalize(t, dim=1)


def _labels(y: ArrayLike, n: int, name: str) -> np.ndarray:
    a = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must be ({n},) to match the features, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {a.dtype}")
    return a


def _check_ks(ks: int | Sequence[int], n_train: int) -> list[int]:
    values = [ks] if isinstance(ks, (int, np.integer)) else list(ks)
    if not values:
        raise ConfigError("ks must name at least one k")
    for k in values:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"every k must be a positive integer, got {k!r}")
    if max(values) > n_train:
        raise ConfigError(
            f"k = {max(values)} is larger than the training set ({n_train} samples); "
            f"use k <= {n_train} or more training data"
        )
    return sorted({int(k) for k in values})


def _device(device: str | torch.device | None, *arrays: object) -> torch.device:
    if device is not None:
        return torch.device(device)
    for a in arrays:
        if isinstance(a, torch.Tensor):
            return a.device
    return torch.device("cpu")


def _nearest(sims: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest per row of ``sims`` ``(B, N)``: ``(similarities, indices)`` ``(B, k)`` ordered by
    similarity descending, then by index ascending (exact, also for ties at the k-th place)."""
    n = sims.shape[1]
    vals, idx = sims.topk(min(k + 1, n), dim=1)
    # topk does not say which of several equal values it keeps: where the (k+1)-th value equals the k-th,
    # a tie crosses the boundary, and those rows are selected again by a stable sort (ties in index order).
    straddle = vals[:, k - 1] == vals[:, k] if k < n else torch.zeros(len(vals), dtype=torch.bool, device=vals.device)
    vals, idx = vals[:, :k], idx[:, :k]
    if bool(straddle.any()):
        rows = straddle.nonzero().squeeze(1)
        sv, si = torch.sort(sims.index_select(0, rows), dim=1, descending=True, stable=True)
        vals[rows], idx[rows] = sv[:, :k], si[:, :k]
    order = idx.argsort(dim=1)
    vals, idx = vals.gather(1, order), idx.gather(1, order)
    order = vals.argsort(dim=1, descending=True, stable=True)
    return vals.gather(1, order), idx.gather(1, order)


def nearest_neighbors(
    train_feats: ArrayLike,
    test_feats: ArrayLike,
    k: int,
    *,
    chunk: int = 4096,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest training samples of every test sample by cosine similarity.

    Returns ``(similarities float32 (N_test, k), indices int64 (N_test, k))``, each row ordered by
    similarity (descending) then training index (ascending).
    """
    dev = _device(device, train_feats, test_feats)
    train = _features(train_feats, "train_feats", dev)
    test = _features(test_feats, "test_feats", dev)
    _check_dims(train, test)
    (k,) = _check_ks(k, train.shape[0])
    if chunk < 1:
        raise ConfigError(f"chunk must be at least 1, got {chunk}")
    sims_out = np.empty((test.shape[0], k), dtype=np.float32)
    idx_out = np.empty((test.shape[0], k), dtype=np.int64)
    for start in range(0, test.shape[0], chunk):
        vals, idx = _nearest(test[start : start + chunk] @ train.T, k)
        sims_out[start : start + len(vals)] = vals.cpu().numpy()
        idx_out[start : start + len(vals)] = idx.cpu().numpy()
    return sims_out, idx_out


def _check_dims(train: torch.Tensor, test: torch.Tensor) -> None:
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train and test features differ in dimension: {train.shape[1]} vs {test.shape[1]}")


def _vote(
    sims: torch.Tensor, codes: torch.Tensor, num_classes: int, temperature: float | None, tie_break: TieBreak
) -> torch.Tensor:
    """Class codes ``(B,)`` voted by neighbours with similarities ``sims`` and class codes ``codes`` ``(B, k)``."""
    shape = (sims.shape[0], num_classes)
    sims64 = sims.double()
    if temperature is None:
        score = torch.zeros(shape, dtype=torch.float64, device=sims.device).scatter_add_(
            1, codes, torch.ones_like(sims64)
        )
    else:
        score = torch.zeros(shape, dtype=torch.float64, device=sims.device).scatter_add_(
            1, codes, torch.exp(sims64 / temperature)
        )
    tied = score == score.amax(dim=1, keepdim=True)
    if temperature is None and tie_break == "similarity":
        summed = torch.zeros(shape, dtype=torch.float64, device=sims.device).scatter_add_(1, codes, sims64)
        summed = summed.masked_fill(~tied, float("-inf"))
        tied = summed == summed.amax(dim=1, keepdim=True)
    return tied.to(torch.int32).argmax(dim=1)  # the first maximum: the smallest tied class


def knn_classify(
    train_feats: ArrayLike,
    train_labels: ArrayLike,
    test_feats: ArrayLike,
    *,
    ks: int | Sequence[int] = (1, 5, 10, 20),
    temperature: float | None = None,
    tie_break: TieBreak = "similarity",
    chunk: int = 4096,
    device: str | torch.device | None = None,
) -> dict[int, np.ndarray]:
    """Cosine-kNN predictions of the test samples for every ``k`` in ``ks``: ``{k: labels (N_test,)}``.

    ``train_feats`` ``(N_train, D)``, ``test_feats`` ``(N_test, D)`` (numpy or torch), ``train_labels``
    integers ``(N_train,)``. Voting and tie-breaking as the module docstring says. One similarity pass
    serves all ``k``. Runs on ``device`` (default: the features' device if they are tensors, else CPU).
    Raises ``ConfigError`` when a ``k`` exceeds the training set.
    """
    if temperature is not None and not temperature > 0:
        raise ConfigError(f"temperature must be positive, got {temperature}")
    if tie_break not in ("similarity", "label"):
        raise ConfigError(f"tie_break must be 'similarity' or 'label', got {tie_break!r}")
    if chunk < 1:
        raise ConfigError(f"chunk must be at least 1, got {chunk}")
    dev = _device(device, train_feats, test_feats)
    train = _features(train_feats, "train_feats", dev)
    test = _features(test_feats, "test_feats", dev)
    _check_dims(train, test)
    labels = _labels(train_labels, train.shape[0], "train_labels")
    ks = _check_ks(ks, train.shape[0])
    classes, codes = np.unique(labels, return_inverse=True)
    codes_t = torch.from_numpy(codes.astype(np.int64)).to(dev)
    preds = {k: np.empty(test.shape[0], dtype=labels.dtype) for k in ks}
    kmax = ks[-1]
    for start in range(0, test.shape[0], chunk):
        vals, idx = _nearest(test[start : start + chunk] @ train.T, kmax)
        neighbours = codes_t[idx]
        for k in ks:
            voted = _vote(vals[:, :k], neighbours[:, :k], len(classes), temperature, tie_break)
            preds[k][start : start + len(vals)] = classes[voted.cpu().numpy()]
    return preds


def knn_accuracy(
    train_feats: ArrayLike,
    train_labels: ArrayLike,
    test_feats: ArrayLike,
    test_labels: ArrayLike,
    *,
    ks: int | Sequence[int] = (1, 5, 10, 20),
    temperature: float | None = None,
    tie_break: TieBreak = "similarity",
    chunk: int = 4096,
    device: str | torch.device | None = None,
) -> dict[int, float]:
    """Top-1 accuracy (a fraction in [0, 1]) of :func:`knn_classify` for every ``k``: ``{k: accuracy}``."""
    n_test = test_feats.shape[0]
    truth = _labels(test_labels, n_test, "test_labels")
    if n_test == 0:
        raise ConfigError("no test samples: kNN accuracy is undefined")
    preds = knn_classify(
        train_feats,
        train_labels,
        test_feats,
        ks=ks,
        temperature=temperature,
        tie_break=tie_break,
        chunk=chunk,
        device=device,
    )
    return {k: float(np.mean(p == truth)) for k, p in preds.items()}


def knn_monitor(
    encoder: nn.Module,
    train_dataset: Dataset,
    test_dataset: Dataset,
    *,
    ks: int | Sequence[int] = 20,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    num_workers: int = 0,
    stream: str = "joint",
    layout: Layout | str | None = None,
    amp_dtype: torch.dtype | None = None,
    temperature: float | None = None,
) -> dict[str, float]:
    """kNN top-1 of ``encoder``'s features, train → test: ``{"knn_top1@k": accuracy in [0, 1], …}``.

    For the pretraining loop: features are extracted with :func:`extract_features` (eval mode, inference
    mode, the encoder's training flags and BatchNorm statistics untouched), so the call can sit between
    training steps. Give both datasets test-time views (``ClipConfig(..., train=False)``). Under DDP call it
    on every rank (each computes the same numbers, no collective runs) or on rank 0 only.
    """
    kwargs = {
        "batch_size": batch_size,
        "device": device,
        "num_workers": num_workers,
        "stream": stream,
        "layout": layout,
        "amp_dtype": amp_dtype,
    }
    train_feats, train_labels, _ = extract_features(encoder, train_dataset, **kwargs)  # type: ignore[arg-type]
    test_feats, test_labels, _ = extract_features(encoder, test_dataset, **kwargs)  # type: ignore[arg-type]
    acc = knn_accuracy(
        train_feats, train_labels, test_feats, test_labels, ks=ks, temperature=temperature, device=device
    )
    return {f"knn_top1@{k}": value for k, value in acc.items()}
