"""NTU RGB+D 60 and NTU RGB+D 120: raw Kinect-v2 ``.skeleton`` text files → :class:`Sequence` records.

Input: a folder of ``SsssCcccPpppRrrrAaaa.skeleton`` files (setup, camera, performer, replication, action),
directly inside it or one folder down (e.g. ``nturgb+d_skeletons/``). One file is one task and one sample.

File format (Shahroudy et al., CVPR 2016; one item per line, whitespace-separated)::

    <number of frames>
    per frame:  <number of bodies>
      per body: bodyID clipedEdges handLeftConfidence handLeftState handRightConfidence handRightState
                isRestricted leanX leanY trackingState                            (10 fields)
                <number of joints = 25>
                25 joint lines: x y z depthX depthY colorX colorY
                                orientationW orientationX orientationY orientationZ trackingState   (12 fields)

Every line is checked (field count, numeric, finite, integer fields integral, joint ``trackingState`` in
0..2), but only ``x y z`` (camera space, metres) reach the store. Parsing is bulk: Python walks the frame
and body headers (one split per header line), then all body-info lines and all joint lines are parsed by one
``np.loadtxt`` call each, which also checks the field count of every line.

Body selection (option ``bodies``):

- ``first2`` (default): ST-GCN / AimCLR ``ntu_gendata`` — the first two bodies of each frame in file order,
  every declared frame kept in place (a frame without bodies stays all-zero).
- ``denoise``: the CTR-GCN / SGN pipeline (``get_raw_skes_data.py`` + ``get_raw_denoised_data.py``): frames
  without bodies dropped, bodies tracked by ``bodyID``, noisy bodies removed by length and by spread,
  the rest ordered by motion and assigned to actor 1 / actor 2, frames where both actors are missing
  dropped. See :func:`denoise_bodies`.

Samples on the official missing-skeleton lists are returned as :class:`Skipped` (option ``skip_missing``).
"""

from __future__ import annotations

import io
import itertools
import math
import os
import re
import warnings
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from skelssl.data.importers.base import (
    MAX_BODIES,
    MAX_FRAMES,
    Importer,
    Option,
    Rejected,
    Sequence,
    Skipped,
    TaskResult,
    check_keypoints,
    decode_text,
    digest_bytes,
    read_bytes,
)
from skelssl.errors import BadInputError

# --------------------------------------------------------------------------------------------------
# Official benchmark splits (Shahroudy et al. 2016; Liu et al. 2020), as used by ST-GCN, CTR-GCN, PySKL.

#: NTU-60 cross-subject: training performers (the other 20 of 1..40 are the test set).
NTU60_XSUB_TRAIN_SUBJECTS: tuple[int, ...] = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
#: NTU-60 cross-view: training cameras (camera 1 is the test set).
NTU60_XVIEW_TRAIN_CAMERAS: tuple[int, ...] = (2, 3)
#: NTU-120 cross-subject: the 53 official training performers (the other 53 of 1..106 are the test set).
NTU120_XSUB_TRAIN_SUBJECTS: tuple[int, ...] = (
    1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38,
    45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83,
    84, 85, 86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103,
)  # fmt: skip
#: NTU-120 cross-setup: even setup ids train, odd setup ids test.
NTU120_XSET_TRAIN_SETUPS: tuple[int, ...] = tuple(range(2, 33, 2))

# --------------------------------------------------------------------------------------------------
# File format constants.

NUM_JOINTS = 25
BODY_FIELDS = 10
JOINT_FIELDS = 12
LINES_PER_BODY = 2 + NUM_JOINTS  # body-info line, joint-count line, 25 joint lines
#: Largest accepted |x|, |y|, |z| in metres (Kinect v2 sees up to ~8 m); keeps float32 maths finite.
MAX_COORDINATE = 1e4
#: Largest accepted ``.skeleton`` file (real NTU files are at most a few MB).
MAX_FILE_BYTES = 64 << 20
#: Body-info columns that hold non-negative integers (all but ``leanX``, ``leanY``).
_BODY_INT_COLUMNS = (0, 1, 2, 3, 4, 5, 6, 9)
_BODY_FIELD_NAMES = (
    "bodyID", "clipedEdges", "handLeftConfidence", "handLeftState", "handRightConfidence",
    "handRightState", "isRestricted", "leanX", "leanY", "trackingState",
)  # fmt: skip

