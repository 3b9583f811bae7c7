"""Multi-stream ensemble: weighted fusion against a numpy reference; one stream equals its linear probe."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from skelssl.data.importers import get_importer_class
from skelssl.data.prepare import prepare_store
from skelssl.data.store import SkeletonStore
from skelssl.engine.checkpoint import save_encoder
from skelssl.errors import ConfigError
from skelssl.evaluation.ensemble import fuse_logits, run_ensemble
from skelssl.evaluation.linear import run_linear
from skelssl.evaluation.protocols import EvalContext, load_eval_encoder
from skelssl.evaluation.report import check_report
from skelssl.models.registry import encoder_spec
from skelssl.models.stgcn import STGCN


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_fuse_logits_reference() -> None:
    rng = np.random.default_rng(0)
    a, b, c = (rng.normal(size=(7, 4)) for _ in range(3))
    np.testing.assert_allclose(fuse_logits([a, b, c], [1, 1, 1]), a + b + c)
    np.testing.assert_allclose(fuse_logits([a, b, c], [0.5, 2, 0]), 0.5 * a + 2 * b)
    soft = fuse_logits([a, b], [1, 3], fuse="softmax")
    sm = [np.exp(z) / np.exp(z).sum(axis=1, keepdims=True) for z in (a, b)]
    np.testing.assert_allclose(soft, sm[0] + 3 * sm[1])
    with pytest.raises(ConfigError):
        fuse_logits([a, b], [1])
    with pytest.raises(ConfigError):
        fuse_logits([a], [1], fuse="max")


@pytest.fixture(scope="module")
def store(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> SkeletonStore:
    src = tmp_path_factory.mktemp("ens") / "all_sqe"
    src.mkdir()
    for f in sorted((shared_data / "nw-ucla" / "all_sqe").glob("a*_s0[12]_e00_*.json")):
        shutil.copy(f, src / f.name)
    out = src.parent / "store"
    prepare_store(get_importer_class("nw-ucla")(src), out)
    return SkeletonStore.open(out)


@pytest.fixture(scope="module")
def encoder_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two small ST-GCNs, each with its own stream on its card (joint, motion)."""
    files = []
    root = tmp_path_factory.mktemp("enc")
    for seed, stream in ((0, "joint"), (1, "motion")):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            module = STGCN(layout="kinect20", hidden_channels=4, hidden_dim=16)
        card = {
            "method": "pstl",
            "encoder": encoder_spec(module),
            "pretrain": {"method": "pstl", "data": {"clips": "pstl", "persons": 1}, "pstl": {"stream": stream}},
            "data": {"layout": "kinect20", "clips": "pstl"},
        }
        files.append(save_encoder(root / stream, module, card)[0])
    return files


def _ctx(store: SkeletonStore, files: list[Path], out: Path, **options: Any) -> EvalContext:
    return EvalContext(
        encoders=[load_eval_encoder(f) for f in files],
        store=store,
        split="xview",
        epochs=15,
        seed=0,
        out_dir=out,
        options={"cache": str(out.parent / "cache"), **{k: str(v) for k, v in options.items()}},
    )


def test_one_stream_with_weight_one_equals_its_linear_probe(store, encoder_files, tmp_path) -> None:
    linear = run_linear(_ctx(store, encoder_files[:1], tmp_path / "linear"))
    report = run_ensemble(_ctx(store, encoder_files[:1], tmp_path / "ens", weights="1"))
    assert report["protocol"] == "ensemble"
    check_report(report)
    assert report["top1"] == linear["top1"] and report["top5"] == linear["top5"]
    assert report["per_class"] == linear["per_class"]
    np.testing.assert_allclose(
        np.load(tmp_path / "ens" / "logits.npy"), np.load(tmp_path / "linear" / "logits.npy"), rtol=1e-6
    )
    assert [r["stream"] for r in report["rows"]] == ["joint", "fused"]
    assert report["rows"][0]["top1"] == report["rows"][1]["top1"] == linear["top1"]


def test_fusion_weights_matter(store, encoder_files, tmp_path) -> None:
    both = run_ensemble(_ctx(store, encoder_files, tmp_path / "11"))
    assert [r["stream"] for r in both["rows"]] == ["joint", "motion", "fused"]
    assert (tmp_path / "11" / "joint" / "logits.npy").is_file() and (tmp_path / "11" / "motion").is_dir()
    joint = np.load(tmp_path / "11" / "joint" / "logits.npy")
    motion = np.load(tmp_path / "11" / "motion" / "logits.npy")
    labels = np.load(tmp_path / "11" / "labels.npy")
    np.testing.assert_allclose(np.load(tmp_path / "11" / "logits.npy"), joint + motion, rtol=1e-5, atol=1e-6)
    assert both["top1"] == pytest.approx(np.mean((joint + motion).argmax(1) == labels))
    assert not np.array_equal(joint.argmax(1), motion.argmax(1))  # two different streams

    only_motion = run_ensemble(_ctx(store, encoder_files, tmp_path / "01", weights="0,1"))
    assert only_motion["top1"] == only_motion["rows"][1]["top1"]
    np.testing.assert_allclose(np.load(tmp_path / "01" / "logits.npy"), motion, rtol=1e-6)
    skewed = run_ensemble(_ctx(store, encoder_files, tmp_path / "31", weights="3,1"))
    np.testing.assert_allclose(np.load(tmp_path / "31" / "logits.npy"), 3 * joint + motion, rtol=1e-5, atol=1e-6)
    assert skewed["settings"]["weights"] == [3.0, 1.0]
    with pytest.raises(ConfigError, match="weights"):
        run_ensemble(_ctx(store, encoder_files, tmp_path / "bad", weights="1,1,1"))
