"""UTKinect-Action3D (``utkinect``): 20 continuous Kinect-v1 recordings cut into 10 actions each.

Input (``--input``): the dataset folder holding ``joints/`` (or the ``joints/`` folder itself), with

- ``joints_sXX_eYY.txt`` — subject XX, take YY; one row per skeleton frame: a frame id, then 20 joints ×
  (x, y, z) in metres = 61 numbers. Frame ids are the RGB/depth image numbers: they increase with gaps
  (the skeleton stream runs at about half the image rate) and some ids repeat on consecutive rows
  (distinct skeletons). Joint order is Kinect SDK v1 (hip centre, spine, shoulder centre, head, left
  shoulder … right foot) = the ``kinect20`` layout; verified on the data (symmetric left/right bone
  lengths, head above shoulder centre above spine above hip centre in 99 % of frames).
- ``actionLabel.txt`` — a ``sXX_eYY`` line per recording, then ``action: start end`` lines giving the
  first and last frame *id* of each action (inclusive). ``labels=corrected`` reads
  ``actionLabel_modified.txt`` instead: Vemulapalli's corrections of seven typos (the ones his
  ``frame_indices.mat`` and the ``tr_te_splits.mat`` protocol use).

A clip is every row whose frame id lies in ``[start, end]`` (duplicates included, in file order). The
official file has one ``carry: NaN NaN`` segment (s10_e02), rejected with its line; with the default
``overlap=reject`` it also has three overlapping pairs (s03_e01 push 2556..3622 covers throw; s09_e01
push/pull; s10_e02 push/pull), all six rejected with their lines: 193 clips. ``labels=corrected`` gives
199 clips (only the NaN one rejected), as does ``overlap=allow``. Adjacent segments sharing their
boundary frame (ten cases) are not overlaps.

Fields: ``subjects`` (1..10), ``takes`` (1, 2). Splits: ``half`` (subjects 1–5 train / 6–10 test) and
``split1`` … ``split10`` from ``tr_te_splits.mat`` when present. Leave-one-subject-out (the original
protocol) is ten splits by construction, not one stored split: select ``subjects`` directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from skelssl.data.importers.base import (
    Importer,
    Option,
    Rejected,
    Sequence,
    TaskResult,
    as_int,
    check_keypoints,
    decode_text,
    digest_bytes,
    read_bytes,
)
from skelssl.data.importers.florence import read_subject_splits
from skelssl.data.importers.segments import (
    OVERLAP_POLICIES,
    Clip,
    Segment,
    first_bad_row,
    locate_segments,
    parse_numeric_rows,
)
from skelssl.errors import BadInputError

#: Class names (index = label) and the spelling the label files use.
UTKINECT_CLASSES: tuple[str, ...] = (
    "walk", "sit_down", "stand_up", "pick_up", "carry", "throw", "push", "pull", "wave_hands", "clap_hands",
)  # fmt: skip
LABEL_TOKENS: tuple[str, ...] = (
    "walk", "sitDown", "standUp", "pickUp", "carry", "throw", "push", "pull", "waveHands", "clapHands",
)  # fmt: skip
LABEL_FILES = {"official": "actionLabel.txt", "corrected": "actionLabel_modified.txt"}
SPLITS_FILE = "tr_te_splits.mat"
NUM_JOINTS = 20
_COLUMNS = 1 + NUM_JOINTS * 3
_HEADER_RE = re.compile(r"s(?P<subject>\d+)_e(?P<take>\d+)")
_SEGMENT_RE = re.compile(r"(?P<action>[^:\s]+)\s*:\s*(?P<start>\S+)\s+(?P<end>\S+)")
_JOINTS_RE = re.compile(r"joints_(?P<recording>s\d+_e\d+)\.txt")


@dataclass(frozen=True)
class UTKTask:
    """One recording: its joints file (``None`` if missing) and its block of the label file."""

    recording: str
    joints: str | None
    label_file: str
    header_line: int | None  # ``None``: the label file has no block for this recording
    lines: tuple[tuple[int, str], ...] = ()
    duplicate_line: int | None = None  # line of a second block for the same recording


class UTKinectImporter(Importer):
    """UTKinect-Action3D: 10 subjects × 2 takes × 10 actions, 20 Kinect-v1 joints, one person."""

    source = "utkinect"
    layout = "kinect20"
    num_persons = 1
    OPTIONS: ClassVar[dict[str, Option]] = {
        "labels": Option(
            str,
            "auto",
            "official = actionLabel.txt (has 3 overlapping segment pairs), corrected = actionLabel_modified.txt "
            "(Vemulapalli's fix, used with tr_te_splits.mat), auto = corrected when present, else official",
            ("auto", *LABEL_FILES),
        ),
        "overlap": Option(
            str, "reject", "segments overlapping another: reject (both, with lines) or allow", OVERLAP_POLICIES
        ),
    }

    # ----------------------------------------------------------------------------------- work units
    def tasks(self) -> list[UTKTask]:
        folder = self._joints_folder()
        label_path = folder / self._label_file(folder)
        if not label_path.is_file():
            raise BadInputError(label_path, "label file not found; it ships in the dataset's joints/ folder")
        blocks, duplicates = _label_blocks(label_path, decode_text(label_path, read_bytes(label_path)))
        joints = {m["recording"]: f for f in folder.iterdir() if (m := _JOINTS_RE.fullmatch(f.name))}
        if not joints:
            raise BadInputError(folder, "holds no joints_sXX_eYY.txt file; check --input")
        splits = self._splits_path()
        if splits.is_file():
            read_subject_splits(splits)  # fail early on a malformed split file
        tasks = []
        for rec in sorted(set(joints) | set(blocks)):
            header, lines = blocks.get(rec, (None, ()))
            path = joints.get(rec)
            tasks.append(
                UTKTask(rec, None if path is None else str(path), str(label_path), header, lines, duplicates.get(rec))
            )
        return tasks

    def run(self, task: UTKTask) -> TaskResult:
        read: list[bytes] = ["\n".join(text for _, text in task.lines).encode()]
        try:
            sequences, rejected = self._run(task, read)
        except BadInputError as err:
            sequences, rejected = [], [Rejected.from_error(err)]
        return TaskResult(sequences=sequences, rejected=rejected, digest=digest_bytes(b"".join(read)))

    def _run(self, task: UTKTask, read: list[bytes]) -> tuple[list[Sequence], list[Rejected]]:
        rec = task.recording
        if task.joints is None:
            missing = f"recording {rec} is labelled but joints_{rec}.txt is missing"
            raise BadInputError(task.label_file, missing, task.header_line)
        if task.header_line is None:
            raise BadInputError(task.joints, f"recording {rec} has no block in {Path(task.label_file).name}")
        if task.duplicate_line is not None:
            raise BadInputError(task.label_file, f"a second block for recording {rec}", task.duplicate_line)
        match = _HEADER_RE.fullmatch(rec)  # recordings come from _HEADER_RE / _JOINTS_RE matches
        if match is None:
            raise BadInputError(task.joints, f"recording name {rec!r} is not like 's01_e01'")
        fields: dict[str, int | str] = {"subjects": int(match["subject"]), "takes": int(match["take"])}
        path = Path(task.joints)
        read.append(read_bytes(path))
        rows, lines = parse_numeric_rows(path, read[-1], _COLUMNS, what="frame id + 20 joints x xyz")
        ids = _frame_ids(path, rows[:, 0], lines)
        segments, rejected = _parse_segments(task.label_file, task.lines)
        clips, bad = locate_segments(
            task.label_file, segments, ids, end_inclusive=True, overlap=self.options["overlap"]
        )
        rejected.extend(bad)
        sequences: list[Sequence] = []
        names: set[str] = set()
        for clip in clips:
            name = f"{rec}_{UTKINECT_CLASSES[clip.segment.label]}"
            name = name if name not in names else f"{name}_line{clip.segment.line}"
            try:
                sequences.append(_clip_sequence(path, rows, lines, clip, name, fields))
                names.add(name)
            except BadInputError as err:
                rejected.append(Rejected.from_error(err))
        return sequences, rejected

    # ----------------------------------------------------------------------------------- metadata
    def class_names(self) -> list[str]:
        return list(UTKINECT_CLASSES)

    def splits(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {
            "half": {"by": "subjects", "train": [1, 2, 3, 4, 5], "test": [6, 7, 8, 9, 10]}
        }
        path = self._splits_path()
        if path.is_file():
            out.update(read_subject_splits(path))
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "label_file": self._label_file(self._joints_folder()),
            "frames": "clip = rows whose frame id (column 0) lies in [start, end], end inclusive",
            "overlap": self.options["overlap"],
            "splits": "half (subjects 1-5 / 6-10), split1..split10 from tr_te_splits.mat; "
            "leave-one-subject-out is not stored (select by subjects)",
        }

    def _label_file(self, folder: Path) -> str:
        choice = self.options["labels"]
        if choice == "auto":
            choice = "corrected" if (folder / LABEL_FILES["corrected"]).is_file() else "official"
        return LABEL_FILES[choice]

    def _joints_folder(self) -> Path:
        if not self.input.is_dir():
            raise BadInputError(self.input, "is not a folder; give the UTKinect folder (holding joints/) as --input")
        return self.input / "joints" if (self.input / "joints").is_dir() else self.input

    def _splits_path(self) -> Path:
        root = self.input.parent if self.input.name == "joints" else self.input
        return root / SPLITS_FILE


# --------------------------------------------------------------------------------------- parsing
def _label_blocks(path: Path, text: str) -> tuple[dict[str, tuple[int, tuple[tuple[int, str], ...]]], dict[str, int]]:
    """Split a label file into ``{recording: (header line, ((line, text), ...))}`` and duplicate headers."""
    blocks: dict[str, tuple[int, list[tuple[int, str]]]] = {}
    duplicates: dict[str, int] = {}
    current: list[tuple[int, str]] | None = None
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        if _HEADER_RE.fullmatch(line):
            if line in blocks:
                duplicates.setdefault(line, number)
                current = []  # collect and ignore the duplicate block's lines
            else:
                current = []
                blocks[line] = (number, current)
        elif current is None:
            raise BadInputError(path, f"expected a recording line like 's01_e01' first, found {line[:40]!r}", number)
        else:
            current.append((number, line))
    return {rec: (header, tuple(lines)) for rec, (header, lines) in blocks.items()}, duplicates


def _parse_segments(label_file: str, lines: tuple[tuple[int, str], ...]) -> tuple[list[Segment], list[Rejected]]:
    """``action: start end`` lines → segments; malformed lines, unknown actions and NaN frames → rejections."""
    segments: list[Segment] = []
    rejected: list[Rejected] = []
    for number, text in lines:
        try:
            match = _SEGMENT_RE.fullmatch(text)
            if match is None:
                raise BadInputError(label_file, f"expected 'action: start end', found {text[:60]!r}", number)
            if match["action"] not in LABEL_TOKENS:
                known = ", ".join(LABEL_TOKENS)
                raise BadInputError(label_file, f"unknown action {match['action'][:40]!r} (known: {known})", number)
            start = as_int(label_file, match["start"], "start frame", number)
            end = as_int(label_file, match["end"], "end frame", number)
            segments.append(Segment(LABEL_TOKENS.index(match["action"]), start, end, number))
        except BadInputError as err:
            rejected.append(Rejected.from_error(err))
    return segments, rejected


def _frame_ids(path: Path, column: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """Column 0 as int64 frame ids; ``BadInputError`` (with the line) unless non-negative, integer, non-decreasing."""
    bad = ~np.isfinite(column) | (column < 0) | (column != np.round(column)) | (column > 2**53)
    if bad.any():
        k = int(np.argmax(bad))
        raise BadInputError(path, f"frame id {column[k]!r} is not a non-negative integer", line=int(lines[k]))
    ids = column.astype(np.int64)
    back = np.flatnonzero(np.diff(ids) < 0)
    if back.size:
        k = int(back[0]) + 1
        raise BadInputError(path, f"frame id {ids[k]} is smaller than the previous one ({ids[k - 1]})", int(lines[k]))
    return ids


def _clip_sequence(
    path: Path, rows: np.ndarray, lines: np.ndarray, clip: Clip, name: str, fields: dict[str, int | str]
) -> Sequence:
    """Cut one clip out of the ``(T, 61)`` recording as ``(T', 1, 20, 3)``."""
    what = f"clip {name} (label line {clip.segment.line})"
    bad = first_bad_row(rows, clip.lo, clip.hi)
    if bad is not None:
        raise BadInputError(path, f"{what}: NaN or inf coordinate", line=int(lines[bad]))
    block = rows[clip.lo : clip.hi, 1:].reshape(clip.hi - clip.lo, 1, NUM_JOINTS, 3)
    keypoints = check_keypoints(path, block, num_joints=NUM_JOINTS, channels=(3,), max_persons=1, what=what)
    return Sequence(name=name, keypoints=keypoints, label=clip.segment.label, fields=dict(fields))
