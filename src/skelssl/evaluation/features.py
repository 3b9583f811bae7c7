"""Frozen-encoder features of a dataset, and a small on-disk cache of them.

:func:`extract_features` runs any encoder with ``forward(x (N, M, T, V, C)) -> (N, D)`` over a dataset
whose items are ``{"x": (M, T, V, C), "label": int, "index": int}`` (as
:class:`~skelssl.data.clips.ClipDataset` serves them), in dataset order, with the encoder in eval mode
under ``torch.inference_mode()``: BatchNorm uses (and never updates) its running statistics and dropout
is off. Every submodule's training flag is restored afterwards, so it can run inside a training loop
(the kNN monitor) without disturbing it.

:func:`cached_features` keeps the result in a folder (``features.npy``, ``labels.npy``,
``indices.npy``, ``meta.json``) and reuses it while the key (encoder weights, dataset identity, stream,
AMP dtype and the caller's ``key_parts``) is unchanged; see :func:`cache_key`.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from skelssl.data.clips import ClipDataset
from skelssl.data.streams import STREAMS, to_stream
from skelssl.engine.checkpoint import atomic_write, unwrap_module
from skelssl.errors import ConfigError
from skelssl.skeleton.layouts import Layout
from skelssl.utils import closest

__all__ = [
    "CACHE_FORMAT",
    "cache_key",
    "cached_features",
    "dataset_identity",
    "extract_features",
    "load_cached_features",
    "state_dict_digest",
]

CACHE_FORMAT = "skelssl-features"
CACHE_VERSION = 1
_ARRAYS = ("features", "labels", "indices")

Features = tuple[np.ndarray, np.ndarray, np.ndarray]


def _check_stream(stream: str) -> None:
    if stream not in STREAMS:
        hint = closest(str(stream), STREAMS)
        raise ConfigError(
            f"unknown stream {stream!r}"
            + (f" (did you mean {hint!r}?)" if hint else "")
            + f"; known: {', '.join(STREAMS)}"
        )


def _resolve_layout(layout: Layout | str | None, dataset: Any, encoder: nn.Module, stream: str) -> Layout | str | None:
    """The layout for the bone stream: given, else the dataset's, else the encoder's."""
    if layout is not None or stream != "bone":
        return layout
    for owner in (dataset, encoder):
        found = getattr(owner, "layout", None)
        if isinstance(found, (Layout, str)):
            return found
    raise ConfigError("the bone stream needs a joint layout: pass layout=… (neither dataset nor encoder names one)")


def _unpack(batch: Any, start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, labels, indices)`` of a collated batch; indices default to dataset positions."""
    if isinstance(batch, Mapping):
        x, labels = batch["x"], batch["label"]
        indices = batch.get("index")
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
        x, labels, indices = batch[0], batch[1], None
    else:
        raise TypeError("dataset items must be {'x': (M, T, V, C), 'label': int[, 'index': int]} or (x, label)")
    n = x.shape[0]
    if indices is None:
        indices = torch.arange(start, start + n)
    return x, torch.as_tensor(labels).reshape(n), torch.as_tensor(indices).reshape(n)


