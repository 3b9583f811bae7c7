"""How long do the token masks take? ``skelssl.masking.tokens`` against two re-expressions of the references.

For Skeleton2vec's motion-aware tube mask (90 frames, segment 3, tube 5, β 0.1) and MAMP's motion-aware
mask (120 frames, segment 4, τ 0.8), on ``B`` person-sequences of 25 joints (``B = 2 × batch``: two persons
per clip), time:

- **skelssl**: the library function (motion, scores, ``TokenMask`` with keep/mask/restore indices);
- **batched reference**: the reference's own batched recipe re-expressed (argsort of the scores, repeat
  of the restore indices per tube, gather of a ones/zeros mask), giving its mask and indices;
- **per-sample loop**: the same recipe written one sample at a time (what a straightforward port does).

All three produce the same masks for the same draws (checked here). Median of ``--repeats`` timed runs after
a warm-up; prints a table and writes ``benchmarks/results/masks.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange, reduce

from skelssl.masking.tokens import _motion_aware_mask, _motion_aware_tube_mask

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "masks.json"
V = 25


# --- Skeleton2vec: the reference recipe, batched and per sample ------------------------------------------------------


def s2v_batched(x: torch.Tensor, noise: torch.Tensor, *, s: int, tube_len: int, k_vis: int, beta: float):
    """Motion from the clip, tube-pooled and max-normalised, argsort per tube, mask by gather (reference recipe)."""
    n, t, v, _ = x.shape
    motion = F.pad(x[:, 1:] - x[:, :-1], (0, 0, 0, 0, 0, 1)).abs()
    intensity = reduce(motion, "n (tp s) v c -> n tp v", "mean", s=s)
    intensity = rearrange(intensity, "n (k r) v -> n k r v", r=tube_len).mean(dim=2)
    intensity = intensity / (intensity.amax(dim=2, keepdim=True) + 1e-6)
    shuffle = torch.argsort(noise + beta * intensity, dim=-1)
    restore = torch.argsort(shuffle, dim=-1).repeat_interleave(tube_len, dim=1)
    keep = shuffle.repeat_interleave(tube_len, dim=1)[:, :, :k_vis]
    mask = torch.ones(n, t // s, v, device=x.device)
    mask[:, :, :k_vis] = 0
    mask = torch.gather(mask, 2, restore).reshape(n, -1)
    return mask, keep, restore


def s2v_loop(x: torch.Tensor, noise: torch.Tensor, *, s: int, tube_len: int, k_vis: int, beta: float):
    """The same, one sample at a time."""
    out = [
        s2v_batched(x[i : i + 1], noise[i : i + 1], s=s, tube_len=tube_len, k_vis=k_vis, beta=beta)
        for i in range(x.shape[0])
    ]
    return tuple(torch.cat(parts) for parts in zip(*out, strict=True))


# --- MAMP: the reference recipe, batched and per sample -------------------------------------------------------------


def mamp_batched(x: torch.Tensor, uniform: torch.Tensor, *, s: int, k: int, tau: float):
    """Patch motion (first copies second), softmax of m / (τ·max), Gumbel, argsort, mask by gather."""
    n = x.shape[0]
    patches = rearrange(x, "n (tp s) v c -> n tp v (s c)", s=s)
    motion = torch.zeros_like(patches)
    motion[:, 1:] = (patches[:, 1:] - patches[:, :-1]).abs()
    motion[:, 0] = motion[:, 1]
    motion = motion.mean(dim=3).reshape(n, -1)
    prob = F.softmax(motion / (motion.amax(dim=1, keepdim=True) * tau + 1e-10), dim=1)
    scores = torch.log(prob) - torch.log(-torch.log(uniform + 1e-10) + 1e-10)
    shuffle = torch.argsort(scores, dim=1)
    restore = torch.argsort(shuffle, dim=1)
    mask = torch.ones_like(scores)
    mask[:, :k] = 0
    return torch.gather(mask, 1, restore), shuffle[:, :k], restore


def mamp_loop(x: torch.Tensor, uniform: torch.Tensor, *, s: int, k: int, tau: float):
    out = [mamp_batched(x[i : i + 1], uniform[i : i + 1], s=s, k=k, tau=tau) for i in range(x.shape[0])]
    return tuple(torch.cat(parts) for parts in zip(*out, strict=True))


# --- timing ---------------------------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], repeats: int, device: str) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after two warm-ups."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(rows: int, repeats: int, device: str) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(0)
    out = []
    # Skeleton2vec: 90 frames, segment 3, tube 5 → 6 tubes × 25 joints, 2 visible per tube
    x = (torch.randn(rows, 90, V, 3, generator=g) * 0.05).cumsum(dim=1).to(device)
    noise = torch.rand(rows, 6, V, generator=g)
    kw = {"s": 3, "tube_len": 5, "k_vis": 2, "beta": 0.1}
    ours = _motion_aware_tube_mask(x, noise, segment=3, tube_len=5, k_vis=2, beta=0.1)
    nd = noise.to(device)
    assert torch.equal(ours.mask, s2v_batched(x, nd, **kw)[0].bool()) and torch.equal(
        ours.mask, s2v_loop(x, nd, **kw)[0].bool()
    )
    out.append(
        {
            "mask": "skeleton2vec motion-aware tube",
            "rows": rows,
            "skelssl_s": timed(
                lambda: _motion_aware_tube_mask(x, noise, segment=3, tube_len=5, k_vis=2, beta=0.1), repeats, device
            ),
            "batched_reference_s": timed(lambda: s2v_batched(x, nd, **kw), repeats, device),
            "per_sample_loop_s": timed(lambda: s2v_loop(x, nd, **kw), repeats, device),
        }
    )
    # MAMP: 120 frames, segment 4 → 750 tokens, 74 visible
    x = (torch.randn(rows, 120, V, 3, generator=g) * 0.05).cumsum(dim=1).to(device)
    uniform = torch.rand(rows, 750, generator=g)
    ud = uniform.to(device)
    ours = _motion_aware_mask(x, uniform, segment=4, k=74, tau=0.8)
    kw = {"s": 4, "k": 74, "tau": 0.8}
    assert torch.equal(ours.mask, mamp_batched(x, ud, **kw)[0].bool()) and torch.equal(
        ours.mask, mamp_loop(x, ud, **kw)[0].bool()
    )
    out.append(
        {
            "mask": "mamp motion-aware (gumbel)",
            "rows": rows,
            "skelssl_s": timed(lambda: _motion_aware_mask(x, uniform, segment=4, k=74, tau=0.8), repeats, device),
            "batched_reference_s": timed(lambda: mamp_batched(x, ud, **kw), repeats, device),
            "per_sample_loop_s": timed(lambda: mamp_loop(x, ud, **kw), repeats, device),
        }
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[16, 256], help="person-sequences (2 × clips)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable on a shared machine)")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = [row for rows in args.rows for row in bench(rows, args.repeats, args.device)]
    print(f"token masks, median ms per call ({args.device}, {torch.get_num_threads()} threads)")
    print(f"  {'mask':<32}{'rows':>6}{'skelssl':>10}{'batched ref':>13}{'loop':>10}{'loop / skelssl':>16}")
    for r in table:
        speedup = r["per_sample_loop_s"] / r["skelssl_s"]
        print(
            f"  {r['mask']:<32}{r['rows']:>6}{r['skelssl_s'] * 1e3:>10.3f}{r['batched_reference_s'] * 1e3:>13.3f}"
            f"{r['per_sample_loop_s'] * 1e3:>10.3f}{speedup:>15.1f}x"
        )
    result = {"device": args.device, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "rows": table}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
