"""Crash-safe pretraining: SIGKILL at random moments and --resume, non-finite losses, full disks, unwritable outputs.

The killed run is the real command line (``python -m skelssl.cli pretrain …`` in a subprocess) on real NW-UCLA
clips. A tiny wrapper script (written by the test, not a production flag) can slow down the ``fsync`` of
checkpoint temp files, so that one kill surely lands in the middle of a checkpoint write.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from skelssl import cli
from skelssl.config import load_config
from skelssl.configs import resolve
from skelssl.engine import checkpoint as ckpt_module
from skelssl.engine import metrics as metrics_module
from skelssl.engine.checkpoint import latest_checkpoint, load_checkpoint
from skelssl.engine.metrics import read_metrics
from skelssl.engine.pretrain import PretrainConfig, TrainingError, pretrain
from skelssl.errors import ConfigError
from skelssl.methods.pstl import PSTL
from tests.engine.tiny import TINY_PSTL

PRESET = "pstl/ntu60-xview"
TINY = [*TINY_PSTL, "train.knn_every_epochs=0", "train.deterministic=true"]
EVERY = 2  # --checkpoint-every-steps

# The command line, optionally with a slow fsync of checkpoint temp files (SKELSSL_TEST_FSYNC_DELAY seconds),
# which keeps every checkpoint write in flight long enough for the test to kill the process inside it.
WRAPPER = """
import os, sys, time

_delay = float(os.environ.get("SKELSSL_TEST_FSYNC_DELAY", "0"))
_fsync = os.fsync


def _slow_fsync(fd):
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        name = ""
    if _delay and name.endswith(".tmp"):
        time.sleep(_delay)
    _fsync(fd)


os.fsync = _slow_fsync
from skelssl.cli import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def store(small_ucla_store: Path) -> Path:
    return small_ucla_store


@pytest.fixture(autouse=True)
def _restore_torch_globals(restore_torch_globals: None) -> None:
    """In-process runs set torch's thread count and deterministic mode (see conftest)."""


def _cfg(store: Path, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, resolve(PRESET), [f"data.store={store}", *TINY, *extra])


def _argv(store: Path, run: Path) -> list[str]:
    return ["pretrain", PRESET, "--data", str(store), "--out", str(run), "--checkpoint-every-steps", str(EVERY), *TINY]


def _checkpoints(run: Path) -> list[Path]:
    d = run / "checkpoints"
    return sorted(p for p in d.iterdir() if not p.name.startswith(".")) if d.is_dir() else []


def _step_of(path: Path) -> int:
    return int(path.stem.split("-")[-1])


def _temp_files(run: Path) -> list[Path]:
    d = run / "checkpoints"
    return sorted(d.glob(".*.tmp")) if d.is_dir() else []


def _assert_every_checkpoint_loads(run: Path) -> int:
    """Every checkpoint file present loads, and the newest one is the one ``--resume`` picks; its step (or 0)."""
    files = _checkpoints(run)
    steps = [int(load_checkpoint(p)["step"]) for p in files]  # raises BadInputError on any corrupt file
    if not files:
        assert latest_checkpoint(run / "checkpoints") is None
        return 0
    newest = latest_checkpoint(run / "checkpoints")
    assert newest == files[int(np.argmax(steps))]
    return max(steps)


def _train_records(run: Path) -> list[tuple]:
    """Everything of the train/epoch records except the measured speed."""
    return [
        tuple(sorted((k, v) for k, v in r.items() if k != "clips_per_s"))
        for r in read_metrics(run)
        if r["kind"] in ("train", "epoch")
    ]


