"""Is data loading ever the bottleneck? Clips/s of the data path beside the encoder's consumption rate.

In one run, on the real NW-UCLA store (prepared on the fly from ``../shared/data/nw-ucla``):

- **data path**: store → ``ClipDataset`` (normalise + temporal view) → ``DataLoader`` (0, 1, 2 workers)
  → batch on the device → PSTL augmentation chain (three independent views, as a PSTL step draws them);
- **consumer**: the PSTL-configuration ST-GCN (quarter width, ``ntu25``-sized graph of the store's
  layout) doing forward + backward on the three views of the same batches.

The data path must keep up: its clips/s should exceed the consumer's. Prints a table and writes
``benchmarks/results/pipeline.json``. ``--preset`` chooses the clip pipeline (pstl, skeleton2vec, mamp).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from skelssl.data.augment import AugmentConfig, augment
from skelssl.data.clips import ClipConfig, ClipDataset
from skelssl.data.importers import get_importer_class
from skelssl.data.loader import make_loader
from skelssl.data.prepare import prepare_store
from skelssl.data.store import SkeletonStore
from skelssl.models import STGCN

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "pipeline.json"
PRESETS = {"pstl": ClipConfig.pstl, "skeleton2vec": ClipConfig.skeleton2vec, "mamp": ClipConfig.mamp}


def data_rate(
    store: SkeletonStore, preset: str, *, workers: int, batch: int, batches: int, device: str
) -> dict[str, float]:
    """Clips/s from the store to three augmented views on ``device``."""
    dataset = ClipDataset(store=store, config=PRESETS[preset](), split="xview", part="train")
    loader = make_loader(dataset, batch_size=batch, shuffle=True, seed=0, num_workers=workers, drop_last=True)
    gen = torch.Generator().manual_seed(0)
    cfg = AugmentConfig.pstl()
    clips, start, epoch = 0, None, 0
    while clips < (batches + 1) * batch:
        loader.set_epoch(epoch)
        for item in loader:
            x = item["x"].to(device, non_blocking=True)
            views = [augment(x, cfg, layout=store.layout, generator=gen) for _ in range(3)]
            assert views[0].shape == x.shape
            if start is None:  # the first batch includes worker start-up: not counted
                start = time.perf_counter()
                continue
            clips += x.shape[0]
            if clips >= batches * batch:
                break
        epoch += 1
    seconds = time.perf_counter() - start
    return {"workers": workers, "clips": clips, "seconds": seconds, "clips_per_s": clips / seconds}


def consumer_rate(store: SkeletonStore, preset: str, *, batch: int, steps: int, device: str) -> dict[str, float]:
    """Clips/s of ST-GCN forward + backward on three views (the PSTL step's encoder work)."""
    frames = PRESETS[preset]().frames
    model = STGCN(layout=store.layout).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 2, frames, store.num_joints, store.channels, device=device)
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        loss = sum(model(x).square().mean() for _ in range(3))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    return {"clips": steps * batch, "seconds": seconds, "clips_per_s": steps * batch / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "nw-ucla" / "all_sqe")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="pstl")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "store"
        prepare_store(get_importer_class("nw-ucla")(args.data), out, workers=min(2, os.cpu_count() or 1))
        store = SkeletonStore.open(out)
        rows = [
            data_rate(store, args.preset, workers=w, batch=args.batch, batches=args.batches, device=args.device)
            for w in args.workers
        ]
        consumer = consumer_rate(store, args.preset, batch=args.batch, steps=args.steps, device=args.device)
    result: dict[str, Any] = {
        "preset": args.preset,
        "device": args.device,
        "batch": args.batch,
        "torch_threads": torch.get_num_threads(),
        "data_path": rows,
        "consumer": consumer,
        "cpus": os.cpu_count(),
    }
    print(f"data path vs ST-GCN consumer ({args.preset} clips, batch {args.batch}, {args.device})")
    print(f"  {'':<34}{'clips/s':>10}{'x consumer':>12}")
    for row in rows:
        ratio = row["clips_per_s"] / consumer["clips_per_s"]
        label = f"data path, {row['workers']} worker(s)"
        print(f"  {label:<34}{row['clips_per_s']:>10.0f}{ratio:>11.1f}x")
    print(f"  {'ST-GCN fwd+bwd, 3 views':<34}{consumer['clips_per_s']:>10.0f}{1.0:>11.1f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
