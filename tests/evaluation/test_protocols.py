"""The evaluation contract: encoders, datasets (layout mapping), cached features, accuracy and report heads, kNN."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from skelssl.data.clips import make_clip
from skelssl.data.store import SkeletonStore
from skelssl.errors import BadInputError, ConfigError
from skelssl.evaluation import features as features_mod
from skelssl.evaluation.knn import knn_accuracy
from skelssl.evaluation.protocols import (
    EvalContext,
    MappedClipDataset,
    accuracy_report,
    base_report,
    clip_config_for,
    encoder_features,
    load_eval_encoder,
    make_eval_dataset,
    run_knn,
)
from skelssl.skeleton.layouts import get_layout, layout_mapping

from .eval_helpers import make_small_store, save_tiny_encoder


@pytest.fixture(scope="module")
def store_path(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_small_store(shared_data, tmp_path_factory.mktemp("ucla"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    save_tiny_encoder(run)
    return run


def _ctx(store_path: Path, run_dir: Path, out: Path, **kw: object) -> EvalContext:
    enc = load_eval_encoder(run_dir, **kw)  # type: ignore[arg-type]
    return EvalContext(encoders=[enc], store=SkeletonStore.open(store_path), split="xview", out_dir=out)


# ------------------------------------------------------------------------------------------ accuracy


def _reference_accuracy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float, np.ndarray]:
    n, k = logits.shape
    hit1 = hit5 = 0
    confusion = np.zeros((k, k), dtype=int)
    for i in range(n):
        ranked = sorted(range(k), key=lambda j: (-logits[i, j], j))
        hit1 += ranked[0] == labels[i]
        hit5 += labels[i] in ranked[:5]
        confusion[labels[i], ranked[0]] += 1
    return hit1 / n, hit5 / n, confusion


@pytest.mark.parametrize("k", [3, 10])
def test_accuracy_report_matches_a_loop(k: int) -> None:
    rng = np.random.default_rng(k)
    logits = rng.normal(size=(200, k)).round(1)  # rounding makes ties
    labels = rng.integers(0, k, 200)
    rep = accuracy_report(logits, labels, class_names=[f"c{i}" for i in range(k)])
    top1, top5, confusion = _reference_accuracy(logits, labels)
    assert rep["top1"] == pytest.approx(top1) and rep["top5"] == pytest.approx(top5)
    assert np.array_equal(np.asarray(rep["confusion"]), confusion)
    for i in range(k):
        assert rep["per_class"][f"c{i}"] == pytest.approx(confusion[i, i] / confusion[i].sum())
    if k < 5:
        assert rep["top5"] == 1.0


def test_accuracy_report_class_without_samples() -> None:
    rep = accuracy_report(np.eye(3)[[0, 1, 1]], np.array([0, 1, 1]), class_names=["a", "b", "c"])
    assert rep["per_class"] == {"a": 1.0, "b": 1.0, "c": None}


# ------------------------------------------------------------------------------------------ encoders


def test_load_encoder_from_run_or_file_and_errors(run_dir: Path, tmp_path: Path) -> None:
    a = load_eval_encoder(run_dir)
    b = load_eval_encoder(run_dir / "encoder.safetensors")
    assert a.path == b.path and a.method == "pstl" and a.stream == "joint" and not a.module.training
    for (ka, va), (kb, vb) in zip(a.module.state_dict().items(), b.module.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    with pytest.raises(BadInputError, match="student"):
        load_eval_encoder(run_dir, which="student")
    with pytest.raises(BadInputError, match="not found"):
        load_eval_encoder(tmp_path / "nope.safetensors")


def test_random_init_is_seeded_and_differs(run_dir: Path) -> None:
    from skelssl.evaluation.features import state_dict_digest

    before = torch.random.get_rng_state()
    r1 = load_eval_encoder(run_dir, random_init=True, seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)  # the global generator is left alone
    r2 = load_eval_encoder(run_dir, random_init=True, seed=3)
    r3 = load_eval_encoder(run_dir, random_init=True, seed=4)
    trained = load_eval_encoder(run_dir)
    digests = [state_dict_digest(e.module) for e in (r1, r2, r3, trained)]
    assert digests[0] == digests[1] and len(set(digests)) == 3
    assert r1.random_init and r1.card["sha256"] == trained.card["sha256"]


def test_clip_config_follows_the_card(run_dir: Path) -> None:
    enc = load_eval_encoder(run_dir)
    cfg = clip_config_for(enc, train=False, seed=5)
    assert (cfg.normalize, cfg.view, cfg.frames, cfg.persons, cfg.train) == ("aimclr", "resize", 50, 1, False)
    # a pretraining run that changed the normalisation is evaluated on that normalisation too
    card = {**enc.card, "pretrain": {**enc.card["pretrain"]}}
    card["pretrain"]["data"] = {**card["pretrain"]["data"], "normalize": "pyskl", "align_spine": True}
    cfg = clip_config_for(dataclasses.replace(enc, card=card), train=False, seed=5)
    assert (cfg.normalize, cfg.align_spine, cfg.view, cfg.frames) == ("pyskl", True, "resize", 50)


# ------------------------------------------------------------------------------------------ datasets, features


def test_features_leave_the_encoder_untouched_and_are_cached(
    store_path: Path, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _ctx(store_path, run_dir, tmp_path / "out")
    module = ctx.encoder.module
    module.train()  # even a module left in train mode: BN statistics must not move
    state = {k: v.clone() for k, v in module.state_dict().items()}
    f1, y1, i1 = encoder_features(ctx, "test")
    assert module.training
    for k, v in module.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert f1.shape == (20, 16) and np.array_equal(i1, ctx.store.split_indices("xview", "test"))
    assert np.array_equal(y1, ctx.store.labels[i1])
    assert any((tmp_path / ".feature-cache").iterdir())

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("features were recomputed")

    monkeypatch.setattr(features_mod, "extract_features", boom)
    ctx.seed = 7  # the test view does not depend on the seed: the cache still serves
    f2, _, _ = encoder_features(ctx, "test")
    assert np.array_equal(f1, f2)


def test_split_and_part_errors(store_path: Path, run_dir: Path, tmp_path: Path) -> None:
    ctx = _ctx(store_path, run_dir, tmp_path)
    with pytest.raises(ConfigError, match="no part 'val'"):
        make_eval_dataset(ctx, "val")
    ctx.split = "xsub"
    with pytest.raises(ConfigError, match=r"no split 'xsub'.*xview"):
        make_eval_dataset(ctx, "test")


def test_transfer_with_a_layout_mapping(store_path: Path, tmp_path: Path) -> None:
    """An encoder trained on sbu15 evaluated on the kinect20 store: joints are mapped before the clip."""
    save_tiny_encoder(tmp_path / "sbu", layout="sbu15")
    ctx = _ctx(store_path, tmp_path / "sbu", tmp_path / "out")
    ds = make_eval_dataset(ctx, "test")
    assert isinstance(ds, MappedClipDataset) and ds.layout.name == "sbu15"
    store = ctx.store
    i = int(ds.indices[3])
    sbu = get_layout("sbu15")
    assert ds.mapping == layout_mapping("kinect20", "sbu15")
    expected = make_clip(store.keypoints(i)[:, :, list(ds.mapping), :], sbu, ds.config)
    assert np.array_equal(ds.clip(3), expected) and expected.shape[2] == 15
    feats, _, _ = encoder_features(ctx, "test")
    assert feats.shape == (20, 16) and np.isfinite(feats).all()
    report = base_report(ctx, "knn", {})
    assert report["encoder"]["layout"] == "sbu15" and report["data"]["layout"] == "kinect20"


def test_layout_without_correspondence_is_a_clear_error(store_path: Path, tmp_path: Path) -> None:
    save_tiny_encoder(tmp_path / "ntu", layout="ntu25")
    ctx = _ctx(store_path, tmp_path / "ntu", tmp_path / "out")
    with pytest.raises(ConfigError, match=r"kinect20.*ntu25.*do not correspond"):
        make_eval_dataset(ctx, "train")


# ------------------------------------------------------------------------------------------ kNN, report head


def test_run_knn_rows_and_reported_k(store_path: Path, run_dir: Path, tmp_path: Path) -> None:
    ctx = _ctx(store_path, run_dir, tmp_path / "knn")
    report = run_knn(ctx)
    train_f, train_y, _ = encoder_features(ctx, "train")
    test_f, test_y, _ = encoder_features(ctx, "test")
    expected = knn_accuracy(train_f, train_y, test_f, test_y, ks=(1, 5, 10, 20))
    assert [r["k"] for r in report["rows"]] == [1, 5, 10, 20]
    for row in report["rows"]:
        assert row["top1"] == pytest.approx(expected[row["k"]])
    assert report["top1"] == pytest.approx(expected[1]) and report["top5"] is None
    assert report["settings"]["reported_k"] == 1
    ctx.options = {"ks": "1,3,100", "k": "3"}
    report = run_knn(ctx)
    assert [r["k"] for r in report["rows"]] == [1, 3]  # k > 40 training samples is skipped
    assert report["top1"] == pytest.approx(report["rows"][1]["top1"])
    ctx.options = {"kk": "3"}
    with pytest.raises(ConfigError, match=r"unknown option 'kk'.*did you mean 'k'"):
        run_knn(ctx)


def test_knn_on_per_joint_features(store_path: Path, run_dir: Path, tmp_path: Path) -> None:
    ctx = _ctx(store_path, run_dir, tmp_path / "knn-joint")
    ctx.options = {"pool": "joint", "ks": "1"}
    report = run_knn(ctx)
    train_f, train_y, _ = encoder_features(ctx, "train")
    test_f, test_y, _ = encoder_features(ctx, "test")
    assert train_f.shape == (40, 20 * 16) and report["settings"]["feature_dim"] == 20 * 16
    assert report["settings"]["pool"].startswith("joint")
    assert report["top1"] == pytest.approx(knn_accuracy(train_f, train_y, test_f, test_y, ks=(1,))[1])
    ctx.options = {}
    mean_f, _, _ = encoder_features(ctx, "test")  # cached apart from the per-joint features
    assert mean_f.shape == (20, 16)
    np.testing.assert_allclose(test_f.reshape(20, 20, 16).mean(1), mean_f, rtol=1e-4, atol=1e-5)


def test_base_report_is_json_and_complete(store_path: Path, run_dir: Path, tmp_path: Path) -> None:
    ctx = _ctx(store_path, run_dir, tmp_path)
    head = base_report(ctx, "linear", {"epochs": 3})
    json.dumps(head)
    enc = head["encoder"]
    assert enc["method"] == "pstl" and len(enc["sha256"]) == 64 and enc["random_init"] is False
    assert head["data"]["counts"] == {"train": 40, "test": 20} and head["data"]["split"] == "xview"
    assert head["settings"] == {"epochs": 3} and head["skelssl"]


def test_random_init_batchnorm_is_calibrated_on_the_training_part(
    store_path: Path, run_dir: Path, tmp_path: Path
) -> None:
    from skelssl.evaluation.features import calibrate_batchnorm

    enc = load_eval_encoder(run_dir, random_init=True, seed=3)
    ctx = EvalContext(encoders=[enc], store=SkeletonStore.open(store_path), split="xview", out_dir=tmp_path / "o")
    bn = enc.module.data_bn
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))  # fresh: the initial statistics
    encoder_features(ctx, "test")
    assert enc.module.bn_calibrated == "xview/train" and not enc.module.training
    # the data BN now holds the exact mean of the training clips' (joint, coordinate) channels
    train = make_eval_dataset(ctx, "train", train=False)
    x = torch.stack([train[i]["x"] for i in range(len(train))])  # (N, M, T, V, C)
    expected = x.permute(0, 1, 3, 4, 2).reshape(-1, x.shape[3] * x.shape[4], x.shape[2]).mean(dim=(0, 2))
    torch.testing.assert_close(bn.running_mean, expected, rtol=1e-4, atol=1e-5)
    assert base_report(ctx, "linear", {})["encoder"]["bn_calibrated"] == "xview/train"
    # pretrained encoders keep the statistics of their pretraining
    pre = load_eval_encoder(run_dir)
    state = {k: v.clone() for k, v in pre.module.state_dict().items()}
    encoder_features(EvalContext(encoders=[pre], store=ctx.store, split="xview", out_dir=tmp_path / "p"), "test")
    assert all(torch.equal(v, state[k]) for k, v in pre.module.state_dict().items())
    # a module without BatchNorm is left alone
    assert calibrate_batchnorm(torch.nn.Linear(3, 2), train) == 0


# ------------------------------------------------------------------------------------------ raw-input baseline


def test_raw_input_features_are_the_encoders_clips(store_path: Path, run_dir: Path, tmp_path: Path) -> None:
    from skelssl.evaluation.protocols import RawInput

    ctx = _ctx(store_path, run_dir, tmp_path / "raw", raw_input=True)
    enc = ctx.encoder
    assert isinstance(enc.module, RawInput) and enc.raw_input and enc.baseline == "raw input"
    assert enc.card["sha256"] == load_eval_encoder(run_dir).card["sha256"]  # names the encoder it stands for
    feats, labels, idx = encoder_features(ctx, "test")
    ds = make_eval_dataset(ctx, "test")
    # the encoder's own test view (AimCLR pipeline: 1 person x 50 frames x 20 joints x 3), flattened in order
    assert feats.shape == (20, 1 * 50 * 20 * 3)
    for row in (0, 7, 19):
        np.testing.assert_array_equal(feats[row], ds.clip(row).reshape(-1).astype(np.float32))
    assert np.array_equal(labels, ctx.store.labels[idx])
    # a random-init encoder's features are cached separately (different digest and shape)
    rnd, _, _ = encoder_features(_ctx(store_path, run_dir, tmp_path / "rnd", random_init=True), "test")
    assert rnd.shape == (20, 16)
    report = run_knn(ctx)
    assert report["encoder"]["raw_input"] is True and report["encoder"]["random_init"] is False
    assert report["settings"]["pool"].startswith("none (raw input")
    ctx.options = {"pool": "joint"}  # a flattened clip has no tokens to pool: the same features
    assert np.array_equal(encoder_features(ctx, "test")[0], feats)
    ctx.options = {}
    expected = knn_accuracy(*encoder_features(ctx, "train")[:2], feats, labels, ks=(1,))
    assert report["top1"] == pytest.approx(expected[1])


def test_raw_input_is_refused_where_a_network_is_needed(store_path: Path, run_dir: Path, tmp_path: Path) -> None:
    from skelssl.evaluation.finetune import run_finetune
    from skelssl.evaluation.robustness import run_robustness
    from skelssl.evaluation.semi import run_semi

    with pytest.raises(ConfigError, match="two different baselines"):
        load_eval_encoder(run_dir, raw_input=True, random_init=True)
    ctx = _ctx(store_path, run_dir, tmp_path, raw_input=True)
    with pytest.raises(ConfigError, match=r"fine-tune needs an encoder network; --raw-input is a baseline"):
        run_finetune(ctx)
    with pytest.raises(ConfigError, match=r"robustness needs an encoder network"):
        run_robustness(ctx)
    with pytest.raises(ConfigError, match=r"semi head=finetune needs an encoder network"):
        run_semi(dataclasses.replace(ctx, options={"head": "finetune"}))
    assert not any(tmp_path.iterdir())  # refused before writing anything
