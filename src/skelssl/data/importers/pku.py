"""PKU-MMD Phase I (``pku-mmd-v1``) and Phase II (``pku-mmd-v2``): continuous Kinect-v2 recordings cut
into action clips by per-video label files.

Input (``--input``): the unpacked release. The skeleton folder (any folder whose name contains
"skeleton", e.g. ``Data/PKU_Skeleton_Renew/`` or MAMP's ``skeleton/``) and the label folder (name
containing "label", e.g. ``Label/Train_Label_PKU_final/`` or ``label/``) are found up to two levels
below ``--input``; ``skeleton_dir=`` / ``label_dir=`` override the search. Video names:
Phase I ``0002-L`` (4-digit video number, view L/M/R), Phase II ``A01N02-M`` (``A`` = action
script 1..26, ``N`` = subject 1..13, view).

Formats (release README; checked against a real Phase II skeleton file published in a public repository):

- skeleton ``<video>.txt``: one line per frame, 150 numbers = 2 persons × 25 joints (Kinect v2, the
  ``ntu25`` order) × (x, y, z) in metres; the second person is all zero when absent.
- label ``<video>.txt``: ``action,start,end,confidence`` per line; ``action`` is 1-based in the Phase I
  numbering of 51 classes (Phase II files use the same ids; 41 of them occur), ``confidence`` 1 or 2.

Frame convention: a clip is skeleton rows ``start .. end-1`` (0-based row index, end exclusive), as in
MAMP's ``data/pku_v{1,2}/pku_gendata.py`` (``seq[start:end]``) and the official evaluation code
(``evaluate.py`` measures intervals as ``end - start``). Segments with ``start > end``, ``start == end``,
``end`` past the last row, an unknown action id, or (``overlap=reject``, default) overlapping another
segment are rejected with the label-file line.

Splits: if the release's split files are present under ``--input`` (``cross-subject.txt`` /
``cross-view.txt`` for Phase I, ``cross_subject_v2.txt`` / ``cross_view_v2.txt`` for Phase II; header
``Training videos:`` then a comma-separated list, ``Validataion videos:`` then the test list), ``xsub``
and ``xview`` are taken from them (``by: videos``; the "validation" list is the test set, as every
paper uses it). Without them the documented rules are used:

- Phase I ``xsub``: test videos 0291–0334, all three views (132 videos; the paper's 944 training /
  132 test videos), the official list as reproduced in Adamink/ViewAdaptiveLSTM ``scripts/gen_v1.py``;
  Phase I ``xview``: train views M and R, test view L (the paper's cross-view protocol).
- Phase II ``xsub``: test subjects N02, N03, N07, train the other ten (the official list reproduced in
  ViewAdaptiveLSTM ``scripts/gen_v2.py``; the same subjects in SkeletonX ``data/PKUMMDv2``). Phase II
  ``xview`` only exists when ``cross_view_v2.txt`` is given.
"""

from __future__ import annotations

import os
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
from skelssl.data.importers.segments import (
    OVERLAP_POLICIES,
    Clip,
    Segment,
    first_bad_row,
    locate_segments,
    parse_numeric_rows,
)
from skelssl.errors import BadInputError

#: Phase I action names, index = id - 1 (the release's ``Actions.xlsx`` order).
PKU_CLASSES: tuple[str, ...] = (
    "bow", "brushing hair", "brushing teeth", "check time (from watch)", "cheer up", "clapping",
    "cross hands in front (say stop)", "drink water", "drop", "eat meal/snack", "falling",
    "giving something to other person", "hand waving", "handshaking", "hopping (one foot jumping)",
    "hugging other person", "jump up", "kicking other person", "kicking something",
    "make a phone call/answer phone", "pat on back of other person", "pickup", "playing with phone/tablet",
    "point finger at the other person", "pointing to something with finger", "punching/slapping other person",
    "pushing other person", "put on a hat/cap", "put something inside pocket", "reading",
    "rub two hands together", "salute", "sitting down", "standing up", "take off a hat/cap",
    "take off glasses", "take off jacket", "take out something from pocket", "taking a selfie",
    "tear up paper", "throw", "touch back (backache)", "touch chest (stomachache/heart pain)",
    "touch head (headache)", "touch neck (neckache)", "typing on a keyboard",
    "use a fan (with hand or paper)/feeling warm", "wear jacket", "wear on glasses", "wipe face", "writing",
)  # fmt: skip

