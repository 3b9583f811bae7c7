"""Open time, random-read time and resident memory of an NTU-120-sized store.

Builds a synthetic store with the shape of NTU-120 (113,945 sequences, lengths 32..300 frames, 2 persons,
25 joints, xyz; ~11 GB of keypoints) with :class:`skelssl.data.store.StoreWriter`'s file format, then, in a
fresh subprocess (so that resident memory is the reader's own), measures:

- ``open_s``: ``SkeletonStore.open`` (index + metadata + memory map);
- ``read_1000_s``: copying 1,000 random sequences out of the memory map (cold pages on first touch
  unless the OS still caches them from the build);
- the reader's resident memory after opening and after the reads, beside ``baseline_rss_mb`` (after
  importing numpy and skelssl), and, as a baseline in the same run, the same reads done straight from
  the memory map (whose touched pages stay resident).

``--sparse`` writes the keypoints as a sparse file (zeros, no disk traffic) for a quick run; the
default writes real random values. Prints a table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from skelssl.data.store import _npy_header, write_json

NTU120_SEQUENCES = 113_945


def build(root: Path, *, num: int, sparse: bool, seed: int = 0) -> dict[str, float]:
    """Write a synthetic store of ``num`` sequences at ``root``; returns its size facts."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(32, 301, size=num).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.int64)])
    total = int(lengths.sum())
    frame_bytes = 2 * 25 * 3 * 4
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    with open(root / "keypoints.npy", "wb") as fh:
        fh.write(_npy_header((total, 2, 25, 3)))
        if sparse:
            fh.truncate(len(_npy_header((0, 2, 25, 3))) + total * frame_bytes)
        else:
            chunk = 1 << 18  # frames per write
            for start in range(0, total, chunk):
                n = min(chunk, total - start)
                fh.write(rng.standard_normal((n, 2, 25, 3), dtype=np.float32).tobytes())
    setups = rng.integers(1, 33, num)
    cameras = rng.integers(1, 4, num)
    subjects = rng.integers(1, 107, num)
    reps = rng.integers(1, 3, num)
    labels = rng.integers(0, 120, num)
    names = np.asarray(
        [
            f"S{s:03d}C{c:03d}P{p:03d}R{r:03d}A{a + 1:03d}"
            for s, c, p, r, a in zip(setups, cameras, subjects, reps, labels, strict=True)
        ]
    )
    np.savez(
        root / "index.npz",
        offsets=offsets,
        lengths=lengths,
        labels=labels.astype(np.int32),
        names=names,
        setups=setups,
        cameras=cameras,
        subjects=subjects,
        replications=reps,
    )
    write_json(
        root / "meta.json",
        {
            "format": "skelssl-store",
            "version": 1,
            "source": "synthetic-ntu120",
            "layout": "ntu25",
            "num_persons": 2,
            "num_joints": 25,
            "channels": 3,
            "class_names": [f"A{i + 1:03d}" for i in range(120)],
            "splits": {"xset": {"by": "setups", "train": list(range(2, 33, 2))}},
            "num_sequences": num,
            "total_frames": total,
        },
    )
    return {"build_s": time.perf_counter() - t0, "total_frames": total, "gb": total * frame_bytes / 1e9}


_READER = r"""
import json, sys, time
import numpy as np
from skelssl.data.store import SkeletonStore

def status(key):  # this process's own memory (kB -> MB); VmHWM is the peak resident set since exec
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

base = status("VmRSS")
t0 = time.perf_counter(); store = SkeletonStore.open(sys.argv[1]); t_open = time.perf_counter() - t0
after_open = status("VmRSS")
idx = np.random.default_rng(1).choice(len(store), 1000, replace=False)
t0 = time.perf_counter(); frames = sum(np.array(store.keypoints(int(i))).shape[0] for i in idx)
t_read = time.perf_counter() - t0
after_reads = status("VmRSS")
t0 = time.perf_counter(); train = store.split_indices("xset", "train"); t_split = time.perf_counter() - t0
# baseline in the same run: the same kind of reads straight from the memory map (another 1,000 sequences)
other = np.random.default_rng(2).choice(len(store), 1000, replace=False)
mm, off, ln = store.memmap, store.offsets, store.lengths
t0 = time.perf_counter(); _ = [np.array(mm[off[i] : off[i] + ln[i]]) for i in other]
t_mm = time.perf_counter() - t0
print(json.dumps({"open_s": t_open, "read_1000_s": t_read, "frames_read": int(frames), "split_s": t_split,
                  "baseline_rss_mb": base, "rss_after_open_mb": after_open, "rss_after_reads_mb": after_reads,
                  "memmap_read_1000_s": t_mm, "rss_after_memmap_reads_mb": status("VmRSS"),
                  "sequences": len(store), "train": int(len(train))}))
"""


def measure(root: Path) -> dict[str, float]:
    """Run the reader in a fresh interpreter and return its measurements."""
    out = subprocess.run([sys.executable, "-c", _READER, str(root)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=NTU120_SEQUENCES)
    parser.add_argument("--sparse", action="store_true", help="sparse keypoints file (quick, no disk traffic)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to build the store (default: a temp dir)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/store_open.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp) / "store"
        facts = build(root, num=args.sequences, sparse=args.sparse)
        runs = [measure(root) for _ in range(args.repeats)]
    best = {k: min(r[k] for r in runs) for k in ("open_s", "read_1000_s", "split_s", "memmap_read_1000_s")}
    peak = max(r["rss_after_reads_mb"] for r in runs)
    base = runs[0]["baseline_rss_mb"]
    result = {
        "sequences": args.sequences,
        "sparse": args.sparse,
        **facts,
        **best,
        "rss_after_reads_mb": peak,
        "baseline_rss_mb": base,
        "runs": runs,
        "goal": {"open_s": 0.5, "rss_mb": 300},
        "machine": {"cpus": os.cpu_count()},
    }
    print(f"synthetic NTU-120 store: {args.sequences} sequences, {facts['total_frames']} frames, {facts['gb']:.1f} GB")
    print(f"{'measure':<28}{'value':>12}  goal")
    print(f"{'open (best of ' + str(args.repeats) + ')':<28}{best['open_s'] * 1000:>10.0f}ms  <= 500 ms")
    print(f"{'read 1000 random seqs':<28}{best['read_1000_s'] * 1000:>10.0f}ms")
    print(f"{'  same via the memory map':<28}{best['memmap_read_1000_s'] * 1000:>10.0f}ms  (baseline)")
    print(f"{'xset split indices':<28}{best['split_s'] * 1000:>10.1f}ms")
    after_open = max(r["rss_after_open_mb"] for r in runs)
    print(f"{'RSS after open':<28}{after_open:>10.0f}MB  <= 300 MB")
    print(f"{'RSS after 1000 reads':<28}{peak:>10.0f}MB")
    mm_rss = max(r["rss_after_memmap_reads_mb"] for r in runs)
    print(f"{'  + 1000 memory-map reads':<28}{mm_rss:>10.0f}MB  (baseline: touched map pages stay resident)")
    print(f"{'  python+numpy+skelssl':<28}{base:>10.0f}MB")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
