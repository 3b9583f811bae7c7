"""Distributed correctness on CPU (gloo): per-epoch reshuffling, only rank 0 writes, a failing rank stops the job.

The sampler is checked in-process against PyTorch's documented ``DistributedSampler`` algorithm (a
``randperm`` seeded with ``seed + epoch``, padded or cut to a multiple of the world size, rank ``r`` taking
every ``world``-th index from ``r``). The 2-process runs go through ``torch.distributed.run`` with a small
wrapper script written by the test (no production debug flag): it records, per rank, every file write under
the run directory (Python audit hooks: ``open`` for writing, ``os.mkdir``/``os.rename``/``os.remove``…) and the
sampler's order per epoch, or makes rank 1 fail at a given step.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from skelssl import cli
from skelssl.config import load_config
from skelssl.configs import resolve
from skelssl.data.loader import make_loader
from skelssl.data.store import SkeletonStore
from skelssl.engine.metrics import read_metrics
from skelssl.engine.pretrain import PretrainConfig, pretrain
from tests.engine.tiny import TINY_PSTL

PRESET = "pstl/ntu60-xview"
TINY = [*TINY_PSTL, "train.knn_every_epochs=0"]

WRAPPER = r"""
import atexit, json, os, sys

rank = int(os.environ.get("RANK", "0"))
report = os.path.join(os.environ["SKELSSL_TEST_REPORT"], f"rank{rank}.json")
watch = os.path.realpath(os.environ["SKELSSL_TEST_WATCH"])
writes, orders = [], []
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
EVENTS = ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.truncate", "os.link", "os.symlink", "shutil.rmtree")


def _under_watch(path):
    if isinstance(path, int) or path is None:
        return False
    path = os.path.realpath(os.fsdecode(path))
    return path == watch or path.startswith(watch + os.sep)


def audit(event, args):
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE)
        if writing and _under_watch(path):
            writes.append(["open", os.fsdecode(path)])
    elif event in EVENTS:
        for path in args[:2]:
            if isinstance(path, (str, bytes, os.PathLike)) and _under_watch(path):
                writes.append([event, os.fsdecode(path)])


sys.addaudithook(audit)

from skelssl.data.loader import EpochSampler

_iter = EpochSampler.__iter__


def recording_iter(self):
    keys = list(_iter(self))
    orders.append({"epoch": self.epoch, "skip": self.skip, "positions": [p for _, p in keys]})
    return iter(keys)


EpochSampler.__iter__ = recording_iter

fail_step = int(os.environ.get("SKELSSL_TEST_FAIL_STEP", "0"))
if fail_step and rank == int(os.environ.get("SKELSSL_TEST_FAIL_RANK", "1")):
    from skelssl.methods.pstl import PSTL

    _step, calls = PSTL.step, [0]

    def failing_step(self, x, *, generator):
        calls[0] += 1
        if calls[0] == fail_step:
            raise RuntimeError(f"injected failure on rank {rank} at step {fail_step}")
        return _step(self, x, generator=generator)

    PSTL.step = failing_step


def dump():
    with open(report, "w") as fh:
        json.dump({"writes": writes, "orders": orders}, fh)


atexit.register(dump)
from skelssl.cli import main

sys.exit(main(sys.argv[1:]))
"""


pytestmark = pytest.mark.usefixtures("restore_torch_globals")


# -------------------------------------------------------------------------------------------- sampler
class _Keys(Dataset):
    """Returns the position of each ``(epoch, position)`` key, so a batch shows which items it holds."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: tuple[int, int]) -> int:
        return key[1]