_NUMBER = re.compile(rb"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan|inf|infinity)", re.IGNORECASE)
_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")

# --------------------------------------------------------------------------------------------------
# CTR-GCN / SGN denoising thresholds (get_raw_denoised_data.py).

#: A body seen in at most this many frames is noise.
NOISE_LENGTH = 11
#: A frame of a body is noisy when its x-spread exceeds this times its y-spread.
NOISE_SPREAD_XY = 0.8
#: A body whose fraction of noisy frames is at least this is noise.
NOISE_SPREAD_RATIO = 0.69754


# ==================================================================================================
# Sample names


@dataclass(frozen=True)
class NTUName:
    """The ids encoded in an NTU sample name ``SsssCcccPpppRrrrAaaa`` (all 1-based)."""

    setup: int
    camera: int
    subject: int
    replication: int
    action: int


def parse_name(name: str) -> NTUName | None:
    """``NTUName`` of a sample name such as ``S001C002P003R001A011``, or ``None`` if it is not one."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    return NTUName(*(int(g) for g in match.groups()))


# ==================================================================================================
# Parsing


@dataclass(frozen=True)
class RawSkeleton:
    """Every body record of one ``.skeleton`` file, in file order.

    ``num_frames`` is the declared frame count T; ``bodies_per_frame`` (T,) int; for the B body records:
    ``frame`` (B,) 0-based frame index, ``rank`` (B,) position within its frame, ``body_ids`` (B,) the
    ``bodyID`` strings, ``xyz`` float32 (B, 25, 3).
    """

    num_frames: int
    bodies_per_frame: np.ndarray
    frame: np.ndarray
    rank: np.ndarray
    body_ids: tuple[str, ...]
    xyz: np.ndarray


class _Lines:
    """Line access into the bytes of one file, with the strict checks of the header lines.

    ``start[i]``/``end[i]``: byte span of line ``i`` (0-based; ``end`` excludes the ``\\n``). Lines from
    ``num_lines`` on are blank: trailing blank lines are accepted. Errors carry 1-based line numbers.
    """

    def __init__(self, path: Path, data: bytes) -> None:
        buf = np.frombuffer(data, dtype=np.uint8)
        control = np.flatnonzero(buf < 32)  # about two per line: CR LF
        kind = buf[control]
        newlines = control[kind == 10]
        cr = control[kind == 13]
        bad = control[(kind != 9) & (kind != 10) & (kind != 13)]
        stray_cr = cr[(cr + 1 < buf.size) & (buf[np.minimum(cr + 1, buf.size - 1)] != 10)]  # a final CR is fine
        if bad.size or stray_cr.size:
            pos = int(min(bad[:1].tolist() + stray_cr[:1].tolist()))
            what = (
                "a carriage return not followed by a line feed" if pos in stray_cr else f"control byte {buf[pos]:#04x}"
            )
            raise BadInputError(path, f"{what}: not a valid text line", line=int(np.searchsorted(newlines, pos)) + 1)
        self.path = path
        self.data = data
        self.start = np.concatenate(([0], newlines + 1)).tolist()
        self.end = [*newlines.tolist(), len(data)]
        last = len(data.rstrip())  # one past the last non-blank byte
        self.num_lines = int(np.searchsorted(newlines, last, side="left")) + 1 if last else 0

    def text(self, i: int) -> bytes:
        return self.data[self.start[i] : self.end[i]]

    def error(self, i: int, reason: str) -> BadInputError:
        return BadInputError(self.path, reason, line=i + 1)

    def fields(self, i: int, count: int, what: str) -> list[bytes]:
        """The fields of line ``i``, which must exist and hold ``count`` fields."""
        if i >= self.num_lines:
            raise self.error(i, f"file ends early: expected {what}; the file may be truncated")
        fields = self.text(i).split()
        if len(fields) != count:
            raise self.error(i, f"{what}: expected {count} field{'s' if count > 1 else ''}, found {len(fields)}")
        return fields

    def count(self, i: int, what: str, limit: int) -> int:
        """The non-negative integer alone on line ``i``, at most ``limit``."""
        (token,) = self.fields(i, 1, what)
        number = float(token) if token.isdigit() else _number(token)
        if number is None:
            raise self.error(i, f"{what}: not a number: {_show(token)}")
        if math.isnan(number) or (math.isfinite(number) and not number.is_integer()):
            raise self.error(i, f"{what}: expected an integer, found {_show(token)}")
        if number < 0:
            raise self.error(i, f"{what} is negative ({_show(token)})")
        if number > limit:
            raise self.error(i, f"{what} is {_show(token)}, more than any valid file has (limit {limit})")
        return int(token) if token.isdigit() else int(number)

    def check_numeric(self, lines: list[int], count: int, what: str) -> None:
        """Raise the error of the first of ``lines`` that has not ``count`` numeric fields."""
        for i in lines:
            for token in self.text(i).split() if i < self.num_lines else ():
                if _number(token) is None:
                    raise self.error(i, f"not a number: {_show(token)}")
            self.fields(i, count, what)

    def table(self, spans: list[tuple[int, int]], columns: int, what: str) -> np.ndarray:
        """Parse lines ``[a, b)`` of every span as one ``(rows, columns)`` float64 table (``np.loadtxt``).

        On any defect (a wrong field count, a blank line, a non-number) the first bad line is named.
        """
        block = b"\n".join(self.data[self.start[a] : self.end[b - 1]] for a, b in spans)
        rows = sum(b - a for a, b in spans)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "input contained no data" for blank lines only
                table = np.loadtxt(io.BytesIO(block), dtype=np.float64, comments=None, ndmin=2)
        except ValueError as err:
            problem = str(err)
        else:
            if table.shape == (rows, columns):
                return table
            problem = f"{table.shape[0]} rows of {table.shape[1]} fields"
        self.check_numeric([i for a, b in spans for i in range(a, b)], columns, what)
        raise BadInputError(self.path, f"could not read the {what}s: {problem}")


def _number(token: bytes) -> float | None:
    """The value of a numeric token (decimal, exponent, nan, inf), or ``None``."""
    return float(token) if _NUMBER.fullmatch(token) else None


def _show(token: bytes) -> str:
    return repr(token[:40].decode("ascii", errors="replace"))


def parse_skeleton(path: Path, data: bytes) -> RawSkeleton:
    """Parse and fully validate the bytes of one ``.skeleton`` file; ``BadInputError`` on any defect.

    Python walks the frame and body headers (one split per line); the body-info lines and the joint
    lines are then parsed in bulk, one ``np.loadtxt`` call each, which also checks their field counts.
    """
    if not data.isascii() or b"\x00" in data:
        decode_text(path, data)  # names the line of a non-UTF-8 or NUL byte (UTF-16 text)
        pos = int(np.argmax(np.frombuffer(data, dtype=np.uint8) >= 128))
        raise BadInputError(
            path, "non-ASCII character: .skeleton files are plain ASCII", line=data.count(b"\n", 0, pos) + 1
        )
    lines = _Lines(path, data)
    if lines.num_lines == 0:
        raise BadInputError(path, "file holds only whitespace; re-copy it from the dataset")

    num_frames = lines.count(0, "frame count", MAX_FRAMES)
    if num_frames > lines.num_lines - 1:
        raise BadInputError(path, f"declares {num_frames} frames but only {lines.num_lines - 1} lines follow", line=1)
    per_frame: list[int] = []
    info_lines: list[int] = []
    body_ids: list[str] = []
    line = 1
    for f in range(num_frames):
        num_bodies = lines.count(line, f"body count of frame {f + 1}", MAX_BODIES)
        line += 1
        for b in range(num_bodies):
            body = f"body {b + 1} of frame {f + 1}"
            body_id = lines.fields(line, BODY_FIELDS, f"the body-info line of {body}")[0]
            if not body_id.isdigit():
                raise lines.error(line, f"bodyID must be a non-negative integer, found {_show(body_id)}")
            if line + 1 >= lines.num_lines or lines.text(line + 1).split() != [b"25"]:
                joints = lines.count(line + 1, f"joint count of {body}", 1 << 30)
                if joints != NUM_JOINTS:
                    raise lines.error(line + 1, f"{body} declares {joints} joints; NTU skeletons have {NUM_JOINTS}")
            if line + LINES_PER_BODY > lines.num_lines:  # truncated: name a short last line if there is one
                lines.check_numeric(list(range(line + 2, lines.num_lines)), JOINT_FIELDS, f"joint line of {body}")
                raise lines.error(lines.num_lines, f"file ends early inside {body}; the file may be truncated")
            info_lines.append(line)
            body_ids.append(body_id.decode("ascii"))
            line += LINES_PER_BODY
        per_frame.append(num_bodies)
    if line < lines.num_lines:
        raise lines.error(line, f"unexpected data after the last of the {num_frames} declared frames")

    num_bodies = len(info_lines)
    info = np.empty((0, BODY_FIELDS))
    values = np.empty((0, JOINT_FIELDS))
    if num_bodies:
        info = lines.table([(i, i + 1) for i in info_lines], BODY_FIELDS, "body-info line")
        values = lines.table([(i + 2, i + LINES_PER_BODY) for i in info_lines], JOINT_FIELDS, "joint line")
    for table, first_line in (
        (info, lambda r: info_lines[r]),
        (values, lambda r: info_lines[r // NUM_JOINTS] + 2 + r % NUM_JOINTS),
    ):
        finite = np.isfinite(table)
        if not finite.all():
            row, col = np.argwhere(~finite)[0]
            raise lines.error(first_line(int(row)), f"NaN or infinite value ({float(table[row, col])})")
    ints = info[:, list(_BODY_INT_COLUMNS)]
    bad_info = (ints != np.floor(ints)) | (ints < 0)
    if bad_info.any():
        b, c = np.argwhere(bad_info)[0]
        name = _BODY_FIELD_NAMES[_BODY_INT_COLUMNS[c]]
        raise lines.error(info_lines[b], f"{name} must be a non-negative integer, found {float(ints[b, c])!r}")
    values = values.reshape(num_bodies, NUM_JOINTS, JOINT_FIELDS)
    state = values[:, :, 11]
    bad_state = (state != 0) & (state != 1) & (state != 2)
    if bad_state.any():
        b, j = np.argwhere(bad_state)[0]
        raise lines.error(
            info_lines[b] + 2 + int(j),
            f"joint trackingState must be 0, 1 or 2, found {float(state[b, j])!r} (a shifted or damaged line)",
        )
    xyz = values[:, :, :3]
    huge = np.abs(xyz) > MAX_COORDINATE
    if huge.any():
        b, j, c = np.argwhere(huge)[0]
        raise lines.error(
            info_lines[b] + 2 + int(j),
            f"coordinate {float(xyz[b, j, c]):g} is not a Kinect position in metres (limit {MAX_COORDINATE:g})",
        )

    bodies_per_frame = np.asarray(per_frame, dtype=np.int64)
    frame = np.repeat(np.arange(num_frames), bodies_per_frame)
    rank = np.arange(frame.size) - np.repeat(np.cumsum(bodies_per_frame) - bodies_per_frame, bodies_per_frame)
    return RawSkeleton(
        num_frames=num_frames,
        bodies_per_frame=bodies_per_frame,
        frame=frame,
        rank=rank,
        body_ids=tuple(body_ids),
        xyz=xyz.astype(np.float32),
    )


# ==================================================================================================
# Body selection: first two bodies (ST-GCN / AimCLR)


def select_first2(raw: RawSkeleton) -> np.ndarray:
    """ST-GCN ``read_xyz``: the first two bodies of each frame in file order, every frame kept in place.

    Returns float32 ``(T, M, 25, 3)`` with T the declared frame count and M = 2 if any frame has two or more
    bodies, else 1; absent bodies (and frames with no body) are zero.
    """
    persons = 2 if raw.bodies_per_frame.size and raw.bodies_per_frame.max() >= 2 else 1
    out = np.zeros((raw.num_frames, persons, NUM_JOINTS, 3), dtype=np.float32)
    keep = raw.rank < persons
    out[raw.frame[keep], raw.rank[keep]] = raw.xyz[keep]
    return out


# ==================================================================================================
# Body selection: CTR-GCN / SGN denoising


@dataclass(frozen=True, eq=False)
class TrackedBody:
    """One ``bodyID`` across the valid frames: ``frames`` (n,) increasing indices into the valid frames,
    ``xyz`` float32 (n, 25, 3), ``motion`` = sum over x, y, z of the variance of all its joint positions."""

    body_id: str
    frames: np.ndarray
    xyz: np.ndarray
    motion: float


def _motion(xyz: np.ndarray) -> float:
    """Sum of the per-axis variances of all joint positions ``(n, 25, 3)`` (float32, as the reference)."""
    return float(np.var(xyz.reshape(-1, 3), axis=0).sum())


def track_bodies(raw: RawSkeleton) -> tuple[list[TrackedBody], int]:
    """Group body records by ``bodyID`` (first-appearance order) over the frames that have a body.

    Frames with no body are dropped first (as ``get_raw_skes_data.py``); returns the bodies and the number
    of remaining frames. A ``bodyID`` listed twice in one frame keeps its first record (the reference would
    stack both and shift the body's later frames).
    """
    valid = raw.bodies_per_frame > 0
    compact = np.cumsum(valid) - 1  # original frame -> index among valid frames
    records: dict[str, list[int]] = {}
    for index, body_id in enumerate(raw.body_ids):
        records.setdefault(body_id, []).append(index)
    bodies = []
    for body_id, rows in records.items():
        idx = np.asarray(rows)
        frames = compact[raw.frame[idx]]
        first = np.concatenate(([True], frames[1:] != frames[:-1]))
        idx, frames = idx[first], frames[first]
        xyz = raw.xyz[idx]
        bodies.append(TrackedBody(body_id, frames, xyz, _motion(xyz)))
    return bodies, int(valid.sum())


def filter_by_length(bodies: list[TrackedBody]) -> list[TrackedBody]:
    """Drop bodies seen in at most ``NOISE_LENGTH`` (11) frames.

    Deviation: when this would drop every body the reference crashes (IndexError); here the rule is then
    not applied.
    """
    kept = [b for b in bodies if b.frames.size > NOISE_LENGTH]
    return kept if kept else bodies


def spread_noise(xyz: np.ndarray) -> np.ndarray:
    """Per frame of one body ``(n, 25, 3)``: ``True`` where the x-spread of the joints exceeds
    ``NOISE_SPREAD_XY`` (0.8) times their y-spread (a lying / flat "body" is a Kinect ghost). ``(n,)``."""
    spread = xyz.max(axis=1) - xyz.min(axis=1)  # (n, 3)
    return ~(spread[:, 0].astype(np.float64) <= NOISE_SPREAD_XY * spread[:, 1].astype(np.float64))


def filter_by_spread(bodies: list[TrackedBody]) -> list[TrackedBody]:
    """Drop bodies whose fraction of spread-noisy frames is at least ``NOISE_SPREAD_RATIO`` (0.69754).

    As the reference: bodies are visited in first-appearance order and the pass stops as soon as one body
    is left; a kept body with some noisy frames gets ``motion = min(motion, motion over its clean frames)``.
    """
    kept = {body.body_id: body for body in bodies}
    for body in bodies:
        if len(kept) == 1:
            break
        noisy = spread_noise(body.xyz)
        num_noisy = int(noisy.sum())
        if num_noisy == 0:
            continue
        if num_noisy / noisy.size >= NOISE_SPREAD_RATIO:
            del kept[body.body_id]
        else:
            kept[body.body_id] = replace(body, motion=min(body.motion, _motion(body.xyz[~noisy])))
    return list(kept.values())


def assign_actors(bodies: list[TrackedBody], num_frames: int) -> np.ndarray:
    """Place bodies ordered by decreasing motion into two actor tracks; float32 ``(num_frames, 2, 25, 3)``.

    The first body is actor 1. Each next body joins actor 1 if its [first, last] frame interval does not
    overlap actor 1's span (touching at one frame counts as no overlap, the later body overwriting that
    frame), else actor 2 under the same test, else it is dropped. Spans grow to the union hull. As in the
    reference, actor 2's span starts as the virtual [0, 0], so it always starts at frame 0.

    Deviation: bodies are written at the frames where they were seen; the reference packs each body's
    frames contiguously from its first frame (the same unless a ``bodyID`` vanishes and comes back).
    """
    out = np.zeros((num_frames, 2, NUM_JOINTS, 3), dtype=np.float32)
    actor1 = bodies[0]
    out[actor1.frames, 0] = actor1.xyz
    start1, end1 = int(actor1.frames[0]), int(actor1.frames[-1])
    start2, end2 = 0, 0
    for body in bodies[1:]:
        start, end = int(body.frames[0]), int(body.frames[-1])
        if min(end1, end) - max(start1, start) <= 0:
            out[body.frames, 0] = body.xyz
            start1, end1 = min(start, start1), max(end, end1)
        elif min(end2, end) - max(start2, start) <= 0:
            out[body.frames, 1] = body.xyz
            start2, end2 = min(start, start2), max(end, end2)
    return out


def denoise_bodies(bodies: list[TrackedBody]) -> list[TrackedBody]:
    """CTR-GCN ``denoising_bodies_data``: length filter, then (with ≥ 2 left) spread filter, then order by
    decreasing motion (stable). The reference's motion-range filter is disabled there and here too."""
    bodies = filter_by_length(bodies)
    if len(bodies) > 1:
        bodies = filter_by_spread(bodies)
    return sorted(bodies, key=lambda b: -b.motion)


