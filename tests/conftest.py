"""Shared test fixtures: the real datasets in ``../shared/data`` beside the project root."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    env = os.environ.get("SKELSSL_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real datasets (NTU samples, NW-UCLA, SBU, Florence3D, UTKinect)."""
    path = _shared_data()
    if not path.is_dir():
        pytest.fail(f"real test data not found at {path}; set SKELSSL_SHARED_DATA to the shared/data folder")
    return path


@pytest.fixture(scope="session")
def small_ucla_store(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real NW-UCLA store (actions 1–4 of subjects 1–2, all views: kinect20, split ``xview``), built once
    per session. Read-only: tests that change a store build their own."""
    from skelssl.data.importers import get_importer_class
    from skelssl.data.prepare import prepare_store

    src = tmp_path_factory.mktemp("small_ucla") / "all_sqe"
    src.mkdir()
    for f in sorted((shared_data / "nw-ucla" / "all_sqe").glob("a0[1-4]_s0[1-2]_*.json")):
        shutil.copy(f, src / f.name)
    out = src.parent / "store"
    prepare_store(get_importer_class("nw-ucla")(src), out)
    return out


@pytest.fixture
def restore_torch_globals() -> Iterator[None]:
    """In-process runs set torch's thread count and deterministic mode: give the other tests theirs back."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


GLOO_TIMEOUT_S = 180.0
"""How long a spawned gloo group may run before the test fails (and its processes are killed) instead of hanging."""

RankBody = Callable[[int, int, Path], "dict[str, torch.Tensor] | None"]


def _gloo_rank(rank: int, world: int, init: str, out_dir: str, body: RankBody) -> None:
    """One spawned rank: one thread, a gloo group over a ``file://`` store, ``body(rank, world, out_dir)``; what the
    body returns is saved to ``out_dir/rank{rank}.pt`` for the test."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        result = body(rank, world, Path(out_dir))
        torch.save(result or {}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture
def spawn_gloo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[dict[str, torch.Tensor]]]:
    """``spawn_gloo(body, world)`` runs the module-level ``body(rank, world, tmp_path)`` in ``world`` fresh processes
    joined by a gloo group on loopback and returns what each rank's body returned (a dict of tensors, ``{}`` for
    none), in rank order; a rank's exception fails the test, and so does a group still running after
    ``GLOO_TIMEOUT_S`` (its processes are killed: a hung collective must not stall the suite)."""
    if "GLOO_SOCKET_IFNAME" not in os.environ:
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # loopback: no network needed

    def run(body: RankBody, world: int, *, timeout: float = GLOO_TIMEOUT_S) -> list[dict[str, torch.Tensor]]:
        init = f"file://{tmp_path / 'rendezvous'}"
        ctx = mp.spawn(_gloo_rank, args=(world, init, str(tmp_path), body), nprocs=world, join=False)
        deadline = time.monotonic() + timeout
        while not ctx.join(timeout=max(deadline - time.monotonic(), 0.0)):
            if time.monotonic() >= deadline:
                for proc in ctx.processes:
                    proc.kill()
                    proc.join()
                pytest.fail(f"{world} gloo processes running {body.__name__} still going after {timeout:.0f} s")
        return [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(world)]

    return run
