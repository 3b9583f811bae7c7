"""Steady-state speed of a full Skeleton2vec step and a full MAMP step beside their FLOP floors, same run.

A step is what the engine does per batch:

- **Skeleton2vec** (reference configuration, spec §2): rotation, motion-aware tube masking of the ``N·M``
  person sequences (60 visible of 750 tokens), the 8 × 256 student on the visible tokens, the 3-block decoder
  and feature head on all tokens (head on the masked ones), the EMA teacher on the unmasked clip (no grad),
  top-8 instance-normalised targets, MSE; backward; gradient clipping at 4; fused AdamW (lr 1e-3, betas
  0.9/0.95, wd 0.05 with the reference's no-decay groups); the EMA update of the teacher.
- **MAMP** (spec §3): rotation, motion-aware Gumbel masking (74 of 750 tokens), the 8 × 256 encoder on the
  visible tokens, the 3-block decoder with the 12-d motion head, per-patch-normalised motion targets, MSE;
  backward; fused AdamW.

Input: batch ``N`` of ``(M, T, V, C) = (2, 90 | 120, 25, 3)`` ``ntu25`` clips — the 5 real NTU RGB+D samples in
``../shared/data/ntu60-samples`` through each method's clip pipeline, tiled to the batch (random smooth
trajectories when the data are absent).

The floor is each step's FLOPs — counted with ``torch.utils.flop_counter.FlopCounterMode`` on the very same
steps (same generator states), forward + backward (attention included; the optimiser, EMA and elementwise work
are not counted; torch's counter misses the CPU flash-attention kernels, so they are added with its own
attention formula) — divided by this machine's measured fp32 matmul rate (best of several ``torch.mm`` of
4096 × 4096, same thread count; on a GPU with ``--amp bf16`` the bf16 rate). ``ratio`` = s/step ÷ floor s/step.
The two methods' timed steps are interleaved (one of each in turn), so load from other processes hits them
alike; s/step is the median.

Public-code reference point (the issue, this machine kind): Skeleton2vec's dev-branch code takes ≈ 20.5 s per
step of 8 clips (0.39 clips/s) for ≈ 520 GFLOP/step at ≈ 121 GFLOP/s, i.e. ≈ 4.8× its floor.

    python benchmarks/s2v_step.py                        # CPU, batch 8
    python benchmarks/s2v_step.py --device cuda --batch 64 --amp bf16 --compile

Prints a table and writes ``benchmarks/results/s2v_step.json`` (``--json`` to change).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from _step import environment, finish, matmul_gflops, ntu_clips, sync, time_split
from skelssl.data.clips import ClipConfig
from skelssl.engine.optim import build_optimizer
from skelssl.methods.base import Method
from skelssl.methods.mamp import MAMP
from skelssl.methods.skeleton2vec import Skeleton2vec
from skelssl.models.blocks import Block

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "s2v_step.json"

PUBLIC = {"s_per_step": 20.5, "clips_per_s": 0.39, "gflop_per_step": 520.0, "matmul_gflops": 121.0, "batch": 8}
METHODS = {"skeleton2vec": ClipConfig.skeleton2vec, "mamp": ClipConfig.mamp}
FAMILIES = {
    "attention (sdpa)": ("scaled_dot_product", "_flash_attention", "_efficient_attention"),
    "linear (mm / addmm)": ("aten::mm", "addmm", "aten::bmm", "aten::linear"),
    "patch conv": ("convolution",),
    "layer norm": ("layer_norm",),
    "gelu": ("gelu",),
    "copies / layout": ("copy_", "clone", "contiguous", "aten::cat", "gather", "scatter", "index"),
    "optimiser / EMA (foreach, fused)": ("_fused_adam", "_foreach", "adamw"),
}


def _sdpa_cpu_flops(query, key, value, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward_flops(grad_out, query, key, value, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# torch's FLOP counter knows the CUDA attention kernels but not the CPU flash-attention ones: count them the same way
ATTENTION_FLOPS: dict[Any, Any] = {}
for _name, _fn in (
    ("_scaled_dot_product_flash_attention_for_cpu", _sdpa_cpu_flops),
    ("_scaled_dot_product_flash_attention_for_cpu_backward", _sdpa_cpu_backward_flops),
):
    if hasattr(torch.ops.aten, _name):
        ATTENTION_FLOPS[getattr(torch.ops.aten, _name)] = _fn


class Runner:
    """One method with its optimiser and generator; ``step()`` is one full training step as the engine runs it."""

    def __init__(self, name: str, batch: int, *, device: str, amp: str, compile_blocks: bool) -> None:
        self.name, self.device = name, device
        x, self.source = ntu_clips(METHODS[name](), batch)
        self.x = x.to(device)
        init = torch.Generator().manual_seed(0)
        frames = x.shape[2]  # the preset's clip length (90 / 120)
        self.method: Method
        if name == "skeleton2vec":
            self.method = Skeleton2vec(layout="ntu25", frames=frames, init_generator=init)
            no_decay = ("temporal_pos", "spatial_pos")
            self.clip: float | None = 4.0
        else:
            self.method = MAMP(layout="ntu25", frames=frames, init_generator=init)
            no_decay = ()
            self.clip = None
        self.method.to(device).train()
        if compile_blocks:  # the transformer blocks: the bulk of the FLOPs, static shapes per call site
            for module in self.method.modules():
                if isinstance(module, Block):
                    module.compile()
        self.optimizer = build_optimizer(
            self.method,
            name="adamw",
            lr=1e-3,
            betas=(0.9, 0.95),
            weight_decay=0.05,
            no_decay_norm_bias=True,
            no_decay_names=no_decay,
            fused="auto",
        )
        self.autocast: Any = (
            torch.autocast(
                device_type=torch.device(device).type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16
            )
            if amp != "none"
            else nullcontext()
        )
        self.scaler = torch.amp.GradScaler(enabled=amp == "fp16" and device.startswith("cuda"))
        self.generator = torch.Generator().manual_seed(0)
        self.times: list[float] = []
        self.count = 0
        self.start_state: torch.Tensor | None = None

    def forward_backward(self) -> None:
        with self.autocast:
            out = self.method(self.x, generator=self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out["loss"]).backward()

    def step(self) -> None:
        self.forward_backward()
        if self.clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.method.parameters(), self.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.count += 1
        self.method.after_step(self.count)

    def timed_step(self) -> None:
        if self.start_state is None:
            self.start_state = self.generator.get_state()
        sync(self.device)
        start = time.perf_counter()
        self.step()
        sync(self.device)
        self.times.append(time.perf_counter() - start)

    def count_flops(self) -> tuple[float, dict[str, float]]:
        """FLOPs per step (forward + backward) of the timed steps, replayed from the same generator state."""
        assert self.start_state is not None
        self.generator.set_state(self.start_state)
        counter = FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOPS)
        steps = min(len(self.times), 2)
        with counter:
            for _ in range(steps):
                self.forward_backward()
        by_op = {str(op): n / steps / 1e9 for op, n in counter.get_flop_counts().get("Global", {}).items()}
        return counter.get_total_flops() / steps, by_op


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'device':<7}{'step':<22}{'batch':>6}{'clips/s':>9}{'s/step':>9}{'best s':>8}{'GFLOP/step':>12}"
        f"{'mm GFLOP/s':>12}{'floor s':>9}{'ratio':>7}{'x public':>10}"
    )
    lines = [head, "-" * len(head)]
    pub = PUBLIC
    pub_floor = pub["gflop_per_step"] / pub["matmul_gflops"]
    lines.append(
        f"{'cpu':<7}{'public S2V code':<22}{pub['batch']:>6}{pub['clips_per_s']:>9.2f}{pub['s_per_step']:>9.2f}{'':>8}"
        f"{pub['gflop_per_step']:>12.0f}{pub['matmul_gflops']:>12.0f}{pub_floor:>9.2f}"
        f"{pub['s_per_step'] / pub_floor:>7.2f}{1.0:>10.2f}"
    )
    for r in rows:
        s = r["s_per_step_median"]
        x_public = r["x_public"] if r["device"] == "cpu" and r["method"] == "skeleton2vec" else float("nan")
        lines.append(
            f"{r['device']:<7}{r['method']:<22}{r['batch']:>6}{r['clips_per_s']:>9.2f}{s:>9.3f}"
            f"{r['s_per_step_best']:>8.3f}{r['gflop_per_step']:>12.1f}{r['matmul_gflops']:>12.0f}"
            f"{r['floor_s_per_step']:>9.3f}{r['ratio_to_floor']:>7.2f}{x_public:>10.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None, help="clips per step (default: 8 on CPU, 64 on a GPU)")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    parser.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-operator time split")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    batch = args.batch or (64 if device.startswith("cuda") else 8)
    load_before = os.getloadavg()
    rate_dtype = torch.bfloat16 if args.amp == "bf16" else torch.float16 if args.amp == "fp16" else torch.float32
    rate = matmul_gflops(device, rate_dtype)
    runners = [Runner(n, batch, device=device, amp=args.amp, compile_blocks=args.compile) for n in args.methods]
    for runner in runners:
        for _ in range(args.warmup):
            runner.step()
    for _ in range(args.steps):
        for runner in runners:
            runner.timed_step()
    rate = max(rate, matmul_gflops(device, rate_dtype))  # the better of before/after: the floor is a lower bound
    rows = []
    for runner in runners:
        s = statistics.median(runner.times)
        flops, by_op = runner.count_flops()
        row = {
            "method": runner.name,
            "device": device,
            "batch": batch,
            "clip": list(runner.x.shape[1:]),
            "input": runner.source,
            "amp": args.amp,
            "compile": args.compile,
            "s_per_step_median": s,
            "s_per_step_best": min(runner.times),
            "step_times": runner.times,
            "clips_per_s": batch / s,
            "gflop_per_step": flops / 1e9,
            "gflop_by_op": by_op,
            "matmul_gflops": rate,
            "floor_s_per_step": flops / 1e9 / rate,
            "ratio_to_floor": s / (flops / 1e9 / rate),
            "x_public": (batch / s) / PUBLIC["clips_per_s"],
        }
        if not args.no_profile:
            row["time_split"] = time_split(runner.step, device, FAMILIES)
        rows.append(row)
        print(f"  {device} {runner.name}: {s:.3f} s/step (median of {args.steps})", flush=True)
    result = {
        "warmup": args.warmup,
        "steps": args.steps,
        **environment(load_before),
        "public_code": PUBLIC,
        "rows": rows,
    }
    print(f"\nSkeleton2vec / MAMP steps on {device}, batch {batch}, amp {args.amp}, compile {args.compile}")
    print(table(rows))
    finish(result, args.json, label=lambda row: row["method"])


if __name__ == "__main__":
    main()
