"""The encoder as a feature extractor (``skelssl embed``).

:func:`embed` computes frozen features (the encoder preset's test-time view, eval mode) of every sequence of
a store — or of one split part — or of a bring-your-own ``.npz`` in the ``generic`` importer's format
(:mod:`skelssl.data.importers.generic`: ``keypoints (total_frames, M, V, C)``, ``lengths (N,)``, optional
``labels``, ``names``, ``class_names``, ``layout`` …; ``labels`` may be left out here, the names file then
holds ``null`` labels). The ``.npz`` is imported into a temporary store first, so it is validated exactly as
``skelssl prepare generic`` would; sequences the importer rejects are reported and left out.

:func:`write_embeddings` writes ``features.npy`` ``(N, D)`` float32 and ``features.names.json`` beside it:
the names in row order, the labels (or ``null``), the class names, and what produced them.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skelssl.data.store import SkeletonStore
from skelssl.errors import BadInputError, ConfigError
from skelssl.evaluation.protocols import LoadedEncoder, dataset_for

__all__ = ["Embeddings", "embed", "embed_store", "names_path", "write_embeddings"]


@dataclass
class Embeddings:
    """Features of a set of sequences, with their names (and labels when known)."""

    features: np.ndarray  # (N, D) float32
    names: list[str]
    labels: list[int] | None
    class_names: list[str]
    source: dict[str, Any] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    seconds: float = 0.0


def embed_store(
    encoder: LoadedEncoder,
    store: SkeletonStore,
    *,
    split: str | None = None,
    part: str | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    labels_known: bool = True,
) -> Embeddings:
    """Features of ``store`` (every sequence, or ``split``/``part``), in store order."""
    from skelssl.evaluation.features import extract_features

    start = time.perf_counter()
    if (split is None) != (part is None):
        raise ConfigError("give both --split and --part, or neither (every sequence)")
    if split is not None and split not in store.splits:
        raise ConfigError(
            f"the store {store.path} has no split {split!r} (it has: {', '.join(store.splits) or 'none'})"
        )
    if split is not None and part not in store.split_parts(split):
        raise ConfigError(f"split {split!r} has no part {part!r} (it has: {', '.join(store.split_parts(split))})")
    dataset = dataset_for(encoder, store, train=False, split=split, part=part)
    feats, labels, indices = extract_features(
        encoder.module, dataset, batch_size=batch_size, device=device, stream=encoder.stream, layout=dataset.layout
    )
    names = [str(store.names[i]) for i in indices]
    return Embeddings(
        features=feats,
        names=names,
        labels=[int(v) for v in labels] if labels_known else None,
        class_names=list(store.class_names) if labels_known else [],
        source={"store": str(Path(store.path).resolve()), "split": split, "part": part},
        seconds=time.perf_counter() - start,
    )


def _npz_with_labels(path: Path, tmp: Path) -> tuple[Path, bool]:
    """``path`` itself when it has ``labels``; else a copy in ``tmp`` with zero labels (``False``: unknown)."""
    from skelssl.data.importers.generic import npz_array, npz_members

    members = npz_members(path)
    if "labels" in members:
        return path, True
    if "lengths" not in members:
        raise BadInputError(path, "missing member 'lengths' (see `skelssl prepare generic`'s format)")
    arrays = {key: np.asarray(npz_array(path, m)) for key, m in members.items()}
    arrays["labels"] = np.zeros(len(arrays["lengths"]), dtype=np.int64)
    arrays.pop("class_names", None)
    copy = tmp / "with-labels.npz"
    np.savez(copy, **arrays)
    return copy, False


def embed(
    encoder: LoadedEncoder,
    data: str | Path,
    *,
    split: str | None = None,
    part: str | None = None,
    device: str = "cpu",
    batch_size: int = 64,
) -> Embeddings:
    """Features of a store directory or of a generic ``.npz`` file (module docstring)."""
    data = Path(data)
    if data.is_dir():
        store = SkeletonStore.open(data)
        return embed_store(encoder, store, split=split, part=part, device=device, batch_size=batch_size)
    if data.suffix != ".npz":
        raise BadInputError(data, "expected a store directory (skelssl prepare) or a generic .npz file")
    if not data.is_file():
        raise BadInputError(data, "no such file")
    from skelssl.data.importers import get_importer_class
    from skelssl.data.prepare import prepare_store

    with tempfile.TemporaryDirectory(prefix="skelssl-embed-") as tmp:
        npz, labelled = _npz_with_labels(data, Path(tmp))
        importer = get_importer_class("generic")(npz)
        summary = prepare_store(importer, Path(tmp) / "store")
        store = SkeletonStore.open(summary.path)
        try:
            result = embed_store(
                encoder, store, split=split, part=part, device=device, batch_size=batch_size, labels_known=labelled
            )
        finally:
            store.close()
    result.source = {"npz": str(data.resolve()), "split": split, "part": part}
    result.rejected = [f"{r.path}: {r.reason}" for r in summary.rejected]
    return result


def names_path(features_path: str | Path) -> Path:
    """``features.npy`` → ``features.names.json``."""
    p = Path(features_path)
    return p.with_name((p.name[: -len(".npy")] if p.name.endswith(".npy") else p.name) + ".names.json")


def write_embeddings(out: str | Path, emb: Embeddings, encoder: LoadedEncoder) -> tuple[Path, Path]:
    """Write ``out`` (``.npy``, ``(N, D)`` float32) and its ``.names.json``; returns both paths."""
    from skelssl.evaluation.features import state_dict_digest
    from skelssl.utils import atomic_write

    out = Path(out)
    if out.suffix != ".npy":
        raise ConfigError(f"--out must name a .npy file, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    feats = np.ascontiguousarray(emb.features, dtype=np.float32)
    atomic_write(out, lambda fh: np.save(fh, feats, allow_pickle=False))
    meta = {
        "features": out.name,
        "shape": list(feats.shape),
        "names": emb.names,
        "labels": emb.labels,
        "class_names": emb.class_names,
        "source": emb.source,
        "rejected": emb.rejected,
        "encoder": {
            "path": str(encoder.path),
            "method": encoder.method,
            "sha256": encoder.card.get("sha256"),
            "random_init": encoder.random_init,
            "raw_input": encoder.raw_input,
            "digest": state_dict_digest(encoder.module),
            "stream": encoder.stream,
        },
    }
    meta_path = names_path(out)
    text = json.dumps(meta, indent=1) + "\n"
    atomic_write(meta_path, lambda fh: fh.write(text.encode("utf-8")))
    return out, meta_path
