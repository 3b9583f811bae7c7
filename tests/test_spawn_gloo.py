"""The ``spawn_gloo`` fixture itself: a hung rank fails the test after its timeout instead of stalling the suite."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch.distributed as dist


def _one_rank_waits_forever(rank: int, world: int, out_dir: Path) -> None:
    if rank == 0:
        time.sleep(3600)
    dist.barrier()


def _rank_one_raises(rank: int, world: int, out_dir: Path) -> None:
    if rank == 1:
        raise ValueError("rank one broke")


def test_a_hung_group_fails_after_the_timeout(spawn_gloo):
    start = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="still going after 5 s"):
        spawn_gloo(_one_rank_waits_forever, 2, timeout=5)
    assert time.monotonic() - start < 60


def test_an_exception_in_a_rank_fails_the_test(spawn_gloo):
    with pytest.raises(Exception, match="rank one broke"):
        spawn_gloo(_rank_one_raises, 2)