VIEWS: tuple[str, ...] = ("L", "M", "R")
_COLUMNS = 2 * 25 * 3
_SKELETON_SUFFIXES = (".txt", ".skeleton")
_LABEL_SUFFIXES = (".txt", ".label")
#: Phase I cross-subject test videos (all three views of each).
V1_XSUB_TEST = tuple(range(291, 335))
V1_VIDEO_NUMBERS = tuple(range(1, 365))
#: Phase II cross-subject subjects (the ``N`` of ``AxxNyy``).
V2_XSUB_TRAIN = (1, 4, 5, 6, 8, 9, 10, 11, 12, 13)
V2_XSUB_TEST = (2, 3, 7)
V2_SCRIPTS = tuple(range(1, 27))


@dataclass(frozen=True)
class PKUTask:
    """One video: its skeleton and label files (either may be missing, which ``run`` rejects)."""

    video: str
    skeleton: str | None
    label: str | None


class _PKUMMDImporter(Importer):
    """Common code of both phases; subclasses set the naming, split rules and split-file names."""

    layout = "ntu25"
    num_persons = 2
    OPTIONS: ClassVar[dict[str, Option]] = {
        "skeleton_dir": Option(str, "", "folder of <video>.txt skeleton files (default: searched under --input)"),
        "label_dir": Option(str, "", "folder of <video>.txt label files (default: searched under --input)"),
        "overlap": Option(
            str, "reject", "segments overlapping another: reject (both, with lines) or allow", OVERLAP_POLICIES
        ),
    }
    PHASE: ClassVar[str]
    EXAMPLE: ClassVar[str]
    NAME_RE: ClassVar[re.Pattern[str]]
    OTHER_SOURCE: ClassVar[str]
    OTHER_NAME_RE: ClassVar[re.Pattern[str]]
    SPLIT_FILES: ClassVar[dict[str, tuple[str, ...]]]

    # ----------------------------------------------------------------------------------- work units
    def tasks(self) -> list[PKUTask]:
        skeleton_dir, label_dir = self._folders()
        skeletons = _data_files(skeleton_dir, _SKELETON_SUFFIXES)
        labels = _data_files(label_dir, _LABEL_SUFFIXES)
        if not skeletons:
            raise BadInputError(skeleton_dir, "holds no skeleton files (<video>.txt); check --input")
        self._check_phase(skeleton_dir, skeletons)
        self.splits()  # fail early on a malformed official split file
        videos = sorted(set(skeletons) | set(labels))
        return [PKUTask(v, _str_or_none(skeletons.get(v)), _str_or_none(labels.get(v))) for v in videos]

    def run(self, task: PKUTask) -> TaskResult:
        read: list[bytes] = []
        try:
            sequences, rejected = self._run(task, read)
        except BadInputError as err:
            sequences, rejected = [], [Rejected.from_error(err)]
        return TaskResult(sequences=sequences, rejected=rejected, digest=digest_bytes(b"".join(read)))

    def _run(self, task: PKUTask, read: list[bytes]) -> tuple[list[Sequence], list[Rejected]]:
        if task.skeleton is None:
            raise BadInputError(task.label or task.video, f"video {task.video} has a label file but no skeleton file")
        if task.label is None:
            raise BadInputError(
                task.skeleton, f"video {task.video} has no label file; add <video>.txt to the label folder"
            )
        fields = self._fields(task.skeleton, task.video)
        skeleton_path, label_path = Path(task.skeleton), Path(task.label)
        read.append(read_bytes(skeleton_path))
        read.append(read_bytes(label_path))
        rows, lines = parse_numeric_rows(skeleton_path, read[0], _COLUMNS, what="2 persons x 25 joints x xyz")
        segments, rejected = parse_label_rows(label_path, read[1], len(PKU_CLASSES))
        if not segments and not rejected:
            raise BadInputError(label_path, "lists no action (expected lines 'action,start,end,confidence')")
        clips, bad = locate_segments(
            label_path, segments, np.arange(len(rows)), end_inclusive=False, overlap=self.options["overlap"]
        )
        rejected.extend(bad)
        sequences: list[Sequence] = []
        for k, clip in enumerate(clips):
            try:
                sequences.append(_clip_sequence(skeleton_path, rows, lines, clip, task.video, fields, k))
            except BadInputError as err:
                rejected.append(Rejected.from_error(err))
        return sequences, rejected

    def _fields(self, path: str, video: str) -> dict[str, int | str]:
        match = self.NAME_RE.fullmatch(video)
        if match is None:
            hint = f"; this looks like {self.OTHER_SOURCE}" if self.OTHER_NAME_RE.fullmatch(video) else ""
            raise BadInputError(
                path, f"file name {video!r} does not follow the {self.PHASE} naming (e.g. {self.EXAMPLE}){hint}"
            )
        fields: dict[str, int | str] = {"videos": video, "views": video[-1]}
        if "subject" in match.groupdict():
            fields["subjects"] = int(match["subject"])
        return fields

    # ----------------------------------------------------------------------------------- metadata
    def class_names(self) -> list[str]:
        return list(PKU_CLASSES)

    def splits(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in ("xsub", "xview"):
            found = self._split_file(name)
            if found is not None:
                train, test = parse_split_file(found, self.NAME_RE)
                out[name] = {"by": "videos", "train": train, "test": test}
            else:
                rule = self._rule_split(name)
                if rule is not None:
                    out[name] = rule
        return out

    def describe(self) -> dict[str, Any]:
        sources = {name: str(self._split_file(name) or "rule") for name in ("xsub", "xview")}
        return {
            "phase": self.PHASE,
            "frames": "clip = skeleton rows start..end-1 (0-based row index, end exclusive; MAMP pku_gendata.py)",
            "labels": "Phase I action ids 1..51 -> label id-1",
            "overlap": self.options["overlap"],
            "split_sources": sources,
        }

    def _rule_split(self, name: str) -> dict[str, Any] | None:
        raise NotImplementedError

    # ----------------------------------------------------------------------------------- discovery
    def _folders(self) -> tuple[Path, Path]:
        if not self.input.is_dir():
            raise BadInputError(self.input, "is not a folder; give the unpacked PKU-MMD release as --input")
        skeleton = _resolve_option(self.input, self.options["skeleton_dir"]) or _find_folder(self.input, "skeleton")
        label = _resolve_option(self.input, self.options["label_dir"]) or _find_folder(self.input, "label")
        return skeleton, label

    def _check_phase(self, folder: Path, files: dict[str, Path]) -> None:
        if any(self.NAME_RE.fullmatch(v) for v in files):
            return
        if any(self.OTHER_NAME_RE.fullmatch(v) for v in files):
            raise BadInputError(folder, f"holds {self.OTHER_SOURCE} files, not {self.PHASE}; use that source")
        example = next(iter(sorted(files)))
        raise BadInputError(folder, f"no file follows the {self.PHASE} naming {self.EXAMPLE} (found e.g. {example!r})")

    def _split_file(self, name: str) -> Path | None:
        if not self.input.is_dir():
            return None
        wanted = {n.lower() for n in self.SPLIT_FILES[name]}
        folders = [self.input, *_subfolders(self.input)]
        hits = sorted(f for d in folders for f in _files(d) if f.name.lower() in wanted)
        return hits[0] if hits else None


class PKUMMDv1Importer(_PKUMMDImporter):
    """PKU-MMD Phase I: 1076 videos, 51 classes, 66 subjects, 3 views. Fields ``videos``, ``views``."""

    source = "pku-mmd-v1"
    PHASE = "PKU-MMD Phase I"
    EXAMPLE = "0002-L"
    NAME_RE = re.compile(r"(?P<number>\d{4})-(?P<view>[LMR])")
    OTHER_SOURCE = "pku-mmd-v2"
    OTHER_NAME_RE = re.compile(r"A\d{2}N\d{2}-[LMR]")
    SPLIT_FILES: ClassVar[dict[str, tuple[str, ...]]] = {
        "xsub": ("cross-subject.txt", "cross_subject.txt", "cross_subject_v1.txt"),
        "xview": ("cross-view.txt", "cross_view.txt", "cross_view_v1.txt"),
    }

    def _rule_split(self, name: str) -> dict[str, Any] | None:
        if name == "xview":
            return {"by": "views", "train": ["M", "R"], "test": ["L"]}
        test = set(V1_XSUB_TEST)
        names = [(n, f"{n:04d}-{v}") for n in V1_VIDEO_NUMBERS for v in VIEWS]
        return {
            "by": "videos",
            "train": [video for n, video in names if n not in test],
            "test": [video for n, video in names if n in test],
        }


class PKUMMDv2Importer(_PKUMMDImporter):
    """PKU-MMD Phase II: ~1009 videos, 13 subjects, 3 views. Fields ``videos``, ``views``, ``subjects``."""

    source = "pku-mmd-v2"
    PHASE = "PKU-MMD Phase II"
    EXAMPLE = "A01N02-L"
    NAME_RE = re.compile(r"A(?P<script>\d{2})N(?P<subject>\d{2})-(?P<view>[LMR])")
    OTHER_SOURCE = "pku-mmd-v1"
    OTHER_NAME_RE = re.compile(r"\d{4}-[LMR]")
    SPLIT_FILES: ClassVar[dict[str, tuple[str, ...]]] = {
        "xsub": ("cross_subject_v2.txt", "cross-subject_v2.txt", "cross-subject-v2.txt"),
        "xview": ("cross_view_v2.txt", "cross-view_v2.txt", "cross-view-v2.txt"),
    }

    def _rule_split(self, name: str) -> dict[str, Any] | None:
        if name == "xsub":
            return {"by": "subjects", "train": list(V2_XSUB_TRAIN), "test": list(V2_XSUB_TEST)}
        return None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["labels"] += " (Phase II uses 41 of the 51 ids; the 51-way label space is kept, as in MAMP)"
        return info


# --------------------------------------------------------------------------------------- parsing
def parse_label_rows(path: str | Path, data: bytes, num_classes: int) -> tuple[list[Segment], list[Rejected]]:
    """Parse ``action,start,end[,confidence]`` lines into segments; bad lines become rejections.

    ``action`` is 1-based; the segment label is ``action - 1``. Blank lines are skipped.
    """
    text = decode_text(path, data)
    segments: list[Segment] = []
    rejected: list[Rejected] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            segments.append(_label_row(path, line, number, num_classes))
        except BadInputError as err:
            rejected.append(Rejected.from_error(err))
    return segments, rejected


def _label_row(path: str | Path, line: str, number: int, num_classes: int) -> Segment:
    tokens = [t.strip() for t in line.split(",")]
    if tokens and tokens[-1] == "":
        tokens.pop()  # a trailing comma
    if len(tokens) not in (3, 4):
        raise BadInputError(path, f"expected 'action,start,end,confidence', found {line[:60]!r}", line=number)
    action = as_int(path, tokens[0], "action id", number)
    start = as_int(path, tokens[1], "start frame", number)
    end = as_int(path, tokens[2], "end frame", number)
    if len(tokens) == 4:
        as_int(path, tokens[3], "confidence", number)
    if not 1 <= action <= num_classes:
        raise BadInputError(path, f"unknown action id {action} (PKU-MMD ids are 1..{num_classes})", line=number)
    return Segment(label=action - 1, start=start, end=end, line=number)


def parse_split_file(path: Path, name_re: re.Pattern[str]) -> tuple[list[str], list[str]]:
    """Read an official split file: ``Training videos:`` + list, ``Validataion videos:`` + list.

    Returns sorted ``(train, test)`` video names. ``BadInputError`` (with the line) for a name that does
    not follow ``name_re``, a missing section, or a video listed in both.
    """
    text = decode_text(path, read_bytes(path))
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        lowered = line.lower()
        if lowered.startswith("training"):
            current = "train"
        elif lowered.startswith(("validat", "testing", "test ")):
            current = "test"
        elif current is None:
            raise BadInputError(path, "expected a 'Training videos:' header first", line=number)
        else:
            for name in (n.strip() for n in line.split(",")):
                if name and not name_re.fullmatch(name):
                    raise BadInputError(path, f"{name[:40]!r} is not a video name of this phase", line=number)
                if name:
                    sections.setdefault(current, []).append(name)
    if not sections.get("train") or not sections.get("test"):
        raise BadInputError(path, "needs a 'Training videos:' and a 'Validataion videos:' list")
    both = set(sections["train"]) & set(sections["test"])
    if both:
        raise BadInputError(path, f"lists {sorted(both)[0]!r} as both training and test video")
    return sorted(set(sections["train"])), sorted(set(sections["test"]))


def _clip_sequence(
    path: Path, rows: np.ndarray, lines: np.ndarray, clip: Clip, video: str, fields: dict[str, int | str], k: int
) -> Sequence:
    """Cut one clip out of the ``(T, 150)`` recording as ``(T', M, 25, 3)``; M = 1 when person 2 is absent."""
    what = f"clip {video}_{k:02d} (label line {clip.segment.line})"
    bad = first_bad_row(rows, clip.lo, clip.hi)
    if bad is not None:
        raise BadInputError(path, f"{what}: NaN or inf coordinate", line=int(lines[bad]))
    block = rows[clip.lo : clip.hi].reshape(clip.hi - clip.lo, 2, 25, 3)
    if not block[:, 1].any():
        block = block[:, :1]
    keypoints = check_keypoints(path, block, num_joints=25, channels=(3,), max_persons=2, what=what)
    return Sequence(name=f"{video}_{k:02d}", keypoints=keypoints, label=clip.segment.label, fields=dict(fields))


# --------------------------------------------------------------------------------------- files
def _resolve_option(root: Path, value: str) -> Path | None:
    if not value:
        return None
    path = Path(value) if os.path.isabs(value) else root / value
    if not path.is_dir():
        raise BadInputError(path, "is not a folder (from a *_dir= option)")
    return path


def _find_folder(root: Path, kind: str) -> Path:
    """The one folder (``root`` or up to two levels below) whose name contains ``kind`` and holds .txt files."""
    suffixes = _SKELETON_SUFFIXES if kind == "skeleton" else _LABEL_SUFFIXES
    candidates = [root, *_subfolders(root)]
    candidates += [d for sub in _subfolders(root) for d in _subfolders(sub)]
    hits = sorted(d for d in candidates if kind in d.name.lower() and any(f.suffix in suffixes for f in _files(d)))
    if not hits:
        raise BadInputError(
            root,
            f"no {kind} folder found (a folder named like '*{kind}*' holding <video>.txt files); pass {kind}_dir=PATH",
        )
    if len(hits) > 1:
        listed = ", ".join(str(h) for h in hits[:4])
        raise BadInputError(root, f"several {kind} folders found ({listed}); choose one with {kind}_dir=PATH")
    return hits[0]


def _subfolders(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it if e.is_dir())
    except OSError:
        return []


def _files(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as it:
            return [Path(e.path) for e in it if e.is_file()]
    except OSError:
        return []


def _data_files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """``{video: path}`` of the files in ``folder`` with one of ``suffixes`` (first suffix preferred)."""
    found: dict[str, Path] = {}
    for path in sorted(_files(folder), key=lambda p: (suffixes.index(p.suffix) if p.suffix in suffixes else 99, p)):
        if path.suffix in suffixes and not path.name.startswith("."):
            found.setdefault(path.stem, path)
    return found


def _str_or_none(path: Path | None) -> str | None:
    return None if path is None else str(path)
