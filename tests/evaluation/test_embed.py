"""The encoder as a feature extractor: a store or a generic .npz → features.npy + names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from skelssl.data.store import SkeletonStore
from skelssl.errors import BadInputError, ConfigError
from skelssl.evaluation.embed import embed, names_path, write_embeddings
from skelssl.evaluation.features import extract_features
from skelssl.evaluation.protocols import dataset_for, load_eval_encoder

from .eval_helpers import make_small_store, save_tiny_encoder


@pytest.fixture(scope="module")
def setup(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("embed")
    store = make_small_store(shared_data, root)
    save_tiny_encoder(root / "run")
    return store, root / "run"


def test_embed_a_store(setup: tuple[Path, Path], tmp_path: Path) -> None:
    store_path, run = setup
    enc = load_eval_encoder(run)
    result = embed(enc, store_path)
    store = SkeletonStore.open(store_path)
    assert result.features.shape == (len(store), 16) and result.names == [str(n) for n in store.names]
    assert result.labels == [int(v) for v in store.labels]
    ref, _, _ = extract_features(enc.module, dataset_for(enc, store))
    assert np.allclose(result.features, ref)
    feats, meta = write_embeddings(tmp_path / "f.npy", result, enc)
    assert meta == names_path(feats) == tmp_path / "f.names.json"
    info = json.loads(meta.read_text())
    assert np.array_equal(np.load(feats), result.features) and info["names"] == result.names
    assert info["encoder"]["sha256"] == enc.card["sha256"] and info["class_names"] == store.class_names
    part = embed(enc, store_path, split="xview", part="test")
    assert part.names == [str(store.names[i]) for i in store.split_indices("xview", "test")]
    with pytest.raises(ConfigError, match="both"):
        embed(enc, store_path, split="xview")


def test_embed_a_generic_npz(setup: tuple[Path, Path], tmp_path: Path) -> None:
    store_path, run = setup
    enc = load_eval_encoder(run)
    store = SkeletonStore.open(store_path)
    seqs = [store.keypoints(i) for i in range(4)]
    arrays = {
        "keypoints": np.concatenate(seqs),
        "lengths": np.array([len(s) for s in seqs]),
        "names": np.array(["w", "x", "y", "z"]),
        "layout": np.array("kinect20"),
    }
    np.savez(tmp_path / "new.npz", **arrays)
    result = embed(enc, tmp_path / "new.npz")
    assert result.names == ["w", "x", "y", "z"] and result.labels is None
    direct = embed(enc, store_path).features[:4]
    assert np.allclose(result.features, direct, atol=1e-5)  # same sequences, same features
    np.savez(tmp_path / "lab.npz", **arrays, labels=np.array([1, 0, 1, 0]))
    assert embed(enc, tmp_path / "lab.npz").labels == [1, 0, 1, 0]
    with pytest.raises(BadInputError, match="store directory"):
        embed(enc, tmp_path / "x.csv")