def drop_missing_frames(keypoints: np.ndarray) -> np.ndarray:
    """Remove frames where every actor is missing (all coordinates zero). ``(T, M, V, C) → (T', M, V, C)``.

    The reference tests ``sum == 0`` over the frame, which differs only for non-zero values summing to 0.
    """
    present = keypoints.reshape(keypoints.shape[0], -1).any(axis=1)
    return keypoints[present]


def select_denoised(raw: RawSkeleton) -> np.ndarray:
    """CTR-GCN / SGN body selection; float32 ``(T', M, 25, 3)``, M = 1 or 2.

    One ``bodyID`` in the file: it is the only actor over the valid frames. Several: denoise
    (:func:`denoise_bodies`); one left → actor 1 alone, else :func:`assign_actors`; then frames where
    both actors are missing are removed (:func:`drop_missing_frames`). Coordinates are left untranslated
    (the reference's ``seq_transformation.py`` centring is a normalisation, done later in the data path).
    """
    bodies, num_frames = track_bodies(raw)
    if len(bodies) == 1:
        out = np.zeros((num_frames, 1, NUM_JOINTS, 3), dtype=np.float32)
        out[bodies[0].frames, 0] = bodies[0].xyz
        return out
    bodies = denoise_bodies(bodies)
    if len(bodies) == 1:
        out = np.zeros((num_frames, 1, NUM_JOINTS, 3), dtype=np.float32)
        out[bodies[0].frames, 0] = bodies[0].xyz
    else:
        out = assign_actors(bodies, num_frames)
    return drop_missing_frames(out)


