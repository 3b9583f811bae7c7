"""Northwestern-UCLA Multiview Action 3D (NW-UCLA), as the CTR-GCN ``all_sqe`` json files.

One file per sequence, ``aAA_sSS_eEE_vVV.json``::

    {"file_name": "a01_s01_e00_v01", "skeletons": [T][20][3] (Kinect v1 joints, metres), "label": 1..10}

``label`` 1..10 indexes the action ids a01 … a06, a08, a09, a11, a12 (a07 and a10 are not in the set). The
standard protocol is cross-view: views 1 and 2 train, view 3 tests (1,020 / 464 sequences).
"""

from __future__ import annotations

import json
import re
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

#: Action id (the ``aAA`` number) of each 0-based label.
ACTION_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 9, 11, 12)
#: NW-UCLA action names, indexed by the 0-based label (Wang et al., CVPR 2014).
CLASS_NAMES: tuple[str, ...] = (
    "pick up with one hand",
    "pick up with two hands",
    "drop trash",
    "walk around",
    "sit down",
    "stand up",
    "donning",
    "doffing",
    "throw",
    "carry",
)
VIEWS: tuple[int, ...] = (1, 2, 3)
NUM_JOINTS = 20

_NAME = re.compile(r"a(\d{2})_s(\d{2})_e(\d{2})_v(\d{2})")


class NWUCLAImporter(Importer):
    """NW-UCLA json files → one-person ``kinect20`` sequences with ``subjects``, ``views`` and ``takes``."""

    source: ClassVar[str] = "nw-ucla"
    layout = "kinect20"
    num_persons = 1
    OPTIONS: ClassVar[dict[str, Option]] = {}

    def tasks(self) -> list[str]:
        """Sorted json paths in ``input`` (or in ``input/all_sqe``)."""
        folder = self.input
        if not folder.is_dir():
            raise BadInputError(folder, "not a folder; pass the NW-UCLA 'all_sqe' folder of json files")
        files = sorted(folder.glob("*.json"))
        if not files and (folder / "all_sqe").is_dir():
            files = sorted((folder / "all_sqe").glob("*.json"))
        if not files:
            raise BadInputError(folder, "no *.json files found; pass the NW-UCLA 'all_sqe' folder")
        return [str(path) for path in files]

    def run(self, task: str) -> TaskResult:
        return run_one_file(Path(task), parse_nwucla, max_bytes=1 << 28)

    def class_names(self) -> list[str]:
        return list(CLASS_NAMES)

    def splits(self) -> dict[str, dict[str, Any]]:
        return {"xview": {"by": "views", "train": [1, 2], "test": [3]}}

    def describe(self) -> dict[str, Any]:
        return {
            "format": "CTR-GCN all_sqe json: {file_name, skeletons [T][20][3], label 1..10}",
            "action_ids": [f"a{a:02d}" for a in ACTION_IDS],
            "coordinates": "Kinect v1 camera space, metres, as in the files",
            "notes": [
                "a02_s09_e04_v02 and a02_s09_e04_v03 hold a single frame each; they are kept",
                "in the CTR-GCN all_sqe copy, 95 view-3 files of actions a02/a03 have skeletons identical to "
                "the view-2 file of the same subject and take, so they also appear in the xview training set",
            ],
        }


def parse_nwucla(path: Path, data: bytes) -> Sequence:
    """Parse one NW-UCLA json file's bytes into a ``(T, 1, 20, 3)`` sequence; ``BadInputError`` if invalid."""
    text = decode_text(path, data)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise BadInputError(path, f"invalid json: {err.msg}", line=err.lineno) from err
    except RecursionError as err:
        raise BadInputError(path, "invalid json: nested too deeply") from err
    if not isinstance(obj, dict):
        raise BadInputError(path, "expected a json object with file_name, skeletons and label")
    missing = [key for key in ("file_name", "skeletons", "label") if key not in obj]
    if missing:
        raise BadInputError(path, f"missing key(s) {', '.join(missing)}")
    name = obj["file_name"]
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadInputError(path, f"file_name {str(name)[:40]!r} is not of the form aAA_sSS_eEE_vVV")
    if name != path.stem:
        raise BadInputError(path, f"file_name {name!r} inside does not match the file's name {path.stem!r}")
    action, subject, take, view = (int(g) for g in _NAME.fullmatch(name).groups())  # type: ignore[union-attr]
    label = _label(path, obj["label"], action)
    if view not in VIEWS:
        raise BadInputError(path, f"view {view} is not an NW-UCLA view (1, 2 or 3)")
    keypoints = _skeletons(path, obj["skeletons"])
    keypoints = check_keypoints(path, keypoints, num_joints=NUM_JOINTS, channels=(3,), max_persons=1)
    return Sequence(
        name=name,
        keypoints=keypoints,
        label=label,
        fields={"subjects": subject, "views": view, "takes": take},
    )


def _label(path: Path, value: Any, action: int) -> int:
    """0-based label from the json ``label`` (1..10), checked against the action id in the name."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInputError(path, f"label {str(value)[:40]!r} is not an integer 1..{len(ACTION_IDS)}")
    if not 1 <= value <= len(ACTION_IDS):
        raise BadInputError(path, f"label {value} is outside 1..{len(ACTION_IDS)}")
    if action not in ACTION_IDS:
        raise BadInputError(path, f"action a{action:02d} is not an NW-UCLA action")
    if ACTION_IDS[value - 1] != action:
        raise BadInputError(
            path,
            f"label {value} means action a{ACTION_IDS[value - 1]:02d}, but the file name says a{action:02d}",
        )
    return value - 1


def _skeletons(path: Path, value: Any) -> np.ndarray:
    """``skeletons`` as float64 ``(T, 1, 20, 3)``; rejects ragged, non-numeric or wrongly shaped data."""
    if not isinstance(value, list):
        raise BadInputError(path, "skeletons is not a list of frames")
    if not value:
        raise BadInputError(path, "skeletons has no frames")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as err:
        raise BadInputError(path, "skeletons is not a regular [T][20][3] array (frames of unequal shape)") from err
    if arr.dtype.kind not in "if":
        raise BadInputError(path, "skeletons holds values that are not numbers")
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise BadInputError(path, f"skeletons has shape {arr.shape}, expected [T][{NUM_JOINTS}][3]")
    if arr.shape[1] != NUM_JOINTS:
        raise BadInputError(path, f"skeletons has {arr.shape[1]} joints per frame, NW-UCLA has {NUM_JOINTS}")
    return arr.astype(np.float64, copy=False)[:, None]
