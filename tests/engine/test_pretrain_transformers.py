"""The engine with the transformer methods (Skeleton2vec, MAMP) on real NW-UCLA data: export, resume, health."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from skelssl.config import load_config
from skelssl.configs import presets, resolve
from skelssl.engine.metrics import read_metrics
from skelssl.engine.pretrain import PretrainConfig, TrainingError, build_method, pretrain
from skelssl.models.registry import build_encoder

COMMON = [
    "data.split=xview",
    "data.persons=1",
    "data.frames=15",
    "train.epochs=2",
    "train.batch_size=8",
    "train.drop_last=true",
    "train.log_every_steps=1",
    "train.checkpoint_every_epochs=1",
    "train.knn_every_epochs=0",
    "train.knn_ks=[1,5]",
    "train.threads=1",
    "schedule.kind=cosine",
    "schedule.warmup_epochs=1",
    "optim.name=adamw",
    "optim.lr=1e-3",
    "optim.grad_clip=4.0",
]
S2V = [
    "method=skeleton2vec",
    "data.clips=skeleton2vec",
    "skeleton2vec.dim=16",
    "skeleton2vec.depth=2",
    "skeleton2vec.heads=2",
    "skeleton2vec.decoder_dim=16",
    "skeleton2vec.decoder_depth=1",
    "skeleton2vec.decoder_heads=2",
    "skeleton2vec.top_k=2",
    "skeleton2vec.mask_ratio=0.8",
    "skeleton2vec.ema_decay_start=0.9",
    "skeleton2vec.ema_anneal_steps=100",
]
MAMP = [
    "method=mamp",
    "data.clips=mamp",
    "data.frames=16",
    "mamp.dim=16",
    "mamp.depth=2",
    "mamp.heads=2",
    "mamp.decoder_dim=16",
    "mamp.decoder_depth=1",
    "mamp.decoder_heads=2",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def store(small_ucla_store: Path) -> Path:
    return small_ucla_store


def _cfg(store: Path, method: list[str], *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, None, [f"data.store={store}", *COMMON, *method, *extra])


def test_every_preset_loads_and_builds_its_method():
    names = presets()
    for expected in ("skeleton2vec/nw-ucla", "skeleton2vec/pku-mmd-v2", "mamp/nw-ucla", "mamp/ntu120-xset"):
        assert expected in names
    for name in names:
        cfg = load_config(PretrainConfig, resolve(name), [])
        assert cfg.method == name.split("/")[0]
        if name != "mamp/nw-ucla":  # the CPU preset takes aligned PySKL clips for the cross-view split
            assert cfg.data.clips == cfg.method
        if cfg.method == "skeleton2vec":
            assert cfg.optim.grad_clip == 4.0 and cfg.schedule.kind == "cosine"
            # the reference's cosine ends at 1e-5; the short CPU preset ends at half the peak lr, as MAMP's
            assert cfg.schedule.min_lr == (5e-4 if name.endswith("nw-ucla") else 1e-5)
            assert cfg.optim.betas == (0.9, 0.95)
            assert "temporal_pos" in cfg.optim.no_decay_names
            cfg.skeleton2vec.check()
        if cfg.method == "mamp":
            assert cfg.schedule.min_lr == 5e-4 and cfg.optim.grad_clip is None
            cfg.mamp.check()
    s2v = load_config(PretrainConfig, resolve("skeleton2vec/ntu60-xview"), [])
    assert s2v.data.align_spine is True and s2v.train.epochs == 800 and s2v.skeleton2vec.ema_anneal_steps == 236_000
    assert load_config(PretrainConfig, resolve("skeleton2vec/ntu120-xset"), []).skeleton2vec.beta == 0.2
    ucla = load_config(PretrainConfig, resolve("mamp/nw-ucla"), [])
    assert ucla.data.clips == "skeleton2vec" and ucla.data.align_spine and ucla.data.persons == 1
    mamp = load_config(PretrainConfig, resolve("mamp/ntu120-xsub"), [])
    assert mamp.mamp.tau == 0.75 and mamp.mamp.decoder_depth == 5 and mamp.train.epochs == 400


def test_nw_ucla_presets_build_on_the_real_layout(store: Path):
    from skelssl.data.store import SkeletonStore

    opened = SkeletonStore.open(store)
    for name in ("skeleton2vec/nw-ucla", "mamp/nw-ucla"):
        cfg = load_config(PretrainConfig, resolve(name), [f"data.store={store}"])
        method = build_method(cfg, opened, distributed=False)
        x = torch.zeros(2, 1, int(cfg.data.frames), 20, 3)
        out = method(x + torch.randn(x.shape).cumsum(2) * 0.01, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out["loss"])


def test_skeleton2vec_run_exports_teacher_and_student(store: Path, tmp_path: Path):
    run = tmp_path / "run"
    result = pretrain(_cfg(store, S2V, "train.knn_every_epochs=1"), run_dir=run, echo=lambda s: None)
    assert result.finished and set(result.knn) == {"knn_top1@1", "knn_top1@5"}
    records = read_metrics(run)
    train = [r for r in records if r["kind"] == "train"]
    assert {"target_var", "pred_var", "ema_decay", "grad_norm", "loss_feat"} <= train[0].keys()
    assert train[0]["ema_decay"] == pytest.approx(0.9)
    teacher = load_file(run / "encoder.safetensors")
    student = load_file(run / "student.safetensors")
    assert teacher.keys() == student.keys()
    assert any(not torch.equal(teacher[k], student[k]) for k in teacher)
    card = json.loads((run / "encoder.json").read_text())
    assert (
        card["method"] == "skeleton2vec"
        and card["exported_as"] == "encoder"
        and "teacher" in card["exports"]["encoder"]
    )
    assert json.loads((run / "student.json").read_text())["exported_as"] == "student"
    encoder = build_encoder(card["encoder"])
    encoder.load_state_dict(teacher)
    assert encoder(torch.randn(2, 1, 15, 20, 3)).shape == (2, 16)
    # the kNN monitor measured the teacher: the exported encoder gives the logged final accuracy
    assert [r for r in records if r["kind"] == "knn"][-1]["knn_top1@1"] == pytest.approx(result.knn["knn_top1@1"])


@pytest.mark.parametrize("method", ["skeleton2vec", "mamp"])
def test_resume_is_bit_identical(store: Path, tmp_path: Path, method: str):
    cfg = _cfg(store, S2V if method == "skeleton2vec" else MAMP, "train.checkpoint_every_steps=3")
    whole = pretrain(cfg, run_dir=tmp_path / "whole", echo=lambda s: None)
    pretrain(cfg, run_dir=tmp_path / "parts", max_steps=4, echo=lambda s: None)  # stops mid-epoch
    resumed = pretrain(cfg, run_dir=tmp_path / "parts", resume=True, echo=lambda s: None)
    assert resumed.finished and resumed.step == whole.step
    for name in ("encoder", "student") if method == "skeleton2vec" else ("encoder",):
        a = load_file(tmp_path / "whole" / f"{name}.safetensors")
        b = load_file(tmp_path / "parts" / f"{name}.safetensors")
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    losses_a = [r["loss"] for r in read_metrics(tmp_path / "whole") if r["kind"] == "train"]
    losses_b = [r["loss"] for r in read_metrics(tmp_path / "parts") if r["kind"] == "train"]
    assert losses_a == losses_b


def test_collapse_stops_with_the_step_and_the_floor(store: Path, tmp_path: Path):
    cfg = _cfg(store, S2V, "skeleton2vec.collapse_floor=50.0", "skeleton2vec.collapse_grace_steps=2")
    with pytest.raises(TrainingError, match=r"collapse at step 3: target_var = .*collapse_floor = 50"):
        pretrain(cfg, run_dir=tmp_path / "r", echo=lambda s: None)


def test_mamp_run_logs_and_exports(store: Path, tmp_path: Path):
    run = tmp_path / "mamp"
    result = pretrain(_cfg(store, MAMP), run_dir=run, echo=lambda s: None)
    assert result.finished
    card = json.loads((run / "encoder.json").read_text())
    assert card["method"] == "mamp" and card["encoder"]["config"]["segment"] == 4
    train = [r for r in read_metrics(run) if r["kind"] == "train"]
    assert {"loss", "pred_var", "target_var", "grad_norm"} <= train[0].keys()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["skeleton2vec", "mamp"])
def test_two_process_gloo_run(store: Path, tmp_path: Path, method: str):
    """``torchrun`` with 2 CPU processes: the run finishes, one writer, the single-process step count."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    extra = S2V if method == "skeleton2vec" else [*MAMP, "data.align_spine=false"]  # the preset aligns PySKL clips
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={port}", "-m", "skelssl.cli", "pretrain", f"{method}/nw-ucla",
        "--data", str(store), "--out", str(run), *COMMON, *extra,
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    records = [r for r in read_metrics(run) if r["kind"] == "train"]
    assert len({r["step"] for r in records}) == len(records)
    single = pretrain(_cfg(store, extra), run_dir=tmp_path / "one", echo=lambda s: None)
    assert records[-1]["step"] == single.step
    assert (run / "encoder.safetensors").is_file()