# ==================================================================================================
# Importers


def _resource_lines(name: str) -> tuple[str, ...]:
    """Lines of a file shipped in ``skelssl/data/resources/ntu``."""
    text = resources.files("skelssl.data").joinpath("resources").joinpath("ntu").joinpath(name).read_text("utf-8")
    return tuple(text.splitlines())


def missing_skeletons(name: str) -> frozenset[str]:
    """Sample names on an official missing-skeleton list shipped with the package."""
    return frozenset(line.strip() for line in _resource_lines(name) if _NAME.fullmatch(line.strip()))


def ntu_class_names(num_classes: int) -> list[str]:
    """The first ``num_classes`` NTU RGB+D 120 action names (A001 = index 0)."""
    names = []
    for row in _resource_lines("ntu120_class_names.tsv"):
        if row.strip():
            index, name = row.split("\t", 1)
            if int(index) != len(names) + 1:
                raise RuntimeError(f"ntu120_class_names.tsv: class {index} out of order")
            names.append(name.strip())
    return names[:num_classes]


def _find_files(root: Path) -> list[Path]:
    """``*.skeleton`` files in ``root`` and its direct subfolders, sorted by file name then path."""
    found: list[Path] = []
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.is_dir():
                with os.scandir(entry.path) as inner:
                    found.extend(Path(e.path) for e in inner if e.name.endswith(".skeleton") and e.is_file())
            elif entry.name.endswith(".skeleton") and entry.is_file():
                found.append(Path(entry.path))
    return sorted(found, key=lambda p: (p.name, str(p)))


