"""Steady-state speed of a full PSTL training step beside its FLOP floor, measured in the same run.

A step is what the engine does per batch: the method's forward (stream, three augmentation chains, MATM,
CSM, three ST-GCN passes, the 3 × 6144 projector, two Barlow Twins terms), backward, and a fused Adam
update (``build_optimizer(..., fused="auto")``, lr 5e-3, wd 1e-5 as the reference). Reference
configuration: batch 32 of ``(M, T, V, C) = (2, 50, 25, 3)`` ``ntu25`` clips — the 5 real NTU RGB+D
samples in ``../shared/data/ntu60-samples`` through the PSTL frame50 pipeline, tiled to the batch (random
smooth trajectories when the data are absent).

The floor is the step's FLOPs — counted with ``torch.utils.flop_counter.FlopCounterMode`` on the very same
steps (same generator states, so the same CSM joint counts), forward + backward, matmuls and convolutions;
Adam and elementwise work are not counted — divided by this machine's measured fp32 matmul rate (best of
several ``torch.mm`` of 4096 × 4096, same thread count). ``ratio`` = s/step ÷ floor s/step.

Variants: ``reference`` (augmentation and masks drawn once per batch, as the PSTL code), ``per-sample``
(per-sample augmentation, MATM and reference CSM sets with a shared count), ``per-sample-exact``
(exactly 8 joints per sample) and ``skeletonbt`` (the two-view baseline). The variants' timed steps are
interleaved (one step of each in turn), so load from other processes hits them alike; s/step is the
median. For the first variant a profiled step splits the time by operator family.

Public-code reference point (the issue, this machine kind): 12.6 s/step of 32 clips (2.5 clips/s),
≈ 341 GFLOP/step at ≈ 121 GFLOP/s, i.e. ≈ 4.5× its floor. Prints a table and writes
``benchmarks/results/pstl_step.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from _step import environment, finish, matmul_gflops, ntu_clips, sync, time_split
from skelssl.data.clips import ClipConfig
from skelssl.engine.optim import build_optimizer
from skelssl.methods.pstl import PSTL, PSTLConfig

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "pstl_step.json"

PUBLIC = {"s_per_step": 12.6, "clips_per_s": 2.5, "gflop_per_step": 341.0, "matmul_gflops": 121.0}
VARIANTS: dict[str, dict[str, Any]] = {
    "reference": {},
    "per-sample": {"batch_shared": False},
    "per-sample-exact": {"batch_shared": False, "csm_mode": "exact"},
    "skeletonbt": {"baseline": True},
}
# operator families for the time split (profiler self time; the first family whose pattern is in the name)
FAMILIES = {
    "convolution (ST-GCN 1x1 / 9x1)": ("convolution",),
    "graph einsum (bmm)": ("bmm",),
    "projector / loss matmul (mm)": ("aten::mm", "addmm"),
    "dropout RNG (bernoulli)": ("bernoulli", "native_dropout", "fused_dropout"),
    "batch norm": ("batch_norm",),
    "copies / layout": ("copy_", "clone", "contiguous", "aten::cat", "index_select", "gather", "take_along_dim"),
    "optimiser (fused Adam)": ("_fused_adam", "adam"),
}


class Runner:
    """One variant's method, fused Adam and generator; ``step()`` is one full training step."""

    def __init__(self, name: str, x: torch.Tensor, *, device: str) -> None:
        torch.manual_seed(0)
        self.name, self.device, self.x = name, device, x.to(device)
        self.method = PSTL(layout="ntu25", config=PSTLConfig(**VARIANTS[name])).to(device).train()
        self.optimizer = build_optimizer(self.method, name="adam", lr=5e-3, weight_decay=1e-5, fused="auto")
        self.generator = torch.Generator().manual_seed(0)
        self.times: list[float] = []
        self.dropped: list[float] = []
        self.start_state: torch.Tensor | None = None

    def step(self) -> None:
        out = self.method(self.x, generator=self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        self.optimizer.step()
        if "csm_dropped" in out:
            self.dropped.append(float(out["csm_dropped"]))

    def timed_step(self) -> None:
        if self.start_state is None:
            self.start_state = self.generator.get_state()
            self.dropped.clear()
        sync(self.device)
        start = time.perf_counter()
        self.step()
        sync(self.device)
        self.times.append(time.perf_counter() - start)

    def count_flops(self) -> tuple[float, dict[str, float]]:
        """FLOPs per step (forward + backward) of the timed steps, replayed from the same generator state."""
        assert self.start_state is not None
        self.generator.set_state(self.start_state)
        counter = FlopCounterMode(display=False)
        with counter:
            for _ in self.times:
                out = self.method(self.x, generator=self.generator)
                self.optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
        steps = len(self.times)
        by_op = {str(op): n / steps / 1e9 for op, n in counter.get_flop_counts().get("Global", {}).items()}
        return counter.get_total_flops() / steps, by_op

    def row(self) -> dict[str, Any]:
        flops, by_op = self.count_flops()
        return {
            "variant": self.name,
            "device": self.device,
            "config": VARIANTS[self.name],
            "s_per_step_median": statistics.median(self.times),
            "s_per_step_best": min(self.times),
            "step_times": self.times,
            "gflop_per_step": flops / 1e9,
            "gflop_by_op": by_op,
            "csm_dropped_mean": statistics.mean(self.dropped) if self.dropped else None,
        }


def run_device(device: str, names: list[str], x: torch.Tensor, *, warmup: int, steps: int) -> list[dict[str, Any]]:
    """Time every variant on ``device``, one step of each in turn (external load hits them alike)."""
    runners = [Runner(name, x, device=device) for name in names]
    for runner in runners:
        for _ in range(warmup):
            runner.step()
    for _ in range(steps):
        for runner in runners:
            runner.timed_step()
    rows = []
    for i, runner in enumerate(runners):
        row = runner.row()
        if i == 0:
            row["time_split"] = time_split(runner.step, device, FAMILIES)
        rows.append(row)
        print(f"  {device} {runner.name}: {row['s_per_step_median']:.3f} s/step (median of {steps})", flush=True)
    return rows


def table(rows: list[dict[str, Any]], batch: int) -> str:
    head = (
        f"{'device':<7}{'variant':<18}{'clips/s':>9}{'s/step':>9}{'best s':>8}{'GFLOP/step':>12}{'mm GFLOP/s':>12}"
        f"{'floor s':>9}{'ratio':>7}{'x public':>10}"
    )
    lines = [head, "-" * len(head)]
    pub = PUBLIC
    pub_floor = pub["gflop_per_step"] / pub["matmul_gflops"]
    lines.append(
        f"{'cpu':<7}{'public PSTL code':<18}{pub['clips_per_s']:>9.2f}{pub['s_per_step']:>9.2f}{'':>8}"
        f"{pub['gflop_per_step']:>12.0f}{pub['matmul_gflops']:>12.0f}{pub_floor:>9.2f}"
        f"{pub['s_per_step'] / pub_floor:>7.2f}{1.0:>10.2f}"
    )
    for r in rows:
        s = r["s_per_step_median"]
        lines.append(
            f"{r['device']:<7}{r['variant']:<18}{batch / s:>9.2f}{s:>9.3f}{r['s_per_step_best']:>8.3f}"
            f"{r['gflop_per_step']:>12.1f}"
            f"{r['matmul_gflops']:>12.0f}{r['floor_s_per_step']:>9.3f}{r['ratio_to_floor']:>7.2f}"
            f"{r['x_public'] if r['device'] == 'cpu' else float('nan'):>10.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x, source = ntu_clips(ClipConfig.pstl(frames=50), args.batch)
    load_before = os.getloadavg()
    rows = []
    for device in args.devices:
        rate = matmul_gflops(device)
        rows += run_device(device, args.variants, x, warmup=args.warmup, steps=args.steps)
        rate = max(rate, matmul_gflops(device))  # the better of before/after: the floor is a lower bound
        for row in rows:
            if row["device"] == device:
                s = row["s_per_step_median"]
                row["matmul_gflops"] = rate
                row["clips_per_s"] = args.batch / s
                row["floor_s_per_step"] = row["gflop_per_step"] / rate
                row["ratio_to_floor"] = s / row["floor_s_per_step"]
                row["x_public"] = row["clips_per_s"] / PUBLIC["clips_per_s"]
    result = {
        "batch": args.batch,
        "clip": [2, 50, 25, 3],
        "input": source,
        "warmup": args.warmup,
        "steps": args.steps,
        **environment(load_before),
        "public_code": PUBLIC,
        "rows": rows,
    }
    print(f"\nPSTL step, batch {args.batch} x (2, 50, 25, 3) ntu25, projector 3x6144 ({source})")
    print(table(rows, args.batch))
    finish(result, args.json, label=lambda row: f"{row['device']} {row['variant']}")


if __name__ == "__main__":
    main()
