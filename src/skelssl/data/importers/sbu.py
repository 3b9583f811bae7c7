"""SBU Kinect Interaction v2.0 (Yun et al., CVPR-W 2012): two-person interactions, 15 OpenNI joints.

Layout on disk: ``<pair sXXsYY>/<class 01..08>/<take 001..>/skeleton_pos.txt``. Each row of a file is
``frame#, PA(1..15), PB(1..15)``: a frame number, then person A's (left) and person B's (right) 15 joints as
``x, y, z`` — 91 comma-separated numbers. Joint order (the dataset README): head, neck, torso, left
shoulder, left elbow, left hand, right shoulder, right elbow, right hand, left hip, left knee, left foot,
right hip, right knee, right foot — the ``sbu15`` layout.

Coordinates are the dataset's *normalised* values (x, y in [0, 1], z in [0, 7.8125]); they are stored as
they are unless ``denormalize=true`` applies the README's inverse:
``X = 1280 - 2560 x``, ``Y = 960 - 1920 y``, ``Z = z * 10000 / 7.8125``.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from skelssl.data.importers.base import (
    Importer,
    Option,
    Sequence,
    TaskResult,
    check_keypoints,
    decode_text,
    run_one_file,
)
from skelssl.errors import BadInputError

#: Interaction names indexed by the 0-based label (class folders 01..08).
CLASS_NAMES: tuple[str, ...] = (
    "approaching",
    "departing",
    "kicking",
    "punching",
    "pushing",
    "hugging",
    "shaking hands",
    "exchanging",
)
#: The 21 two-actor sets, in the README's order (Set01 … Set21).
PAIRS: tuple[str, ...] = (
    "s01s02", "s01s03", "s01s07", "s02s01", "s02s03", "s02s06", "s02s07",
    "s03s02", "s03s04", "s03s05", "s03s06", "s04s02", "s04s03", "s04s06",
    "s05s02", "s05s03", "s06s02", "s06s03", "s06s04", "s07s01", "s07s03",
)  # fmt: skip
#: The official 5-fold cross-validation over sets (dataset README, "Details"): the test pairs of each fold.
FOLDS: tuple[tuple[str, ...], ...] = (
    ("s01s02", "s03s04", "s05s02", "s06s04"),
    ("s02s03", "s02s07", "s03s05", "s05s03"),
    ("s01s03", "s01s07", "s07s01", "s07s03"),
    ("s02s01", "s02s06", "s03s02", "s03s06"),
    ("s04s02", "s04s03", "s04s06", "s06s02", "s06s03"),
)
NUM_JOINTS = 15
NUM_PERSONS = 2
NUM_COLUMNS = 1 + NUM_PERSONS * NUM_JOINTS * 3
FILE_NAME = "skeleton_pos.txt"
DENORMALIZE = "X = 1280 - 2560 * x, Y = 960 - 1920 * y, Z = z * 10000 / 7.8125"

_PAIR = re.compile(r"s\d{2}s\d{2}")


class SBUImporter(Importer):
    """SBU ``skeleton_pos.txt`` files → two-person ``sbu15`` sequences with ``pairs`` and ``takes``."""

    source: ClassVar[str] = "sbu"
    layout = "sbu15"
    num_persons = NUM_PERSONS
    OPTIONS: ClassVar[dict[str, Option]] = {
        "denormalize": Option(bool, False, "convert the normalised coordinates back with the README formula"),
    }

    def tasks(self) -> list[str]:
        """Sorted ``skeleton_pos.txt`` paths under ``input`` (the folder of ``sXXsYY`` sets, or its parent)."""
        root = self.input
        if not root.is_dir():
            raise BadInputError(root, "not a folder; pass the SBU folder that holds the sXXsYY set folders")
        files = _find(root)
        if not files and (root / "SBU").is_dir():
            files = _find(root / "SBU")
        if not files:
            raise BadInputError(root, f"no sXXsYY/<class>/<take>/{FILE_NAME} files found; pass the SBU folder")
        return [str(path) for path in files]

    def run(self, task: str) -> TaskResult:
        return run_one_file(Path(task), partial(parse_sbu, denormalize=self.options["denormalize"]), max_bytes=1 << 26)

    def class_names(self) -> list[str]:
        return list(CLASS_NAMES)

    def splits(self) -> dict[str, dict[str, Any]]:
        """``fold1`` … ``fold5``: the README's 5-fold cross-validation, by subject pair."""
        return {
            f"fold{k}": {"by": "pairs", "train": [p for p in PAIRS if p not in test], "test": list(test)}
            for k, test in enumerate(FOLDS, start=1)
        }

    def describe(self) -> dict[str, Any]:
        normalised = not self.options["denormalize"]
        return {
            "format": "skeleton_pos.txt rows: frame#, person A (left) 15 x (x,y,z), person B (right) 15 x (x,y,z)",
            "coordinates": (
                "the dataset's normalised values, as distributed (x, y in [0, 1], z in [0, 7.8125])"
                if normalised
                else f"denormalised with the README formula ({DENORMALIZE})"
            ),
            "denormalize_formula": DENORMALIZE,
            "persons": "person A (left) is person 0, person B (right) is person 1",
            "folds": "dataset README (Yun et al. 2012), 5-fold cross-validation over the 21 sets",
        }