def _reference_shard(n: int, world: int, rank: int, seed: int, epoch: int, drop_last: bool) -> list[int]:
    """PyTorch's documented DistributedSampler algorithm, written out."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    if drop_last:
        per = n // world
        order = order[: per * world]
    else:
        per = -(-n // world)
        while len(order) < per * world:
            order += order[: per * world - len(order)]
    return order[rank::world]


def _epoch(loader, epoch: int, skip_batches: int = 0) -> list[int]:
    loader.set_epoch(epoch, skip_batches=skip_batches)
    return [int(i) for batch in loader for i in batch]


@pytest.mark.parametrize(("n", "world", "drop_last"), [(90, 2, True), (91, 2, False), (91, 2, True), (50, 3, False)])
def test_every_rank_reshuffles_each_epoch_and_the_ranks_partition_the_data(n, world, drop_last):
    loaders = [
        make_loader(
            _Keys(n),
            batch_size=4,
            shuffle=True,
            seed=7,
            distributed=True,
            rank=r,
            world_size=world,
            drop_last=drop_last,
        )
        for r in range(world)
    ]
    per_epoch = []
    for epoch in range(3):
        shards = [_epoch(loader, epoch) for loader in loaders]
        for r, shard in enumerate(shards):
            expected = _reference_shard(n, world, r, 7, epoch, drop_last)
            if drop_last:  # the loader's own drop_last also drops each rank's incomplete last batch
                expected = expected[: len(expected) // 4 * 4]
            assert shard == expected
        seen = [i for shard in shards for i in shard]
        if drop_last:
            assert len(set(seen)) == len(seen)  # disjoint within the epoch
            assert len(seen) == (n // world) // 4 * 4 * world
        else:
            assert set(seen) == set(range(n))  # together they cover the dataset …
            assert len(seen) - n == -n % world  # … with only DistributedSampler's padding seen twice
        per_epoch.append(shards)
    for r in range(world):  # every rank's order differs from epoch to epoch, and its items too
        assert per_epoch[0][r] != per_epoch[1][r] != per_epoch[2][r]
        assert set(per_epoch[0][r]) != set(per_epoch[1][r])
    # the same epoch again (another process, a resumed run) gives the same order; skip_batches resumes within it
    again = make_loader(
        _Keys(n), batch_size=4, shuffle=True, seed=7, distributed=True, rank=1, world_size=world, drop_last=drop_last
    )
    assert _epoch(again, 1) == per_epoch[1][1]
    assert _epoch(again, 1, skip_batches=2) == per_epoch[1][1][8:]


# -------------------------------------------------------------------------------------- 2-process runs
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(
    store: Path, run: Path, report: Path, script: Path, timeout: float, **env_extra: str
) -> tuple[subprocess.CompletedProcess, float]:
    script.write_text(WRAPPER)
    report.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
        "SKELSSL_TEST_REPORT": str(report),
        "SKELSSL_TEST_WATCH": str(run),
        **env_extra,
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", str(script), "pretrain", PRESET, "--data", str(store), "--out", str(run),
        *TINY,
    ]  # fmt: skip
    start = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    return res, time.monotonic() - start


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*")}


def test_two_processes_only_rank_0_writes_and_both_reshuffle(small_ucla_store: Path, tmp_path: Path) -> None:
    run, report = tmp_path / "ddp", tmp_path / "report"
    res, _ = _torchrun(small_ucla_store, run, report, tmp_path / "wrapper.py", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[1]["writes"] == []  # rank 1 never opened, created, renamed or removed anything in the run
    written = {Path(p).name for _, p in ranks[0]["writes"]}
    assert {"metrics.jsonl", "checkpoints", "encoder.json"} <= written  # (the audit does see rank 0's writes)

    # the run directory holds what a single-process run writes, and the metrics have one writer
    single = tmp_path / "one"
    result = pretrain(
        load_config(PretrainConfig, resolve(PRESET), [f"data.store={small_ucla_store}", *TINY]), run_dir=single
    )
    assert _files(run) == _files(single)
    steps = [r["step"] for r in read_metrics(run) if r["kind"] == "train"]
    assert steps == list(range(1, result.step + 1))

    # each rank's order: the documented DistributedSampler shard, different every epoch, disjoint across ranks
    n = len(SkeletonStore.open(small_ucla_store).split_indices("xview", "train"))
    for epoch in range(2):
        shards = []
        for r in (0, 1):
            (order,) = [o["positions"] for o in ranks[r]["orders"] if o["epoch"] == epoch]
            assert order == _reference_shard(n, 2, r, 1, epoch, drop_last=True)
            shards.append(order)
        assert not set(shards[0]) & set(shards[1]) and len(shards[0]) + len(shards[1]) == n // 2 * 2
    for r in (0, 1):
        assert ranks[r]["orders"][0]["positions"] != ranks[r]["orders"][1]["positions"]


def test_a_failing_rank_stops_the_job_with_its_error(small_ucla_store: Path, tmp_path: Path) -> None:
    run, report = tmp_path / "ddp", tmp_path / "report"
    limit = 120.0
    try:
        res, seconds = _torchrun(
            small_ucla_store, run, report, tmp_path / "wrapper.py", timeout=limit, SKELSSL_TEST_FAIL_STEP="3"
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"rank 0 hung after rank 1 failed: the job was still running after {limit:.0f} s")
    assert res.returncode != 0
    output = res.stdout + res.stderr
    assert "injected failure on rank 1 at step 3" in output, output[-3000:]
    # the launcher's failure summary names rank 1's error as the root cause (skelssl hands it the error)
    assert "injected failure on rank 1" in output.rpartition("Root Cause")[2], output[-3000:]
    assert seconds < limit
    assert not (run / "encoder.safetensors").exists()


def test_a_rank_names_itself_in_one_line_errors(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert cli.main(["pretrain", PRESET, "train.batchsize=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error (rank 1): ") and "train.batch_size" in err and len(err.splitlines()) == 1
