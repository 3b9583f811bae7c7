"""``skelssl prepare``: run an importer over its inputs (optionally in worker processes) into a new store.

Sequences are written in the importer's task order whatever the number of workers, so a store is the
same byte for byte for 1 or N workers. At most a few tasks per worker are in flight, so memory stays
bounded on NTU-120-sized inputs. The store is built in a temporary directory beside ``out`` and renamed
into place only when complete: an interrupted ``prepare`` leaves no half store.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skelssl import __version__
from skelssl.data.importers.base import Importer, Rejected, Skipped, TaskResult
from skelssl.data.store import FORMAT, FORMAT_VERSION, StoreError, StoreWriter, commit_store, new_store_dir, write_json
from skelssl.skeleton.layouts import get_layout

_IN_FLIGHT_PER_WORKER = 4


@dataclass
class PrepareSummary:
    """What ``prepare_store`` did."""

    path: Path
    source: str
    num_sequences: int
    num_frames: int
    num_classes: int
    num_tasks: int
    seconds: float
    rejected: list[Rejected] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _results(importer: Importer, tasks: list[Any], workers: int) -> Iterator[TaskResult]:
    """Task results in task order, computed in ``workers`` processes with a bounded window."""
    if workers <= 1:
        for task in tasks:
            yield importer.run(task)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        window: deque[Future[TaskResult]] = deque()
        todo = iter(tasks)
        for task in todo:
            window.append(pool.submit(importer.run, task))
            if len(window) >= workers * _IN_FLIGHT_PER_WORKER:
                break
        while window:
            result = window.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                window.append(pool.submit(importer.run, nxt))
            yield result


def prepare_store(
    importer: Importer,
    out: str | Path,
    *,
    workers: int = 1,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareSummary:
    """Import everything ``importer`` finds into a new store at ``out``.

    Bad inputs are collected (never raised) and written to ``out/rejected.json`` with the samples
    skipped on purpose. ``progress(done, total)`` is called after each task.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise StoreError(f"{out} already exists; remove it or pass --overwrite")
    start = time.perf_counter()
    tasks = importer.tasks()
    layout = get_layout(importer.layout)
    class_names = importer.class_names()
    tmp = new_store_dir(out)
    writer: StoreWriter | None = None
    rejected: list[Rejected] = []
    skipped: list[Skipped] = []
    digests = hashlib.sha256()
    seen: set[str] = set()
    try:
        for done, result in enumerate(_results(importer, tasks, workers), start=1):
            digests.update(result.digest.encode())
            rejected.extend(result.rejected)
            skipped.extend(result.skipped)
            for seq in result.sequences:
                problem = _problem(seq.name, seq.label, len(class_names), seen)
                if problem:
                    rejected.append(Rejected(path=seq.name, reason=problem))
                    continue
                if writer is None:
                    channels = seq.keypoints.shape[-1]
                    writer = StoreWriter(
                        tmp, num_persons=importer.num_persons, num_joints=layout.num_joints, channels=channels
                    )
                try:
                    writer.add(seq.name, seq.keypoints, seq.label, seq.fields)
                except StoreError as err:
                    rejected.append(Rejected(path=seq.name, reason=str(err)))
                    continue
                seen.add(seq.name)
            if progress is not None:
                progress(done, len(tasks))
        if writer is None:
            raise StoreError(
                f"{importer.input}: no valid sequence found ({len(rejected)} rejected, {len(skipped)} skipped)"
                + (f"; first problem: {rejected[0].path}: {rejected[0].reason}" if rejected else "")
            )
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "source": importer.source,
            "layout": layout.name,
            "num_persons": importer.num_persons,
            "num_joints": layout.num_joints,
            "channels": writer.channels,
            "class_names": class_names,
            "splits": importer.splits(),
            "options": importer.options,
            "source_info": importer.describe(),
            "input": str(importer.input.resolve()),
            "input_checksum": digests.hexdigest(),
            "num_rejected": len(rejected),
            "num_skipped": len(skipped),
            "created_by": f"skelssl {__version__}",
        }
        writer.finish(meta)
        write_json(
            tmp / "rejected.json",
            {
                "rejected": [r.as_dict() for r in rejected],
                "skipped": [{"name": s.name, "reason": s.reason} for s in skipped],
            },
        )
        commit_store(tmp, out, overwrite=overwrite)
    except BaseException:
        if writer is not None:
            writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PrepareSummary(
        path=out,
        source=importer.source,
        num_sequences=len(writer),
        num_frames=writer.num_frames,
        num_classes=len(class_names),
        num_tasks=len(tasks),
        seconds=time.perf_counter() - start,
        rejected=rejected,
        skipped=skipped,
    )


def _problem(name: str, label: int, num_classes: int, seen: set[str]) -> str | None:
    if name in seen:
        return "duplicate sequence name; the later one is dropped"
    if not 0 <= label < num_classes:
        return f"label {label} outside the {num_classes} classes of this source"
    return None


def tty_progress(label: str) -> Callable[[int, int], None] | None:
    """A tqdm progress callback when stderr is a terminal, else ``None``."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, desc=label, unit="file", leave=False)
        bar["bar"].update(1)
        if done == total:
            bar["bar"].close()

    return update
