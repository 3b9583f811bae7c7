"""Parsing throughput of the NTU RGB+D importer against a plain line-by-line reader, on one core.

Makes ``num_files`` copies of the 5 genuine NTU ``.skeleton`` samples in ``shared/data/ntu60-samples``
under distinct valid NTU-60 names (the action of the source sample kept), then measures in the same run:

- ``baseline``: a plain Python reader in the style of ST-GCN / AimCLR ``read_skeleton`` + ``read_xyz``
  (``readline``, ``int()`` / ``float()`` per field, a dict per body and per joint, then the first two
  bodies copied into a ``(3, T, 25, 2)`` array), written here from the format description;
- ``importer_first2`` / ``importer_denoise``: ``NTU60Importer.run`` per file (read, checksum, strict
  parse and validation, body selection, ``check_keypoints``) with ``bodies=first2`` / ``denoise``.

Files are read once before timing (warm page cache), and the process is pinned to one CPU while it
measures. ``measure(num_files, workdir)`` returns a JSON-able dict; run as a script it prints a table and
writes ``benchmarks/results/prepare_ntu_throughput.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from skelssl.data.importers.ntu import NTU60Importer, missing_skeletons, parse_name

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "prepare_ntu_throughput.json"

_BODY_KEYS = (
    "bodyID", "clipedEdges", "handLeftConfidence", "handLeftState", "handRightConfidence",
    "handRightState", "isResticted", "leanX", "leanY", "trackingState",
)  # fmt: skip
_JOINT_KEYS = (
    "x", "y", "z", "depthX", "depthY", "colorX", "colorY",
    "orientationW", "orientationX", "orientationY", "orientationZ", "trackingState",
)  # fmt: skip


def shared_samples() -> Path:
    """The folder of the 5 genuine NTU samples (``SKELSSL_SHARED_DATA`` overrides the default)."""
    env = os.environ.get("SKELSSL_SHARED_DATA")
    root = Path(env) if env else ROOT.parent / "shared" / "data"
    return root / "ntu60-samples" / "skeletons"


# --------------------------------------------------------------------------------------------------
# Baseline: the plain reader


def baseline_read_skeleton(path: Path) -> dict[str, Any]:
    """Line-by-line reading into nested dicts, ``int()``/``float()`` per field."""
    with open(path) as fh:
        sequence: dict[str, Any] = {"numFrame": int(fh.readline()), "frameInfo": []}
        for _ in range(sequence["numFrame"]):
            frame: dict[str, Any] = {"numBody": int(fh.readline()), "bodyInfo": []}
            for _ in range(frame["numBody"]):
                values = fh.readline().split()
                body: dict[str, Any] = {key: float(v) for key, v in zip(_BODY_KEYS, values, strict=True)}
                body["numJoint"] = int(fh.readline())
                body["jointInfo"] = []
                for _ in range(body["numJoint"]):
                    fields = fh.readline().split()
                    body["jointInfo"].append({key: float(v) for key, v in zip(_JOINT_KEYS, fields, strict=True)})
                frame["bodyInfo"].append(body)
            sequence["frameInfo"].append(frame)
    return sequence


def baseline_read_xyz(path: Path, max_body: int = 2, num_joint: int = 25) -> np.ndarray:
    """``(3, T, num_joint, max_body)`` x y z of the first ``max_body`` bodies of each frame."""
    sequence = baseline_read_skeleton(path)
    data = np.zeros((3, sequence["numFrame"], num_joint, max_body), dtype=np.float32)
    for t, frame in enumerate(sequence["frameInfo"]):
        for m, body in enumerate(frame["bodyInfo"][:max_body]):
            for j, joint in enumerate(body["jointInfo"][:num_joint]):
                data[:, t, j, m] = [joint["x"], joint["y"], joint["z"]]
    return data


# --------------------------------------------------------------------------------------------------
# Input copies


def _names_for(action: int, missing: frozenset[str]) -> Iterator[str]:
    """Distinct valid NTU-60 names with the given action, none on the missing-skeleton list."""
    for setup, camera, subject, replication in itertools.product(range(1, 18), (1, 2, 3), range(1, 41), (1, 2)):
        name = f"S{setup:03d}C{camera:03d}P{subject:03d}R{replication:03d}A{action:03d}"
        if name not in missing:
            yield name


def make_copies(num_files: int, folder: Path) -> list[Path]:
    """``num_files`` copies of the real samples (cycling over them) under distinct NTU names in ``folder``."""
    sources = sorted(shared_samples().glob("*.skeleton"))
    if not sources:
        raise FileNotFoundError(f"no NTU samples in {shared_samples()}; set SKELSSL_SHARED_DATA")
    missing = missing_skeletons(NTU60Importer.missing_list)
    names = {src: _names_for(parse_name(src.stem).action, missing) for src in sources}
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(num_files):
        src = sources[i % len(sources)]
        dst = folder / f"{next(names[src])}.skeleton"
        shutil.copyfile(src, dst)
        paths.append(dst)
    return paths


# --------------------------------------------------------------------------------------------------
# Measurement


def _timed(fn: Callable[[str], Any], items: list[str]) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - start


def _rates(seconds: float, num_files: int, total_bytes: int) -> dict[str, float]:
    return {
        "seconds": round(seconds, 4),
        "files_per_s": round(num_files / seconds, 1),
        "mb_per_s": round(total_bytes / 1e6 / seconds, 2),
        "ms_per_file": round(1e3 * seconds / num_files, 3),
    }


def _check_same_output(paths: list[Path], importer: NTU60Importer) -> bool:
    """The importer's first2 keypoints equal the baseline's, on one copy of each source sample."""
    for path in paths:
        expected = baseline_read_xyz(path).transpose(1, 3, 2, 0)  # (T, M, V, C)
        result = importer.run(str(path))
        if result.rejected or len(result.sequences) != 1:
            return False
        got = result.sequences[0].keypoints
        if not np.array_equal(expected[:, : got.shape[1]], got) or expected[:, got.shape[1] :].any():
            return False
    return True


def measure(num_files: int, workdir: Path) -> dict[str, Any]:
    """Throughput of the baseline reader and of ``NTU60Importer.run`` on ``num_files`` copies, one core.

    Copies are written under ``workdir/ntu_throughput`` (removed afterwards).
    """
    folder = Path(workdir) / "ntu_throughput"
    if folder.exists():
        shutil.rmtree(folder)
    paths = make_copies(num_files, folder)
    total_bytes = sum(p.stat().st_size for p in paths)
    for path in paths:  # warm the page cache
        path.read_bytes()
    first2 = NTU60Importer(folder, bodies="first2")
    denoise = NTU60Importer(folder, bodies="denoise")
    tasks = first2.tasks()
    assert len(tasks) == num_files
    same = _check_same_output(paths[:5], first2)

    pinned = None
    if hasattr(os, "sched_getaffinity"):
        pinned = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(pinned)})
    try:
        first2.run(tasks[0])  # warm-up
        baseline_s = _timed(lambda t: baseline_read_xyz(Path(t)), tasks)
        first2_s = _timed(first2.run, tasks)
        denoise_s = _timed(denoise.run, tasks)
    finally:
        if pinned is not None:
            os.sched_setaffinity(0, pinned)
    bad = sum(len(first2.run(t).rejected) for t in tasks[:5])
    shutil.rmtree(folder)
    return {
        "benchmark": "prepare_ntu_throughput",
        "num_files": num_files,
        "total_mb": round(total_bytes / 1e6, 2),
        "mean_file_kb": round(total_bytes / 1e3 / num_files, 1),
        "baseline": _rates(baseline_s, num_files, total_bytes),
        "importer_first2": _rates(first2_s, num_files, total_bytes),
        "importer_denoise": _rates(denoise_s, num_files, total_bytes),
        "speedup_first2": round(baseline_s / first2_s, 2),
        "speedup_denoise": round(baseline_s / denoise_s, 2),
        "outputs_match_baseline": same and bad == 0,
        "goal_files_per_s_per_core": 200,
        "one_core": pinned is not None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def _table(result: dict[str, Any]) -> str:
    rows = [f"{result['num_files']} files, {result['total_mb']} MB (mean {result['mean_file_kb']} kB), one core"]
    rows.append(f"{'reader':<18}{'files/s':>10}{'MB/s':>9}{'ms/file':>10}{'speed-up':>10}")
    for key, label, speedup in [
        ("baseline", "baseline (dicts)", 1.0),
        ("importer_first2", "importer first2", result["speedup_first2"]),
        ("importer_denoise", "importer denoise", result["speedup_denoise"]),
    ]:
        r = result[key]
        rows.append(
            f"{label:<18}{r['files_per_s']:>10.1f}{r['mb_per_s']:>9.2f}{r['ms_per_file']:>10.2f}{speedup:>9.2f}x"
        )
    rows.append(f"outputs match the baseline: {result['outputs_match_baseline']}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-files", type=int, default=300)
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the copies (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the result")
    args = parser.parse_args(argv)
    if args.workdir is None:
        with tempfile.TemporaryDirectory(prefix="skelssl-ntu-") as tmp:
            result = measure(args.num_files, Path(tmp))
    else:
        result = measure(args.num_files, args.workdir)
    print(_table(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
