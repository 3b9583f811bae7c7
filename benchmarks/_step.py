"""Pieces shared by the step benchmarks (``pstl_step.py``, ``s2v_step.py``): real input clips, device sync, the
matmul rate behind the FLOP floor, the profiler's time split, and the common tail of the JSON report."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import default_collate

from skelssl.data.clips import ClipConfig, ClipDataset
from skelssl.data.importers import get_importer_class
from skelssl.data.prepare import prepare_store
from skelssl.data.store import SkeletonStore

ROOT = Path(__file__).resolve().parents[1]
NTU = ROOT.parent / "shared" / "data" / "ntu60-samples" / "skeletons"


def ntu_clips(config: ClipConfig, batch: int) -> tuple[torch.Tensor, str]:
    """``(batch, 2, T, 25, 3)`` clips of ``config``'s pipeline: the real NTU samples, tiled; else random smooth
    trajectories. Returns the clips and a description of the source."""
    if NTU.is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            prepare_store(get_importer_class("ntu60")(NTU), Path(tmp) / "ntu")
            store = SkeletonStore.open(Path(tmp) / "ntu")
            dataset = ClipDataset(store=store, config=config)
            x = default_collate([dataset[i] for i in range(len(dataset))])["x"]
        reps = -(-batch // x.shape[0])
        return x.repeat(reps, 1, 1, 1, 1)[:batch].contiguous(), f"{len(dataset)} real NTU samples, tiled"
    g = torch.Generator().manual_seed(0)
    frames = int(config.frames)  # type: ignore[arg-type]
    return torch.randn(batch, 2, frames, 25, 3, generator=g).cumsum(dim=2) * 0.05, "random smooth trajectories"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_gflops(device: str, dtype: torch.dtype = torch.float32, size: int = 4096, repeats: int = 6) -> float:
    """Best-of-``repeats`` ``torch.mm`` rate (GFLOP/s) on ``device`` in ``dtype``."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def time_split(step: Callable[[], Any], device: str, families: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Seconds of one profiled step per operator family (profiler self time; overhead inflates the total); an
    operator goes to the first family with a pattern in its name, else to ``other``."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        step()
        sync(device)
    split = dict.fromkeys([*families, "other"], 0.0)
    for event in prof.key_averages():
        seconds = (event.self_device_time_total if device.startswith("cuda") else event.self_cpu_time_total) / 1e6
        family = next((f for f, names in families.items() if any(n in event.key for n in names)), "other")
        split[family] += seconds
    return split


def environment(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """What the machine was: torch, threads, CPU, GPU and the load average before / after the run."""
    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def finish(result: dict[str, Any], json_path: Path, label: Callable[[dict[str, Any]], str]) -> None:
    """Print the load average and each row's time split (``label(row)`` names the row), then write the JSON."""
    before, after = (f"{v[0]:.2f}" for v in (result["load_average_before"], result["load_average_after"]))
    print(f"  1-min load average before / after: {before} / {after} on {os.cpu_count()} CPUs (other processes slow it)")
    for row in result["rows"]:
        if "time_split" in row:
            total = sum(row["time_split"].values())
            parts = ", ".join(f"{k} {v:.2f}s" for k, v in sorted(row["time_split"].items(), key=lambda kv: -kv[1]))
            print(f"  time split ({label(row)}, profiled step {total:.2f}s): {parts}")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2))
    print(f"wrote {json_path}")