class _NTUImporter(Importer):
    """Shared NTU RGB+D 60 / 120 logic; subclasses set the ranges, the missing list and the splits."""

    layout = "ntu25"
    num_persons = 2
    dataset: ClassVar[str]
    num_classes: ClassVar[int]
    max_setup: ClassVar[int]
    max_subject: ClassVar[int]
    missing_list: ClassVar[str]
    OPTIONS: ClassVar[dict[str, Option]] = {
        "bodies": Option(
            str,
            "first2",
            "body selection: first2 (ST-GCN/AimCLR: first two bodies per frame, all frames kept) or "
            "denoise (CTR-GCN/SGN: track bodyIDs, drop noisy bodies, pick two actors by motion)",
            choices=("first2", "denoise"),
        ),
        "skip_missing": Option(bool, True, "skip the samples on the official missing-skeleton list"),
    }

    def __init__(self, input: str | Path, **options: Any) -> None:
        super().__init__(input, **options)
        self._missing = missing_skeletons(self.missing_list) if self.options["skip_missing"] else frozenset()

    def tasks(self) -> list[str]:
        root = self.input
        if root.is_file() and root.name.endswith(".skeleton"):
            return [str(root)]
        if not root.is_dir():
            raise BadInputError(root, "input not found: pass the folder of .skeleton files (e.g. nturgb+d_skeletons/)")
        files = _find_files(root)
        if not files:
            raise BadInputError(
                root,
                "no .skeleton files here or in its direct subfolders: pass the folder extracted from "
                "nturgbd_skeletons_s001_to_s017.zip (and, for NTU-120, s018_to_s032)",
            )
        for a, b in itertools.pairwise(files):
            if a.name == b.name:
                raise BadInputError(b, f"sample {a.stem} is also at {a}; keep one copy of each sample")
        return [str(p) for p in files]

    def _check_name(self, path: Path) -> NTUName:
        stem = path.name.removesuffix(".skeleton")
        ids = parse_name(stem)
        if ids is None:
            raise BadInputError(
                path, "not an NTU RGB+D sample name: expected SsssCcccPpppRrrrAaaa.skeleton (e.g. S001C002P003R001A011)"
            )
        hint = "; this looks like an NTU RGB+D 120 sample: use source ntu120" if self.num_classes == 60 else ""
        if not 1 <= ids.action <= self.num_classes:
            raise BadInputError(
                path, f"unknown label: action A{ids.action:03d} is not one of {self.dataset}'s "
                f"A001..A{self.num_classes:03d}" + (hint if ids.action <= 120 else "")
            )  # fmt: skip
        if not 1 <= ids.setup <= self.max_setup:
            raise BadInputError(
                path, f"setup S{ids.setup:03d} is not one of {self.dataset}'s S001..S{self.max_setup:03d}"
                + (hint if ids.setup <= 32 else "")
            )  # fmt: skip
        if not 1 <= ids.subject <= self.max_subject:
            raise BadInputError(
                path, f"performer P{ids.subject:03d} is not one of {self.dataset}'s P001..P{self.max_subject:03d}"
                + (hint if ids.subject <= 106 else "")
            )  # fmt: skip
        if not 1 <= ids.camera <= 3:
            raise BadInputError(path, f"camera C{ids.camera:03d} is not one of C001..C003")
        if not 1 <= ids.replication <= 2:
            raise BadInputError(path, f"replication R{ids.replication:03d} is not one of R001..R002")
        return ids

    def run(self, task: str) -> TaskResult:
        path = Path(task)
        name = path.name.removesuffix(".skeleton")
        digest = ""
        try:
            ids = self._check_name(path)
            if name in self._missing:
                reason = f"on the official {self.dataset} missing-skeleton list ({self.missing_list})"
                return TaskResult(skipped=[Skipped(name=name, reason=reason)])
            data = read_bytes(path, max_bytes=MAX_FILE_BYTES)
            digest = digest_bytes(data)
            raw = parse_skeleton(path, data)
            if raw.frame.size == 0:
                what = (
                    f"none of its {raw.num_frames} frames has"
                    if raw.num_frames
                    else "it declares 0 frames, so no frame has"
                )
                raise BadInputError(path, f"{what} a body: nothing to import", line=1)
            select = select_denoised if self.options["bodies"] == "denoise" else select_first2
            keypoints = check_keypoints(
                path, select(raw), num_joints=NUM_JOINTS, channels=(3,), max_persons=self.num_persons, what=name
            )
        except BadInputError as err:
            return TaskResult(rejected=[Rejected.from_error(err)], digest=digest)
        fields = {"setups": ids.setup, "cameras": ids.camera, "subjects": ids.subject, "replications": ids.replication}
        sequence = Sequence(name=name, keypoints=keypoints, label=ids.action - 1, fields=fields)
        return TaskResult(sequences=[sequence], digest=digest)

    def class_names(self) -> list[str]:
        return ntu_class_names(self.num_classes)

    def describe(self) -> dict[str, Any]:
        selection = {
            "first2": "first two bodies per frame in file order, all frames kept (ST-GCN/AimCLR gendata)",
            "denoise": "CTR-GCN/SGN denoising: bodyID tracking, length/spread filters, two actors by motion",
        }[self.options["bodies"]]
        return {
            "dataset": self.dataset,
            "bodies": self.options["bodies"],
            "body_selection": selection,
            "skip_missing": self.options["skip_missing"],
            "missing_list": self.missing_list if self.options["skip_missing"] else None,
            "units": "metres (Kinect v2 camera space)",
        }


