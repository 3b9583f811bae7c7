"""The pretraining engine end to end on real NW-UCLA data: run layout, resume exactness, DDP, errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from skelssl.config import load_config
from skelssl.engine.metrics import read_metrics
from skelssl.engine.pretrain import PretrainConfig, TrainingError, pretrain
from skelssl.errors import ConfigError
from tests.engine.tiny import TINY_PSTL

TINY = [*TINY_PSTL, "train.knn_every_epochs=1", "train.knn_ks=[1,5]"]


@pytest.fixture(scope="module")
def store(small_ucla_store: Path) -> Path:
    return small_ucla_store


def _cfg(store: Path, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, None, [f"data.store={store}", *TINY, *extra])


def test_run_directory_and_encoder_export(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = pretrain(_cfg(store), run_dir=run, echo=lambda s: None)
    assert result.finished and result.epoch == 2 and result.step > 0
    assert (run / "config.yaml").is_file() and (run / "checkpoints").is_dir()
    records = read_metrics(run)
    kinds = {r["kind"] for r in records}
    assert {"train", "epoch", "knn"} <= kinds
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == sorted(steps) and steps[-1] == result.step
    assert all(0.0 <= r["knn_top1@5"] <= 1.0 for r in records if r["kind"] == "knn")
    weights = load_file(run / "encoder.safetensors")
    card = json.loads((run / "encoder.json").read_text())
    assert card["method"] == "pstl" and card["encoder"]["kind"] == "stgcn"
    assert card["data"]["layout"] == "kinect20" and card["metrics"]["steps"] == result.step
    from skelssl.models.registry import build_encoder

    encoder = build_encoder(card["encoder"])
    encoder.load_state_dict(weights)
    assert encoder(torch.randn(2, 2, 50, 20, 3)).shape == (2, 32)


def test_resume_is_bit_identical(store: Path, tmp_path: Path) -> None:
    cfg = _cfg(store, "train.knn_every_epochs=0", "train.checkpoint_every_steps=3")
    whole = pretrain(cfg, run_dir=tmp_path / "whole", echo=lambda s: None)
    pretrain(cfg, run_dir=tmp_path / "parts", max_steps=5, echo=lambda s: None)  # stops mid-epoch
    pretrain(cfg, run_dir=tmp_path / "parts", resume=True, max_steps=whole.step - 2, echo=lambda s: None)
    resumed = pretrain(cfg, run_dir=tmp_path / "parts", resume=True, echo=lambda s: None)
    assert resumed.finished and resumed.step == whole.step
    a = load_file(tmp_path / "whole" / "encoder.safetensors")
    b = load_file(tmp_path / "parts" / "encoder.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    losses_a = [r["loss"] for r in read_metrics(tmp_path / "whole") if r["kind"] == "train"]
    losses_b = [r["loss"] for r in read_metrics(tmp_path / "parts") if r["kind"] == "train"]
    assert losses_a == losses_b  # the log reads as if the run never stopped


def test_the_knn_monitor_never_changes_training(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the value at initialisation is measured on a BatchNorm-calibrated copy: the run's weights, BN statistics
    # and RNG streams must come out exactly as without any monitor
    import skelssl.evaluation.features as features

    calls: list[int] = []
    real = features.calibrate_batchnorm
    monkeypatch.setattr(features, "calibrate_batchnorm", lambda *a, **k: calls.append(1) or real(*a, **k))
    with_knn = pretrain(_cfg(store), run_dir=tmp_path / "knn", echo=lambda s: None)
    without = pretrain(_cfg(store, "train.knn_every_epochs=0"), run_dir=tmp_path / "plain", echo=lambda s: None)
    assert calls == [1] and with_knn.knn_at_start and not without.knn_at_start
    a = load_file(tmp_path / "knn" / "encoder.safetensors")
    b = load_file(tmp_path / "plain" / "encoder.safetensors")
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_refuses_to_overwrite_or_change_a_run(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    pretrain(_cfg(store, "train.knn_every_epochs=0"), run_dir=run, max_steps=2, echo=lambda s: None)
    with pytest.raises(ConfigError, match="--resume"):
        pretrain(_cfg(store, "train.knn_every_epochs=0"), run_dir=run, echo=lambda s: None)
    with pytest.raises(ConfigError, match="other training settings"):
        pretrain(_cfg(store, "train.knn_every_epochs=0", "optim.lr=0.1"), run_dir=run, resume=True, echo=print)


def test_config_errors_before_any_work(store: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'train\.batch_size'"):
        load_config(PretrainConfig, None, ["train.batchsize=3"])
    with pytest.raises(ConfigError, match="larger than the"):
        pretrain(_cfg(store, "train.batch_size=4096"), run_dir=tmp_path / "r", echo=lambda s: None)


def test_non_finite_loss_stops_with_the_step(store: Path, tmp_path: Path) -> None:
    cfg = _cfg(store, "optim.lr=1e30", "schedule.kind=constant", "train.knn_every_epochs=0")
    with pytest.raises(TrainingError, match=r"non-finite loss .* at step \d+"):
        pretrain(cfg, run_dir=tmp_path / "r", echo=lambda s: None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_run(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", "-m", "skelssl.cli", "pretrain", "pstl/ntu60-xview",
        "--data", str(store), "--out", str(run), *TINY, "train.knn_every_epochs=0",
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (run / "encoder.safetensors").is_file()
    records = [r for r in read_metrics(run) if r["kind"] == "train"]
    assert len({r["step"] for r in records}) == len(records)  # one writer: rank 0
    # the global batch of 8 is split 4 + 4, so an epoch has the steps of one process with batch 8
    single = pretrain(_cfg(store, "train.knn_every_epochs=0"), run_dir=tmp_path / "one", echo=lambda s: None)
    assert records[-1]["step"] == single.step
