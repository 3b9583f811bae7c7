"""Shared pieces for datasets stored as continuous recordings cut into clips by a label file.

PKU-MMD and UTKinect-Action3D ship one long recording per video (one text row per frame) and a label
file listing ``(action, start, end)`` per performed action. This module holds the format-independent
parts:

- :func:`parse_numeric_rows` — a text file of rows of numbers → ``(T, columns)`` float64 array, with the
  1-based file line of every row, rejecting wrong column counts and non-numbers with the line at fault;
- :class:`Segment` / :func:`locate_segments` — validate the label rows of one recording against the
  frame numbers it actually holds (start ≤ end, inside the recording, not overlapping, not empty) and
  map each valid one to a half-open row range ``[lo, hi)``;
- :func:`first_bad_row` — where a row range holds NaN/inf, for an error that names the file line.

Frame numbering differs between datasets and is a parameter (``frame_ids``, ``end_inclusive``): PKU-MMD
labels are 0-based row indices with an exclusive end; UTKinect labels are frame *ids* (column 0 of the
joints file, with gaps and repeats) with an inclusive end.
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from skelssl.data.importers.base import Rejected, decode_text
from skelssl.errors import BadInputError

OverlapPolicy = Literal["reject", "allow"]
OVERLAP_POLICIES: tuple[str, ...] = ("reject", "allow")


@dataclass(frozen=True)
class Segment:
    """One labelled action of a recording, as written in its label file.

    ``start``/``end`` are in the label file's own frame units; ``line`` is the 1-based line of the label
    file that defines the segment (used in every error about it).
    """

    label: int
    start: int
    end: int
    line: int


@dataclass(frozen=True)
class Clip:
    """A valid segment and the half-open range ``[lo, hi)`` of recording rows it covers."""

    segment: Segment
    lo: int
    hi: int


def parse_numeric_rows(
    path: str | Path, data: bytes, columns: int, *, what: str = "values"
) -> tuple[np.ndarray, np.ndarray]:
    """Parse whitespace-separated numbers, one frame per non-blank line.

    Returns ``(rows, lines)``: float64 ``(T, columns)`` and int64 ``(T,)`` 1-based file lines. Blank lines
    are skipped. Raises ``BadInputError`` naming the line of the first row with another number of values
    (``what`` describes the expected content), or holding a token that is not a number. NaN/inf parse as
    such; callers check finiteness where it matters.
    """
    text = decode_text(path, data)
    lines = text.split("\n")
    counts = np.fromiter((len(line.split()) for line in lines), dtype=np.int64, count=len(lines))
    present = np.flatnonzero(counts)
    if present.size == 0:
        raise BadInputError(path, "holds no rows of numbers; re-copy it from the dataset")
    wrong = present[counts[present] != columns]
    if wrong.size:
        k = int(wrong[0])
        raise BadInputError(path, f"has {int(counts[k])} values on this line, expected {columns} ({what})", line=k + 1)
    try:
        values = np.fromstring(text, dtype=np.float64, sep=" ")  # whitespace-separated; newlines included
    except ValueError:
        raise _locate_non_number(path, lines, present) from None
    if values.size != present.size * columns:  # defensive: token counts and parsed counts must agree
        raise _locate_non_number(path, lines, present)
    return values.reshape(present.size, columns), present + 1


def _locate_non_number(path: str | Path, lines: list[str], present: np.ndarray) -> BadInputError:
    """The error for the first line holding a token that is not a number (slow path, errors only)."""
    for k in present:
        for token in lines[k].split():
            try:
                float(token)
            except ValueError:
                return BadInputError(path, f"{token[:40]!r} is not a number", line=int(k) + 1)
    return BadInputError(path, "holds text that is not a list of numbers")


def locate_segments(
    label_path: str | Path,
    segments: SequenceABC[Segment],
    frame_ids: np.ndarray,
    *,
    end_inclusive: bool,
    overlap: OverlapPolicy = "reject",
) -> tuple[list[Clip], list[Rejected]]:
    """Validate the segments of one recording and find the rows each covers.

    ``frame_ids`` is the non-decreasing ``(T,)`` frame number of every recording row (``arange(T)`` when
    labels are row indices). A segment covers the rows whose frame number lies in ``[start, end]``
    (``end_inclusive``) or ``[start, end)``. Rejected, with the label-file line: ``start > end``;
    a range reaching outside ``frame_ids[0] .. frame_ids[-1]``; a range with no rows; and, when
    ``overlap == "reject"``, every segment that overlaps another (both are rejected, each naming the
    other's line). Two segments that only share their boundary frame (one starts where the other ends)
    do not count as overlapping: annotators commonly cut adjacent actions at one frame.

    Returns the valid clips in label-file order and the rejections.
    """
    ids = np.asarray(frame_ids)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError("frame_ids must be a non-empty 1-D array")
    first, last = int(ids[0]), int(ids[-1])
    limit = last if end_inclusive else last + 1
    clips: list[Clip] = []
    rejected: list[Rejected] = []
    for seg in segments:
        reason = _range_problem(seg, first, limit, end_inclusive)
        if reason is None:
            lo = int(np.searchsorted(ids, seg.start, side="left"))
            hi = int(np.searchsorted(ids, seg.end, side="right" if end_inclusive else "left"))
            if hi <= lo:
                reason = f"segment {seg.start}..{seg.end} holds no recorded frame"
            else:
                clips.append(Clip(seg, lo, hi))
                continue
        rejected.append(Rejected(str(label_path), reason, seg.line))
    if overlap == "reject":
        clips, clashes = _drop_overlaps(label_path, clips)
        rejected.extend(clashes)
    elif overlap != "allow":
        raise ValueError(f"overlap must be one of {OVERLAP_POLICIES}, got {overlap!r}")
    rejected.sort(key=lambda r: r.line or 0)
    return clips, rejected


def _range_problem(seg: Segment, first: int, limit: int, end_inclusive: bool) -> str | None:
    """Why a segment's frame range is unusable, or ``None``."""
    if seg.start > seg.end:
        return f"segment starts after it ends (start {seg.start} > end {seg.end})"
    if not end_inclusive and seg.start == seg.end:
        return f"segment is empty (start {seg.start} == end {seg.end}, end exclusive)"
    if seg.start < first or seg.end > limit:
        unit = "frames" if end_inclusive else "rows"
        last = limit if end_inclusive else limit - 1
        return f"segment {seg.start}..{seg.end} lies outside the recording ({unit} {first}..{last})"
    return None


def _drop_overlaps(label_path: str | Path, clips: list[Clip]) -> tuple[list[Clip], list[Rejected]]:
    """Split clips into those overlapping no other and rejections for every overlapping one."""
    order = sorted(range(len(clips)), key=lambda i: (clips[i].segment.start, clips[i].segment.end))
    partner: dict[int, int] = {}
    reach = -1  # index (into clips) of the segment reaching furthest so far
    for i in order:
        seg = clips[i].segment
        if reach >= 0 and _overlaps(seg, clips[reach].segment):
            partner.setdefault(i, reach)
            partner.setdefault(reach, i)
        if reach < 0 or seg.end > clips[reach].segment.end:
            reach = i
    kept = [clip for i, clip in enumerate(clips) if i not in partner]
    rejected = [
        Rejected(
            str(label_path),
            f"segment {clips[i].segment.start}..{clips[i].segment.end} overlaps the segment on line "
            f"{clips[j].segment.line} ({clips[j].segment.start}..{clips[j].segment.end})",
            clips[i].segment.line,
        )
        for i, j in sorted(partner.items())
    ]
    return kept, rejected


def _overlaps(seg: Segment, earlier: Segment) -> bool:
    """Whether ``seg`` (starting no earlier than ``earlier``) overlaps it by more than a boundary frame."""
    return seg.start < earlier.end or (seg.start, seg.end) == (earlier.start, earlier.end)


def first_bad_row(rows: np.ndarray, lo: int, hi: int) -> int | None:
    """Index of the first row in ``rows[lo:hi]`` holding NaN or inf, or ``None``."""
    finite = np.isfinite(rows[lo:hi]).reshape(hi - lo, -1).all(axis=1)
    if finite.all():
        return None
    return lo + int(np.argmin(finite))