class NTU60Importer(_NTUImporter):
    """NTU RGB+D 60: 56,880 samples (56,578 after the 302 missing), 60 actions, setups S001..S017.

    Splits: ``xsub`` (by ``subjects``) and ``xview`` (by ``cameras``), the official benchmarks.
    """

    source = "ntu60"
    dataset = "NTU RGB+D 60"
    num_classes = 60
    max_setup = 17
    max_subject = 40
    missing_list = "NTU_RGBD_samples_with_missing_skeletons.txt"

    def splits(self) -> dict[str, dict[str, Any]]:
        subjects = range(1, self.max_subject + 1)
        return {
            "xsub": {
                "by": "subjects",
                "train": list(NTU60_XSUB_TRAIN_SUBJECTS),
                "test": [s for s in subjects if s not in NTU60_XSUB_TRAIN_SUBJECTS],
            },
            "xview": {
                "by": "cameras",
                "train": list(NTU60_XVIEW_TRAIN_CAMERAS),
                "test": [c for c in (1, 2, 3) if c not in NTU60_XVIEW_TRAIN_CAMERAS],
            },
        }


class NTU120Importer(_NTUImporter):
    """NTU RGB+D 120: 114,480 samples (113,945 after the 535 missing), 120 actions, setups S001..S032.

    Splits: ``xsub`` (by ``subjects``, 53 training performers) and ``xset`` (by ``setups``, even ids train).
    """

    source = "ntu120"
    dataset = "NTU RGB+D 120"
    num_classes = 120
    max_setup = 32
    max_subject = 106
    missing_list = "NTU_RGBD120_samples_with_missing_skeletons.txt"

    def splits(self) -> dict[str, dict[str, Any]]:
        subjects = range(1, self.max_subject + 1)
        setups = range(1, self.max_setup + 1)
        return {
            "xsub": {
                "by": "subjects",
                "train": list(NTU120_XSUB_TRAIN_SUBJECTS),
                "test": [s for s in subjects if s not in NTU120_XSUB_TRAIN_SUBJECTS],
            },
            "xset": {
                "by": "setups",
                "train": list(NTU120_XSET_TRAIN_SETUPS),
                "test": [s for s in setups if s not in NTU120_XSET_TRAIN_SETUPS],
            },
        }