def _wait(pred: Callable[[], bool], proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    """Poll ``pred`` every 2 ms until it holds (True) or the process ends / the time is up (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    return False


@pytest.fixture(scope="module")
def whole(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of the same config (in this process: the same arithmetic, deterministic CPU)."""
    run = tmp_path_factory.mktemp("whole") / "run"
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        assert pretrain(_cfg(store, f"train.checkpoint_every_steps={EVERY}"), run_dir=run, echo=lambda s: None).finished
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return run


def _kill_and_resume(store: Path, whole: Path, tmp_path: Path, *, seed: int, plan: tuple[str, ...]) -> None:
    """Run the CLI, SIGKILL it as ``plan`` says, ``--resume`` after each kill, and compare with ``whole``.

    ``plan``: ``"write"`` (first only: the moment a checkpoint temp file appears, after 1-2 complete
    checkpoints, with that write slowed down so that the kill surely lands inside it), ``"checkpoint"``
    (a random 0-0.5 s after the resumed run wrote a new checkpoint), ``"resumed"`` (a random 0-1 s after the
    resumed run reported where it resumed).
    """
    run = tmp_path / "killed"
    script = tmp_path / "skelssl_wrapper.py"
    script.write_text(WRAPPER)
    rng = np.random.default_rng(seed)
    log = tmp_path / "out.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

    def start(resume: bool, fsync_delay: float = 0.0) -> subprocess.Popen:
        cmd = [sys.executable, str(script), *_argv(store, run), *(["--resume"] if resume else [])]
        with open(log, "a") as fh:
            return subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, env={**env, "SKELSSL_TEST_FSYNC_DELAY": str(fsync_delay)}
            )

    def kill(proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGKILL)  # (a run that already finished is fine: the next one resumes at its end)
        assert proc.wait(timeout=30) in (-signal.SIGKILL, 0), log.read_text()[-2000:]

    def newest() -> int:
        return max(map(_step_of, _checkpoints(run)), default=0)

    stops = []
    for i, when in enumerate(plan):
        if when == "write":
            assert i == 0
            first = int(rng.integers(1, 3))
            proc = start(resume=False, fsync_delay=0.3)
            hit = _wait(lambda n=first: len(_checkpoints(run)) >= n and bool(_temp_files(run)), proc)
            assert hit, log.read_text()[-2000:]
            kill(proc)
            assert _temp_files(run), "the kill did not land inside a checkpoint write"
            at = _assert_every_checkpoint_loads(run)
            assert at == first * EVERY  # the checkpoint being written is not there; the one before is the latest
        else:
            before, resumed = newest(), log.read_text().count("resumed from")
            proc = start(resume=i > 0)
            if when == "checkpoint":
                hit = _wait(lambda b=before: newest() > b, proc)
                time.sleep(float(rng.uniform(0.0, 0.5)))
            else:
                hit = _wait(lambda r=resumed: log.read_text().count("resumed from") > r, proc)
                time.sleep(float(rng.uniform(0.0, 1.0)))
            assert hit or proc.returncode == 0, log.read_text()[-2000:]
            kill(proc)
            at = _assert_every_checkpoint_loads(run)  # every checkpoint left loads; the newest is what resumes
        stops.append(at)

    proc = start(resume=True)  # to the end
    assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert text.count("resumed from") >= len(plan) and "pretrained pstl for 2 epochs" in text, text[-3000:]
    assert not _temp_files(run)  # resuming removed the temp files of interrupted writes

    a, b = load_file(whole / "encoder.safetensors"), load_file(run / "encoder.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), stops
    last_a, last_b = _checkpoints(whole)[-1], _checkpoints(run)[-1]
    assert last_a.name == last_b.name
    sa, sb = load_checkpoint(last_a), load_checkpoint(last_b)
    assert sa["model"].keys() == sb["model"].keys()
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"]), stops
    rng_a, rng_b = sa["rng"][0]["generators"]["step"]["state"], sb["rng"][0]["generators"]["step"]["state"]
    assert torch.equal(rng_a, rng_b) and torch.equal(sa["rng"][0]["torch"], sb["rng"][0]["torch"])
    # the metrics read as if the run never stopped: records after the last checkpoint were dropped and logged again
    assert _train_records(run) == _train_records(whole)
    steps = [r["step"] for r in read_metrics(run) if r["kind"] == "train"]
    assert steps == list(range(1, sa["step"] + 1))
    card_a = json.loads((whole / "encoder.json").read_text())["metrics"]
    card_b = json.loads((run / "encoder.json").read_text())["metrics"]
    assert card_a == card_b  # the final loss was carried through the checkpoint


def test_sigkill_in_a_checkpoint_write_and_at_a_random_moment_then_resume(
    store: Path, whole: Path, tmp_path: Path
) -> None:
    _kill_and_resume(store, whole, tmp_path, seed=8, plan=("write", "resumed"))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_many_times_then_resume(store: Path, whole: Path, tmp_path: Path, seed: int) -> None:
    plan = ("write", "checkpoint", "resumed", "checkpoint", "resumed", "resumed")
    _kill_and_resume(store, whole, tmp_path, seed=seed, plan=plan)


def _inject(monkeypatch: pytest.MonkeyPatch, at_call: int, value: float) -> None:
    """PSTL's loss becomes ``value`` (NaN, inf) at the ``at_call``-th training step of this process."""
    real = PSTL.step
    calls = [0]

    def step(self, x, *, generator):
        out = real(self, x, generator=generator)
        calls[0] += 1
        if calls[0] == at_call:
            out = {**out, "loss": out["loss"] * value}
        return out

    monkeypatch.setattr(PSTL, "step", step)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_loss_stops_keeps_the_last_good_checkpoint_and_resumes(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: float
) -> None:
    run = tmp_path / "run"
    _inject(monkeypatch, at_call=7, value=value)
    assert cli.main(_argv(store, run)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    good = run / "checkpoints" / "step-00000006.pt"
    assert err.startswith("error: non-finite loss") and "at step 7" in err
    assert f"the last good checkpoint {good} is kept" in err and "optim.lr" in err and "optim.grad_clip" in err
    assert latest_checkpoint(run / "checkpoints") == good
    state = load_checkpoint(good)
    assert state["step"] == 6 and all(v.isfinite().all() for v in state["model"].values() if v.is_floating_point())
    assert [r["step"] for r in read_metrics(run) if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]

    # with other settings (a lower lr) --resume refuses clearly; once the cause is gone the run continues from it
    with pytest.raises(ConfigError, match="other training settings"):
        pretrain(_cfg(store, "optim.lr=1e-3"), run_dir=run, resume=True, echo=lambda s: None)
    monkeypatch.undo()
    lines: list[str] = []
    cfg = _cfg(store, f"train.checkpoint_every_steps={EVERY}")
    result = pretrain(cfg, run_dir=run, resume=True, max_steps=9, echo=lines.append)
    assert result.step == 9 and lines[0].startswith(f"resumed from {good} at step 6")
    assert [r["step"] for r in read_metrics(run) if r["kind"] == "train"] == list(range(1, 10))


def test_non_finite_weights_are_never_checkpointed(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # a finite loss whose update makes the weights inf: the checkpoint due at that step is refused
    run = tmp_path / "run"
    real = PSTL.after_step

    def after_step(self, step: int):
        if step == 4:
            with torch.no_grad():
                next(self.parameters()).fill_(float("inf"))
        return real(self, step)

    monkeypatch.setattr(PSTL, "after_step", after_step)
    with pytest.raises(TrainingError, match=r"non-finite weights .* after step 4 .*step-00000002\.pt is kept"):
        pretrain(_cfg(store, f"train.checkpoint_every_steps={EVERY}"), run_dir=run, echo=lambda s: None)
    assert [p.name for p in _checkpoints(run)] == ["step-00000002.pt"]


def _enospc(path: object = None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), None if path is None else str(path))


def test_full_disk_during_a_checkpoint_write(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    real_save = torch.save
    calls = [0]

    def save(obj, fh, *args, **kwargs):  # the third checkpoint: half written, then the disk is full
        calls[0] += 1
        if calls[0] == 3:
            fh.write(b"PK\x03\x04" + b"\0" * 1000)
            raise _enospc()
        return real_save(obj, fh, *args, **kwargs)

    monkeypatch.setattr(ckpt_module.torch, "save", save)
    assert cli.main(_argv(store, run)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    kept = run / "checkpoints" / "step-00000004.pt"
    assert "could not save the checkpoint of step 6" in err and "No space left on device" in err
    assert str(run / "checkpoints" / "step-00000006.pt") in err and f"{kept} is kept" in err
    assert "free disk space" in err and "--resume" in err
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step-00000002.pt", kept.name]  # no partial file, no temp file
    assert load_checkpoint(kept)["step"] == 4
    monkeypatch.undo()
    result = pretrain(_cfg(store, f"train.checkpoint_every_steps={EVERY}"), run_dir=run, resume=True, max_steps=8)
    assert result.step == 8 and load_checkpoint(latest_checkpoint(run / "checkpoints"))["step"] == 8


def test_full_disk_during_a_metrics_write(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    calls = [0]

    def fake_open(file, mode="r", *args, **kwargs):
        if "a" in mode:
            calls[0] += 1
            if calls[0] == 6:
                raise _enospc(file)
        return open(file, mode, *args, **kwargs)

    monkeypatch.setattr(metrics_module, "open", fake_open, raising=False)
    assert cli.main(_argv(store, run)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {run / 'metrics.jsonl'}: could not append") and "No space left" in err
    assert "free disk space or choose another --out" in err and "--resume" in err
    assert _assert_every_checkpoint_loads(run) == 4
    monkeypatch.undo()

    # resumed to the end, where the disk is full again while the encoder is exported
    import safetensors.torch

    def full(tensors, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\0" * 100)  # half written
        raise _enospc(filename)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    cfg = _cfg(store, f"train.checkpoint_every_steps={EVERY}")
    assert cli.main([*_argv(store, run), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    final = latest_checkpoint(run / "checkpoints")
    assert len(err.splitlines()) == 1 and str(run / "encoder.safetensors") in err and "No space left" in err, err
    assert f"the final checkpoint {final} is kept" in err and "--resume to export the encoder" in err
    assert not list(run.glob("encoder*")) and not list(run.glob(".encoder*"))
    monkeypatch.undo()
    result = pretrain(cfg, run_dir=run, resume=True, echo=lambda s: None)  # only exports
    assert result.finished and load_checkpoint(final)["step"] == result.step
    assert json.loads((run / "encoder.json").read_text())["metrics"]["final_loss"] == result.last_loss
    steps = [r["step"] for r in read_metrics(run) if r["kind"] == "train"]
    assert steps == list(range(1, result.step + 1))  # step 5 (logged, not checkpointed) is not there twice


def test_unwritable_output_directory_is_a_one_line_error(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    run = locked / "run"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args, **kwargs):  # what a read-only directory (or file system) answers, even to root
        if self == run or locked in self.parents:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert cli.main(_argv(store, run)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {run}: cannot write the run directory here (Permission denied)")
    assert "choose another --out" in err
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_directory(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    for run in (locked / "run", locked):  # a new run inside it, and the directory itself
        locked.chmod(0o555)
        try:
            assert cli.main(_argv(store, run)) == 2
        finally:
            locked.chmod(0o755)
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{run}: cannot write" in err and "choose another --out" in err
    assert list(locked.iterdir()) == []
