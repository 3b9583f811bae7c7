"""Run logs: a JSON-lines metrics file in every run directory, TensorBoard when it is installed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from skelssl.errors import SkelsslError
from skelssl.utils import atomic_write


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` (and scalars to TensorBoard if available).

    Only the process that writes (rank 0) should create one. ``lines`` counts the complete records in the
    file; a checkpoint stores it, and on resume :meth:`truncate` keeps exactly those records: whatever an
    interrupted run logged after its last checkpoint (including a half-written last line) is dropped and
    logged again by the resumed run, so the log reads as if the run never stopped — no step lost, none twice.
    A write that fails (full disk, read-only directory) raises :class:`~skelssl.errors.SkelsslError`
    naming the file.
    """

    def __init__(self, run_dir: Path, *, tensorboard: bool = True) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.lines = len(_complete_lines(self.path))
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(run_dir / "tb"))
            except ImportError:  # TensorBoard is optional (pip install "skelssl[tb]")
                self._tb = None

    def truncate(self, lines: int) -> None:
        """Keep the first ``lines`` complete records (those a checkpoint counted) and drop the rest."""
        current = _complete_lines(self.path)
        kept = current[: max(int(lines), 0)]
        if self.path.exists() and (len(kept) < len(current) or _has_partial_line(self.path)):
            atomic_write(self.path, lambda fh: fh.write("".join(line + "\n" for line in kept).encode("utf-8")))
        self.lines = len(kept)

    def truncate_after(self, step: int) -> None:
        """Drop the records logged after ``step`` (for checkpoints that do not count their records)."""
        if not self.path.exists():
            return
        kept = [line for line in _complete_lines(self.path) if _step_of(line) <= step]
        atomic_write(self.path, lambda fh: fh.write("".join(line + "\n" for line in kept).encode("utf-8")))
        self.lines = len(kept)

    def log(self, kind: str, step: int, **values: Any) -> None:
        record = {"kind": kind, "step": step, **{k: _plain(v) for k, v in values.items()}}
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise SkelsslError(
                f"{self.path}: could not append to the metrics log ({exc}); free disk space or choose another "
                "--out, then continue with --resume (the last checkpoint is kept)"
            ) from exc
        self.lines += 1
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step" and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else str(value)
    return value


def _complete_lines(path: Path) -> list[str]:
    """The newline-terminated lines of ``path`` (a half-written last line is not one); [] when missing."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return text.split("\n")[:-1]


def _has_partial_line(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            if fh.tell() == 0:
                return False
            fh.seek(-1, 2)
            return fh.read(1) != b"\n"
    except FileNotFoundError:
        return False


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 1 << 62  # unreadable line: dropped on truncation


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
