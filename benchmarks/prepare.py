"""``skelssl prepare`` speed: NTU importer throughput per core, and scaling with ``--workers``.

Two measurements, each against a baseline taken in the same run:

1. per core — ``NTU60Importer.run`` against a plain line-by-line Python reader (ST-GCN/AimCLR
   ``read_xyz`` style), on copies of the genuine NTU samples (``prepare_ntu_throughput.measure``);
2. end to end — ``prepare_store`` (parse, validate, write the store) with 1 and N workers on the same
   copies; the 1-worker run is the baseline of the speed-up.

Prints a table and writes ``benchmarks/results/prepare.json``. The store figures (open time, memory on
an NTU-120-sized store) are in ``benchmarks/store_open.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prepare_ntu_throughput import make_copies, measure
from skelssl.data.importers.ntu import NTU60Importer
from skelssl.data.prepare import prepare_store

RESULTS = Path(__file__).resolve().parent / "results" / "prepare.json"


def scaling(folder: Path, workers: list[int], repeats: int) -> list[dict[str, Any]]:
    """Files/s of a whole ``prepare_store`` run over ``folder`` for each worker count (best of ``repeats``)."""
    files = sorted(folder.glob("*.skeleton"))
    mb = sum(f.stat().st_size for f in files) / 1e6
    rows = []
    for n in workers:
        best = float("inf")
        for r in range(repeats):
            out = folder.parent / f"store-{n}-{r}"
            start = time.perf_counter()
            summary = prepare_store(NTU60Importer(folder), out, workers=n)
            best = min(best, time.perf_counter() - start)
            assert summary.num_sequences == len(files), summary.rejected[:3]
            shutil.rmtree(out)
        rows.append({"workers": n, "seconds": best, "files_per_s": len(files) / best, "mb_per_s": mb / best})
    base = rows[0]["files_per_s"]
    for row in rows:
        row["speedup"] = row["files_per_s"] / base
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=600, help="copies of the NTU samples to parse")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        per_core = measure(args.files, Path(tmp) / "per-core")
        folder = Path(tmp) / "copies"
        folder.mkdir()
        make_copies(args.files, folder)
        rows = scaling(folder, args.workers, args.repeats)
    result = {"per_core": per_core, "scaling": rows, "cpus": os.cpu_count(), "goal_files_per_s_per_core": 200}

    print(f"NTU importer, one core, {args.files} files")
    for key in ("baseline", "importer_first2", "importer_denoise"):
        r = per_core[key]
        print(f"  {key:<20}{r['files_per_s']:>8.0f} files/s {r['mb_per_s']:>7.1f} MB/s")
    print(f"  speed-up over the line-by-line reader: {per_core['speedup_first2']:.2f}x (goal: >= 200 files/s)")
    print(f"prepare_store end to end ({os.cpu_count()} CPUs on this machine)")
    print(f"  {'workers':<10}{'files/s':>10}{'MB/s':>8}{'speed-up':>10}")
    for row in rows:
        print(f"  {row['workers']:<10}{row['files_per_s']:>10.0f}{row['mb_per_s']:>8.1f}{row['speedup']:>9.2f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