def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    stream: str = "joint",
    layout: Layout | str | None = None,
    amp_dtype: torch.dtype | None = None,
) -> Features:
    """Features of every item of ``dataset``, in dataset order.

    Returns ``(features float32 (N, D), labels int64 (N,), indices int64 (N,))`` numpy arrays, where
    ``indices`` are the items' ``"index"`` values (store indices for a ``ClipDataset``; dataset positions
    when items carry none). Each batch ``x`` ``(B, M, T, V, C)`` is moved to ``device``, converted to
    ``stream`` (``joint``, ``bone`` — with ``layout``, by default the dataset's — or ``motion``), and
    encoded under ``torch.inference_mode()`` (and ``torch.autocast`` when ``amp_dtype`` is given).

    The encoder (DDP / ``torch.compile`` wrappers are looked through, so no collective runs) is put in
    eval mode for the pass and every submodule's training flag is restored afterwards; its parameters
    and buffers (BatchNorm running statistics included) are not changed. The encoder must already be on
    ``device``. Items are loaded in order by a plain ``DataLoader`` (``num_workers`` workers); a
    ``ClipDataset`` with a test-time config (``train=False``) gives the same clips every time.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    _check_stream(stream)
    device = torch.device(device)
    model = unwrap_module(encoder)
    layout = _resolve_layout(layout, dataset, model, stream)
    # an own generator: a DataLoader otherwise draws its workers' base seed from the global RNG, so merely
    # extracting features (the kNN monitor) would shift the dropout stream of the training it runs inside
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        drop_last=False,
        generator=torch.Generator(),
    )
    n = len(dataset)  # type: ignore[arg-type]
    feats: np.ndarray | None = None
    labels = np.empty(n, dtype=np.int64)
    indices = np.empty(n, dtype=np.int64)
    flags = [(module, module.training) for module in model.modules()]
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    start = 0
    try:
        model.eval()
        with torch.inference_mode(), autocast:
            for batch in loader:
                x, y, idx = _unpack(batch, start)
                x = to_stream(x.to(device, non_blocking=True), stream, layout)  # type: ignore[arg-type]
                out = model(x)
                if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
                    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                    raise ValueError(f"the encoder must return (N, D) features for an (N, …) batch; got {shape}")
                if feats is None:
                    feats = np.empty((n, out.shape[1]), dtype=np.float32)
                stop = start + x.shape[0]
                feats[start:stop] = out.float().cpu().numpy()
                labels[start:stop] = y.numpy()
                indices[start:stop] = idx.numpy()
                start = stop
    finally:
        for module, training in flags:
            module.training = training
    if start != n:
        raise ValueError(f"the dataset yielded {start} items but has length {n}")
    if feats is None:
        feats = np.empty((0, int(getattr(model, "feature_dim", 0))), dtype=np.float32)
    return feats, labels, indices


def calibrate_batchnorm(
    encoder: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    stream: str = "joint",
    layout: Layout | str | None = None,
) -> int:
    """Re-estimate every BatchNorm's running statistics of ``encoder`` on ``dataset`` (no labels, no gradients).

    A freshly initialised network evaluated in eval mode uses BatchNorm's initial statistics (mean 0, variance
    1), which do not normalise anything: a random ST-GCN then maps every clip to nearly the same feature, a
    baseline far weaker than a random network actually is. The statistics are reset, then accumulated as exact
    averages over one pass (``momentum=None``) with only the BatchNorm layers in training mode (dropout stays
    off). Returns the number of BatchNorm layers (0: nothing to do, the encoder is untouched).
    """
    _check_stream(stream)
    model = unwrap_module(encoder)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    device = torch.device(device)
    layout = _resolve_layout(layout, dataset, model, stream)
    flags = [(module, module.training) for module in model.modules()]
    momenta = [m.momentum for m in norms]
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False, generator=torch.Generator())
        with torch.no_grad():
            for batch in loader:
                x, _, _ = _unpack(batch, 0)
                model(to_stream(x.to(device, non_blocking=True), stream, layout))  # type: ignore[arg-type]
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        for module, training in flags:
            module.training = training
    return len(norms)


# -------------------------------------------------------------------------------------------------- cache


def state_dict_digest(module: nn.Module) -> str:
    """sha256 of a module's state dict: every entry's name, dtype, shape and raw bytes, in key order."""
    digest = hashlib.sha256()
    state = unwrap_module(module).state_dict()
    for name in sorted(state):
        value = state[name]
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{t.dtype}{tuple(value.shape)}".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:  # extra state
            digest.update(repr(value).encode())
    return digest.hexdigest()


def _array_digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()


def dataset_identity(dataset: Dataset) -> dict[str, Any]:
    """What identifies a dataset's items for the cache.

    For a :class:`~skelssl.data.clips.ClipDataset`: the store's resolved path, its ``meta.json``
    ``input_checksum``, import options and format version, a digest of its index (names, lengths,
    labels), a digest of the selected indices, the clip config, and the epoch when the config draws
    random views. Another dataset may define ``cache_identity() -> dict``; otherwise only its type and
    length are known, and the caller's ``key_parts`` must identify it.
    """
    if isinstance(dataset, ClipDataset):
        store = dataset.store
        meta = store.meta
        digest = hashlib.sha256()
        for array in (store.names.astype(str), store.lengths, store.labels):
            digest.update(_array_digest(np.asarray(array)).encode())
        identity: dict[str, Any] = {
            "store": str(Path(store.path).resolve()),
            "input_checksum": meta.get("input_checksum"),
            "options": meta.get("options"),
            "store_version": meta.get("version"),
            "store_index": digest.hexdigest(),
            "indices": _array_digest(np.asarray(dataset.indices, dtype=np.int64)),
            "num_items": len(dataset),
            "clip": dataset.config.to_dict(),
        }
        if not dataset.config.deterministic:
            identity["epoch"] = dataset.epoch
        return identity
    custom = getattr(dataset, "cache_identity", None)
    if callable(custom):
        return {"type": type(dataset).__qualname__, **custom()}
    return {"type": type(dataset).__qualname__, "num_items": len(dataset)}  # type: ignore[arg-type]


def _encoder_identity(encoder: nn.Module) -> dict[str, Any]:
    from skelssl.models.registry import encoder_spec

    model = unwrap_module(encoder)
    try:
        spec: Any = encoder_spec(model)
    except ConfigError:
        spec = type(model).__qualname__
    return {"spec": spec, "state_dict": state_dict_digest(model)}


def cache_key(
    encoder: nn.Module,
    dataset: Dataset,
    *,
    key_parts: Mapping[str, Any] | None = None,
    stream: str = "joint",
    amp_dtype: torch.dtype | None = None,
) -> tuple[str, dict[str, Any]]:
    """``(sha256 hex, the JSON-able parts it hashes)`` for :func:`cached_features`.

    The parts: the encoder (registered spec or class name, and :func:`state_dict_digest`), the dataset
    (:func:`dataset_identity`), the stream, the AMP dtype, and ``key_parts`` (anything else that changes
    the features, e.g. a preset name; must be JSON-serialisable). The batch size and the device are not
    part of it: they change features only at rounding level.
    """
    parts = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "encoder": _encoder_identity(encoder),
        "dataset": dataset_identity(dataset),
        "stream": stream,
        "amp_dtype": None if amp_dtype is None else str(amp_dtype),
        "extra": dict(key_parts or {}),
    }
    try:
        blob = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    except TypeError as exc:
        raise ConfigError(f"key_parts must be JSON-serialisable ({exc})") from None
    return hashlib.sha256(blob.encode()).hexdigest(), parts


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def load_cached_features(cache_dir: str | Path, key: str | None = None) -> Features | None:
    """The cached ``(features, labels, indices)`` in ``cache_dir`` if complete, intact and (when given)
    stored under ``key``; ``None`` otherwise (missing, other key, truncated or edited files)."""
    root = Path(cache_dir)
    try:
        meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT or meta.get("version") != CACHE_VERSION:
        return None
    if key is not None and meta.get("key") != key:
        return None
    arrays = []
    for name in _ARRAYS:
        try:
            data = (root / f"{name}.npy").read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != meta.get("sha256", {}).get(name):
            return None
        arrays.append(np.load(io.BytesIO(data), allow_pickle=False))
    feats, labels, indices = arrays
    n = meta.get("num_items")
    if feats.ndim != 2 or labels.shape != (n,) or indices.shape != (n,) or feats.shape[0] != n:
        return None
    return feats, labels, indices


def cached_features(
    encoder: nn.Module,
    dataset: Dataset,
    cache_dir: str | Path,
    *,
    key_parts: Mapping[str, Any] | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    stream: str = "joint",
    layout: Layout | str | None = None,
    amp_dtype: torch.dtype | None = None,
) -> Features:
    """:func:`extract_features`, reused from ``cache_dir`` while :func:`cache_key` is unchanged.

    ``cache_dir`` holds one entry: ``features.npy``, ``labels.npy``, ``indices.npy`` and ``meta.json``
    (the key, the parts it hashes, shapes and each file's sha256). On a key mismatch (other weights,
    indices, clip config, stream …) or a damaged entry the features are recomputed and the entry
    replaced. Writes are atomic: ``meta.json`` is removed first, each array is written to a temp file
    and renamed, and ``meta.json`` (the commit mark) comes last, so an interrupted write is never read
    back as valid. A dataset that is not a ``ClipDataset`` and has no ``cache_identity()`` must be
    identified by ``key_parts``.
    """
    _check_stream(stream)
    if not isinstance(dataset, ClipDataset) and not callable(getattr(dataset, "cache_identity", None)):
        if not key_parts:
            raise ConfigError(
                f"cannot tell when cached features of a {type(dataset).__name__} are stale: "
                "pass key_parts that identify its items (or give the dataset a cache_identity() method)"
            )
    key, parts = cache_key(encoder, dataset, key_parts=key_parts, stream=stream, amp_dtype=amp_dtype)
    root = Path(cache_dir)
    hit = load_cached_features(root, key)
    if hit is not None:
        return hit
    feats, labels, indices = extract_features(
        encoder,
        dataset,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        stream=stream,
        layout=layout,
        amp_dtype=amp_dtype,
    )
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta.json").unlink(missing_ok=True)
    sha = {}
    for name, array in zip(_ARRAYS, (feats, labels, indices), strict=True):
        data = _npy_bytes(array)
        sha[name] = hashlib.sha256(data).hexdigest()
        atomic_write(root / f"{name}.npy", lambda fh, data=data: fh.write(data))
    meta = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "key": key,
        "parts": parts,
        "num_items": int(feats.shape[0]),
        "feature_dim": int(feats.shape[1]),
        "sha256": sha,
    }
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    atomic_write(root / "meta.json", lambda fh: fh.write(text.encode()))
    return feats, labels, indices
