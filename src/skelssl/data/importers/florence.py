"""Florence 3D Actions (``florence3d``), in Vemulapalli's ``.mat`` packaging.

Input (``--input``): the folder holding ``skeletal_data.mat`` (``skeletal_data``: a 215×1 struct array
with ``original_skeletal_data`` (3, 15, T) raw world coordinates in metres, ``joint_locations``
(body-normalised), ``time_stamps``, ``subject`` 1..10, ``action`` 1..9) and optionally
``tr_te_splits.mat`` (``tr_subjects``/``te_subjects``, 10×5: ten random half/half subject splits, stored
as ``split1`` … ``split10``). ``action_names.mat`` is not needed (names are in :data:`FLORENCE_CLASSES`).

Joints follow the dataset's body model (``body_model.mat`` bones): head, neck, torso (the hip centre),
left shoulder/elbow/wrist, right shoulder/elbow/wrist, left hip/knee/ankle, right hip/knee/ankle — the
``florence15`` layout. The packaging stores coordinate rows as (x, depth, height); they are reordered to
Kinect's (x, y = height, z = depth), the convention of every other importer (``raw_axes=true`` keeps
the stored order). Every sequence is one person (M = 1). Field: ``subjects``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from skelssl.data.importers.base import (
    Importer,
    Option,
    Rejected,
    Sequence,
    TaskResult,
    check_keypoints,
    digest_bytes,
    read_bytes,
)
from skelssl.data.importers.matv5 import check_mat_v5
from skelssl.errors import BadInputError

FLORENCE_CLASSES: tuple[str, ...] = (
    "wave", "drink", "answer phone", "clap", "tight lace", "sit down", "stand up", "read watch", "bow",
)  # fmt: skip
NUM_JOINTS = 15
DATA_FILE = "skeletal_data.mat"
SPLITS_FILE = "tr_te_splits.mat"
_STORED_TO_KINECT = (0, 2, 1)  # (x, depth, height) -> (x, height, depth)


class Florence3DImporter(Importer):
    """Florence 3D Actions: 215 sequences, 9 classes, 10 subjects, 15 joints."""

    source = "florence3d"
    layout = "florence15"
    num_persons = 1
    OPTIONS: ClassVar[dict[str, Option]] = {
        "raw_axes": Option(bool, False, "keep the .mat's (x, depth, height) coordinate order"),
    }

    def tasks(self) -> list[str]:
        path = self._data_path()
        if not path.is_file():
            raise BadInputError(path, f"not found; --input must be the folder holding {DATA_FILE}")
        splits = self._splits_path()
        if splits.is_file():
            read_subject_splits(splits)  # fail early on a malformed split file
        return [str(path)]

    def run(self, task: str) -> TaskResult:
        path = Path(task)
        data = b""
        try:
            data = read_bytes(path)
            records = _records(path, load_mat(path, data))
        except BadInputError as err:
            return TaskResult(rejected=[Rejected.from_error(err)], digest=digest_bytes(data))
        result = TaskResult(digest=digest_bytes(data))
        for i, record in enumerate(records):
            try:
                result.sequences.append(self._sequence(path, i, record))
            except BadInputError as err:
                result.rejected.append(Rejected.from_error(err))
        return result

    def _sequence(self, path: Path, i: int, record: Any) -> Sequence:
        what = f"skeletal_data({i + 1})"
        coords = np.asarray(_field(path, record, "original_skeletal_data", what))
        if coords.ndim != 3 or coords.shape[:2] != (3, NUM_JOINTS) or coords.dtype.kind not in "fiu":
            got = f"{coords.dtype} {coords.shape}"
            raise BadInputError(path, f"{what}.original_skeletal_data: expected numbers of shape (3, 15, T), got {got}")
        subject = _positive_int(path, _field(path, record, "subject", what), f"{what}.subject")
        action = _positive_int(path, _field(path, record, "action", what), f"{what}.action")
        if action > len(FLORENCE_CLASSES):
            raise BadInputError(path, f"{what}.action: unknown action {action} (Florence 3D has 1..9)")
        keypoints = coords.transpose(2, 1, 0)  # (T, 15, 3)
        if not self.options["raw_axes"]:
            keypoints = keypoints[:, :, _STORED_TO_KINECT]
        keypoints = check_keypoints(
            path, keypoints[:, None], num_joints=NUM_JOINTS, channels=(3,), max_persons=1, what=what
        )
        return Sequence(
            name=f"v{i + 1:03d}_s{subject:02d}_a{action:02d}",
            keypoints=np.ascontiguousarray(keypoints),
            label=action - 1,
            fields={"subjects": subject},
        )

    def class_names(self) -> list[str]:
        return list(FLORENCE_CLASSES)

    def splits(self) -> dict[str, dict[str, Any]]:
        path = self._splits_path()
        return read_subject_splits(path) if path.is_file() else {}

    def describe(self) -> dict[str, Any]:
        return {
            "coordinates": "original_skeletal_data (raw world, metres)"
            + (
                "; stored (x, depth, height) order" if self.options["raw_axes"] else "; reordered to (x, height, depth)"
            ),
            "splits": f"split1..split10 from {SPLITS_FILE} (tr/te subjects); leave-one-subject-out is not stored",
        }

    def _data_path(self) -> Path:
        return self.input if self.input.suffix == ".mat" else self.input / DATA_FILE

    def _splits_path(self) -> Path:
        return self._data_path().with_name(SPLITS_FILE)


# --------------------------------------------------------------------------------------- .mat helpers
def load_mat(path: str | Path, data: bytes) -> dict[str, Any]:
    """Load MATLAB (v4–v7.2) bytes with scipy; ``BadInputError`` for anything that is not a readable .mat.

    v5 bytes are first walked by :func:`~skelssl.data.importers.matv5.check_mat_v5`, so that no count in a
    damaged file can make scipy allocate more than the file holds (or crash); v7.3 (HDF5) is refused with a
    message saying how to re-save it.
    """
    from scipy.io import loadmat

    check_mat_v5(path, data)
    try:
        return loadmat(io.BytesIO(data))
    except Exception as err:  # scipy raises a zoo of types (ValueError, TypeError, OSError, zlib.error …) on bad bytes
        raise BadInputError(path, f"not a readable MATLAB .mat file ({type(err).__name__}: {str(err)[:80]})") from err


def read_subject_splits(path: Path) -> dict[str, dict[str, Any]]:
    """``split1`` … ``splitN`` (by ``subjects``) from a ``tr_te_splits.mat`` with ``tr_subjects``/``te_subjects``.

    Row k of the two (N, S) integer matrices gives split k+1's training and test subjects.
    """
    mat = load_mat(path, read_bytes(path))
    tables = []
    for key in ("tr_subjects", "te_subjects"):
        if key not in mat:
            raise BadInputError(path, f"has no variable {key!r}; expected tr_subjects and te_subjects")
        table = np.asarray(mat[key])
        if table.ndim != 2 or table.size == 0 or table.dtype.kind not in "iuf" or not np.isfinite(table).all():
            raise BadInputError(
                path, f"{key}: expected a 2-D matrix of subject numbers, got {table.dtype} {table.shape}"
            )
        if (table != np.round(table)).any() or (table < 1).any():
            raise BadInputError(path, f"{key}: subject numbers must be positive integers")
        tables.append(table.astype(np.int64))
    train, test = tables
    if train.shape[0] != test.shape[0]:
        raise BadInputError(path, f"tr_subjects has {train.shape[0]} splits but te_subjects {test.shape[0]}")
    out: dict[str, dict[str, Any]] = {}
    for k, (tr, te) in enumerate(zip(train, test, strict=True), start=1):
        if set(tr.tolist()) & set(te.tolist()):
            raise BadInputError(path, f"split {k}: a subject is both in tr_subjects and te_subjects")
        out[f"split{k}"] = {"by": "subjects", "train": sorted(set(tr.tolist())), "test": sorted(set(te.tolist()))}
    return out


def _records(path: Path, mat: dict[str, Any]) -> list[Any]:
    if "skeletal_data" not in mat:
        raise BadInputError(path, "has no variable 'skeletal_data'; is this Florence 3D's skeletal_data.mat?")
    table = mat["skeletal_data"]
    if not isinstance(table, np.ndarray) or table.size == 0:
        raise BadInputError(path, "skeletal_data: expected a non-empty struct array")
    if table.dtype.names is None and table.dtype != object:
        raise BadInputError(path, f"skeletal_data: expected a struct array, got {table.dtype} {table.shape}")
    return list(table.reshape(-1, order="F"))  # cells (1x1 struct arrays) or struct elements (np.void)


def _field(path: Path, record: Any, name: str, what: str) -> Any:
    """A struct field of one record, unwrapped from MATLAB's 1×1 cell/struct nesting."""
    names = getattr(getattr(record, "dtype", None), "names", None)
    if names is None or name not in names:
        raise BadInputError(path, f"{what}: has no field {name!r}")
    value = record[name]
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.reshape(-1)[0]
    return value


def _positive_int(path: Path, value: Any, what: str) -> int:
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "iuf":
        raise BadInputError(path, f"{what}: expected one number, got {arr.dtype} {arr.shape}")
    number = float(arr.reshape(-1)[0])
    if not np.isfinite(number) or number != int(number) or number < 1:
        raise BadInputError(path, f"{what}: expected a positive integer, got {number}")
    return int(number)