def _find(root: Path) -> list[Path]:
    return sorted(p for p in root.glob(f"*/*/*/{FILE_NAME}") if _PAIR.fullmatch(p.parents[2].name))


def parse_sbu(path: Path, data: bytes, *, denormalize: bool = False) -> Sequence:
    """Parse one ``skeleton_pos.txt`` (its path gives set, class and take) into ``(T, 2, 15, 3)``."""
    take_dir, class_dir, pair = path.parent.name, path.parent.parent.name, path.parents[2].name
    if not re.fullmatch(r"\d{2}", class_dir) or not 1 <= int(class_dir) <= len(CLASS_NAMES):
        raise BadInputError(path, f"class folder {class_dir!r} is not one of 01..{len(CLASS_NAMES):02d}")
    if not re.fullmatch(r"\d{1,4}", take_dir):
        raise BadInputError(path, f"take folder {take_dir!r} is not a number such as 001")
    rows = _rows(path, decode_text(path, data))
    frames = rows[:, 0]
    if not np.all(frames == np.round(frames)):
        raise BadInputError(
            path, "frame numbers (first column) are not integers", line=_first(frames != np.round(frames))
        )
    if len(frames) > 1 and not np.all(np.diff(frames) > 0):
        raise BadInputError(path, "frame numbers do not increase", line=_first(np.diff(frames) <= 0) + 1)
    keypoints = rows[:, 1:].reshape(len(rows), NUM_PERSONS, NUM_JOINTS, 3)
    if denormalize:
        keypoints = denormalize_sbu(keypoints)
    keypoints = check_keypoints(path, keypoints, num_joints=NUM_JOINTS, channels=(3,), max_persons=NUM_PERSONS)
    return Sequence(
        name=f"{pair}_{class_dir}_{take_dir}",
        keypoints=keypoints,
        label=int(class_dir) - 1,
        fields={"pairs": pair, "takes": int(take_dir)},
    )


def _rows(path: Path, text: str) -> np.ndarray:
    """The file's rows as float64 ``(T, 91)``; names the first bad line."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise BadInputError(path, "file has no rows")
    for number, line in enumerate(lines, start=1):
        if line.count(",") != NUM_COLUMNS - 1:
            raise BadInputError(
                path, f"row has {line.count(',') + 1} comma-separated values, expected {NUM_COLUMNS}", line=number
            )
    try:
        values = np.array(",".join(lines).split(","), dtype=np.float64)
    except ValueError:
        for number, line in enumerate(lines, start=1):
            try:
                np.array(line.split(","), dtype=np.float64)
            except ValueError as err:
                raise BadInputError(path, f"not a number in this row: {err}", line=number) from None
        raise  # pragma: no cover - the whole text failed, so one line must
    return values.reshape(len(lines), NUM_COLUMNS)


def _first(mask: np.ndarray) -> int:
    """1-based index of the first true entry."""
    return int(np.flatnonzero(mask)[0]) + 1


def denormalize_sbu(keypoints: np.ndarray) -> np.ndarray:
    """Undo SBU's normalisation (README formula) on ``(..., 3)`` coordinates."""
    out = np.empty_like(keypoints, dtype=np.float64)
    out[..., 0] = 1280.0 - 2560.0 * keypoints[..., 0]
    out[..., 1] = 960.0 - 1920.0 * keypoints[..., 1]
    out[..., 2] = keypoints[..., 2] * 10000.0 / 7.8125
    return out
