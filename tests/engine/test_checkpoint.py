"""Checkpoints: atomic writes, weights-only loading, corruption detection, RNG capture, encoder export."""

from __future__ import annotations

import json
import os
import pathlib
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from skelssl import __version__
from skelssl.engine import checkpoint as ckpt
from skelssl.engine.checkpoint import (
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    load_encoder,
    load_latest_checkpoint,
    restore_rng,
    save_checkpoint,
    save_encoder,
)
from skelssl.engine.optim import build_optimizer
from skelssl.errors import BadInputError, SkelsslError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(3, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 5))


def _trained():
    model = _model()
    opt = build_optimizer(model, name="adam", lr=1e-2, weight_decay=1e-5)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    x = torch.randn(6, 3, 8)
    for _ in range(3):
        opt.zero_grad()
        scaler.scale(model(x).square().mean()).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
    return model, opt, scaler, sched


def _state(model, opt, scaler, sched, gens) -> dict:
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scaler": scaler.state_dict(),
        "scheduler": sched.state_dict(),
        "step": 3,
        "epoch": 1,
        "rng": capture_rng(gens),
        "data": {"epoch": 1, "position": 17, "order": torch.randperm(50, generator=torch.Generator().manual_seed(3))},
        "config": {"name": "x", "lr": 1e-2, "betas": (0.9, 0.999), "none": None},
    }


def _assert_same(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b and type(a) is type(b), where


def test_round_trip_of_every_component_and_rng_streams(tmp_path):
    model, opt, scaler, sched = _trained()
    tgen = torch.Generator().manual_seed(11)
    ngen = np.random.default_rng(12)
    mt = np.random.Generator(np.random.MT19937(13))
    gens = {"augment": tgen, "sampler": ngen, "legacy": mt}
    torch.manual_seed(5)
    for g in (tgen,):
        torch.rand(3, generator=g)
    ngen.random(4), mt.random(5)
    state = _state(model, opt, scaler, sched, gens)
    path = save_checkpoint(tmp_path / "ckpt" / "step-3.pt", state)
    # the streams after the capture, as an uninterrupted run would see them
    expected = (torch.rand(4), torch.rand(4, generator=tgen), ngen.random(3), mt.integers(0, 2**31, 3))

    loaded = load_checkpoint(path)
    _assert_same(state, loaded)

    # a "resumed" process: fresh objects, load everything, continue
    model2 = _model()
    nn.init.zeros_(model2[0].weight)
    opt2 = build_optimizer(model2, name="adam", lr=1e-2, weight_decay=1e-5)
    scaler2 = torch.amp.GradScaler("cpu")
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=2)
    model2.load_state_dict(loaded["model"])
    opt2.load_state_dict(loaded["optimizer"])
    scaler2.load_state_dict(loaded["scaler"])
    sched2.load_state_dict(loaded["scheduler"])
    tgen2, ngen2, mt2 = (
        torch.Generator().manual_seed(0),
        np.random.default_rng(0),
        np.random.Generator(np.random.MT19937(0)),
    )
    torch.manual_seed(999)
    restore_rng(loaded["rng"], {"augment": tgen2, "sampler": ngen2, "legacy": mt2})
    got = (torch.rand(4), torch.rand(4, generator=tgen2), ngen2.random(3), mt2.integers(0, 2**31, 3))
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    np.testing.assert_array_equal(got[2], expected[2])
    np.testing.assert_array_equal(got[3], expected[3])
    _assert_same(opt.state_dict(), opt2.state_dict())
    assert scaler2.get_scale() == scaler.get_scale() and sched2.last_epoch == sched.last_epoch

    # and training continues identically
    x = torch.randn(6, 3, 8, generator=torch.Generator().manual_seed(4))
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()
    _assert_same(model.state_dict(), model2.state_dict())


def test_restore_rng_checks_names_and_kinds():
    state = capture_rng({"a": torch.Generator()})
    with pytest.raises(ValueError, match="generators"):
        restore_rng(state, {"b": torch.Generator()})
    with pytest.raises(ValueError, match="not a numpy generator"):
        restore_rng(state, {"a": np.random.default_rng()})
    restore_rng(state, {}, strict=False)
    assert "generators" in capture_rng(include_global=False) and "torch" not in capture_rng(include_global=False)


def test_interrupted_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(SkelsslError, match=r"last\.pt.*No space left.*previous file, if any, is intact"):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # the temp file was removed

    # a crash inside torch.save, after part of the data was written
    real_save = torch.save

    def partial_save(obj, fh, *a, **k):
        fh.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", partial_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 3})
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_unloadable_values_are_refused_before_writing(tmp_path):
    path = tmp_path / "c.pt"
    with pytest.raises(TypeError, match=r"state\['metrics'\]\['acc'\] is a numpy.float64.*\.item\(\)"):
        save_checkpoint(path, {"metrics": {"acc": np.float64(0.5)}})
    with pytest.raises(TypeError, match="Path"):
        save_checkpoint(path, {"where": Path("/x")})
    assert not path.exists()


def test_truncated_and_corrupt_files_are_named_and_skipped(tmp_path):
    ckdir = tmp_path / "checkpoints"
    good = save_checkpoint(ckdir / "step-1.pt", {"step": 1, "w": torch.arange(1000.0)})
    data = good.read_bytes()
    time.sleep(0.01)
    truncated = ckdir / "step-2.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match=rf"{truncated}: .*truncated"):
        load_checkpoint(truncated)
    time.sleep(0.01)
    flipped = bytearray(data)
    pos = flipped.find(np.float32(500.0).tobytes())
    flipped[pos] ^= 0xFF
    corrupt = ckdir / "step-3.pt"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(BadInputError, match=rf"{corrupt}: corrupt checkpoint: member .* CRC-32"):
        load_checkpoint(corrupt)
    empty = ckdir / "step-4.pt"
    empty.write_bytes(b"")
    with pytest.raises(BadInputError, match=str(empty)):
        load_checkpoint(empty)
    (ckdir / ".step-5.pt.x1y2.tmp").write_bytes(data[:100])  # what a kill during a write leaves
    with pytest.raises(BadInputError, match="not found"):
        load_checkpoint(ckdir / "missing.pt")
    assert latest_checkpoint(ckdir) == good
    found = load_latest_checkpoint(ckdir)
    assert found is not None and found[0] == good and found[1]["step"] == 1
    assert latest_checkpoint(tmp_path / "nowhere") is None


def test_latest_is_newest_valid(tmp_path):
    for step in (1, 2, 10):
        save_checkpoint(tmp_path / f"step-{step}.pt", {"step": step})
        time.sleep(0.01)
    assert latest_checkpoint(tmp_path) == tmp_path / "step-10.pt"
    save_checkpoint(tmp_path / "step-9.pt", {"step": 9})
    assert latest_checkpoint(tmp_path) == tmp_path / "step-9.pt"  # newest by modification time
    same = time.time_ns()
    for name in ("step-9.pt", "step-10.pt"):
        os.utime(tmp_path / name, ns=(same, same))
    assert latest_checkpoint(tmp_path) == tmp_path / "step-10.pt"  # ties: natural order of names


class _Gadget:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(2)}, "payload": _Gadget(marker)}, evil)
    assert not marker.exists()
    with pytest.raises(BadInputError, match=rf"{evil}: refused: .*pickled Python objects"):
        load_checkpoint(evil)
    assert not marker.exists()
    assert latest_checkpoint(tmp_path) is None
    assert not marker.exists()
    # a bare non-dict checkpoint is refused too
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(BadInputError, match="must hold a dict"):
        load_checkpoint(tmp_path / "list.pt")


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 8)
        self.norm = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 8)
        self.tied = self.head  # shared storage is written once per name, as independent tensors


def test_encoder_round_trip_and_card(tmp_path):
    enc = Encoder()
    enc.norm(torch.randn(4, 8))  # move BN statistics
    weights, card_path = save_encoder(
        tmp_path / "run" / "encoder",
        enc,
        {"config": {"lr": 1e-3, "betas": (0.9, 0.95), "path": Path("/data")}, "metrics": {"knn": np.float32(0.5)}},
    )
    assert weights.name == "encoder.safetensors" and card_path.name == "encoder.json"
    card = json.loads(card_path.read_text())
    assert card["skelssl_version"] == __version__ and card["tensors"] == len(enc.state_dict())
    assert card["config"] == {"lr": 1e-3, "betas": [0.9, 0.95], "path": "/data"} and card["metrics"]["knn"] == 0.5
    assert card["parameters"] == sum(t.numel() for t in enc.state_dict().values())
    assert "created" in card and len(card["sha256"]) == 64
    for where in (tmp_path / "run" / "encoder", weights, card_path, tmp_path / "run"):
        state, card2 = load_encoder(where)
        assert card2 == card
        _assert_same(dict(sorted(enc.state_dict().items())), dict(sorted(state.items())))
    fresh = Encoder()
    fresh.load_state_dict(state)
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_encoder_tampering_and_missing_card(tmp_path):
    weights, card_path = save_encoder(tmp_path / "enc", {"w": torch.arange(6.0).reshape(2, 3).t()}, {})
    state, _ = load_encoder(weights)
    assert torch.equal(state["w"], torch.arange(6.0).reshape(2, 3).t())
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(BadInputError, match=rf"{weights}: sha256 .* does not match"):
        load_encoder(weights)
    card_path.unlink()
    with pytest.raises(BadInputError, match="encoder card not found"):
        load_encoder(weights)
    with pytest.raises(TypeError, match="not a tensor"):
        save_encoder(tmp_path / "bad", {"w": 1.0}, {})


_WRITER = """
import sys, torch
from skelssl.engine.checkpoint import save_checkpoint
path = sys.argv[1]
w = torch.randn(1 << 20)
step = 0
while True:
    step += 1
    save_checkpoint(path, {"step": step, "base": w, "w": w + step})
    print(step, flush=True)
"""


def test_sigkill_during_writes_never_leaves_a_broken_checkpoint(tmp_path):
    import signal
    import subprocess
    import sys

    path = tmp_path / "last.pt"
    rng = np.random.default_rng(0)
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for _ in range(int(rng.integers(2, 6))):  # let it finish a few writes, then kill it mid-way
            assert proc.stdout.readline()
        time.sleep(float(rng.uniform(0.0, 0.02)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = load_checkpoint(path)
        assert state["step"] >= 1 and torch.equal(state["w"], state["base"] + state["step"])  # one whole write
        assert latest_checkpoint(tmp_path) == path
