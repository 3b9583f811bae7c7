"""Importers for the preprocessed files other skeleton toolkits write.

- ``pyskl``: a PySKL / MMAction2 annotation pickle ``{"split": {name: [frame_dir …]}, "annotations": [{"frame_dir",
  "label", "keypoint" (M, T, V, C), "total_frames", optional "keypoint_score" (M, T, V)} …]}`` (or a bare list of
  annotations). Loaded with :func:`skelssl.data.safe_pickle.safe_load`: nothing in the pickle can run.
- ``aimclr``: an ST-GCN / AimCLR / CrosSCLR / PSTL folder: ``{train,val}_<stream>.npy`` ``(N, C, T, V, M)``
  (``stream`` = ``data_joint`` by default, ``position`` for PSTL's frame50 files) and ``{train,val}_label.pkl``
  holding ``(names, labels)``. The arrays are memory-mapped, never unpickled.
- ``ctrgcn``: a CTR-GCN / MAMP ``.npz`` with ``x_train`` ``(N, T, M·V·C)``, ``y_train`` (one-hot ``(N, K)`` or int
  ``(N,)``), ``x_test`` and ``y_test``.

PySKL splits are stored as one string field per split pair, ``split_<name>`` (``"train"``, ``"test"`` or
``"none"``), so that ``xsub_train``/``xsub_val`` become the store split ``xsub`` = ``{"by": "split_xsub",
"train": ["train"], "test": ["test"]}``. AimCLR and CTR-GCN files carry one train/test division, stored as the
field ``split`` and the split ``default``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from skelssl.data.importers.base import (
    MAX_BODIES,
    MAX_CLASSES,
    MAX_FRAMES,
    Importer,
    Option,
    Rejected,
    Sequence,
    TaskResult,
    check_keypoints,
    digest_file,
)
from skelssl.data.importers.generic import READ_ERRORS, NpyMember, digest_arrays, layout_for, npz_array, npz_members
from skelssl.data.safe_pickle import safe_load
from skelssl.errors import BadInputError, ConfigError
from skelssl.skeleton.layouts import LAYOUTS, get_layout

#: Layout assumed for a joint count when the ``layout`` option is not given.
DEFAULT_LAYOUTS: dict[int, str] = {25: "ntu25", 17: "coco17", 20: "kinect20"}
#: Value of a ``split_<name>`` field for a sequence in neither part of that split.
NOT_IN_SPLIT = "none"

_LAYOUT_OPTION = Option(
    str, "", "layout name (default: ntu25 for 25 joints, coco17 for 17, kinect20 for 20)", ("", *LAYOUTS)
)
_CLASS_NAMES_OPTION = Option(str, "", "text file with one class name per line (default: class_000, class_001 …)")
_CHUNK_OPTION = Option(int, 512, "sequences per task (memory-mapped inputs)", minimum=1)


def resolve_layout(path: Path, num_joints: int, option: str) -> str:
    """The layout for ``num_joints`` joints: the ``layout`` option (checked) or the default for that count."""
    if option:
        expected = get_layout(option).num_joints
        if expected != num_joints:
            raise BadInputError(path, f"the data has {num_joints} joints but layout={option} has {expected}")
        return option
    if num_joints not in DEFAULT_LAYOUTS:
        raise BadInputError(
            path, f"cannot tell the layout of {num_joints}-joint data; pass layout=NAME (one of {', '.join(LAYOUTS)})"
        )
    return DEFAULT_LAYOUTS[num_joints]


def class_names_for(option: str, num_classes: int) -> tuple[str, ...]:
    """Class names from the ``class_names`` option's file, else ``class_000`` … for ``num_classes``."""
    if not option:
        return tuple(f"class_{k:03d}" for k in range(num_classes))
    path = Path(option)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise BadInputError(path, f"cannot read the class_names file: {err}") from err
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise BadInputError(path, "the class_names file holds no names (one per line)")
    if len(names) < num_classes:
        raise BadInputError(path, f"{len(names)} class names, but the labels go up to {num_classes - 1}")
    return names


def _label(value: Any) -> int | None:
    """An int label in ``0 .. MAX_CLASSES - 1``, or ``None`` when ``value`` is not one."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return None
    return int(value) if 0 <= value < MAX_CLASSES else None


def _count(value: Any) -> int | None:
    """A non-negative int, or ``None`` when ``value`` is not one."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return None
    return int(value) if value >= 0 else None


def _valid_lengths(nonzero: np.ndarray) -> np.ndarray:
    """Per row of a ``(B, T)`` "frame has data" mask: frames up to the last one with data (0 if none)."""
    t = nonzero.shape[1]
    last = t - np.argmax(nonzero[:, ::-1], axis=1)
    return np.where(nonzero.any(axis=1), last, 0)


def _split_field(base: str) -> str:
    return "split_" + (re.sub(r"\W", "_", base) if base else "default")


# --------------------------------------------------------------------------------------------------------- pyskl


@dataclass(frozen=True)
class _PySKLInfo:
    layout: str
    num_persons: int
    channels: int
    class_names: tuple[str, ...]
    split_members: dict[str, tuple[frozenset[str], frozenset[str]]]  # field -> (train names, test names)
    split_names: dict[str, str]  # store split name -> field
    notes: tuple[str, ...]


class PySKLImporter(Importer):
    """A PySKL annotation pickle → sequences with one ``split_<name>`` field per split pair (see module doc)."""

    source: ClassVar[str] = "pyskl"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "layout": _LAYOUT_OPTION,
        "persons": Option(
            int, 2, "keep at most this many persons per annotation: the first ones, as PySKL's FormatGCNInput does"
        ),
        "scores": Option(bool, False, "append keypoint_score to 2D keypoints as a third channel"),
        "class_names": _CLASS_NAMES_OPTION,
    }

    def __init__(self, input: str | Path, **options: Any) -> None:
        super().__init__(input, **options)
        if not 1 <= self.options["persons"] <= MAX_BODIES:
            raise ConfigError(f"option persons={self.options['persons']}: must be 1..{MAX_BODIES}")
        self._loaded: tuple[list[Any], dict[str, list[str]]] | None = None
        self._summary: _PySKLInfo | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Never ship the whole pickle to a worker process: it reloads the file. Being pickled means the work
        # runs elsewhere, so this process's copy is released too (one copy in memory, not two).
        self._loaded = None
        state = dict(self.__dict__)
        return state

    @property
    def layout(self) -> str:  # type: ignore[override]
        return self._info().layout

    @property
    def num_persons(self) -> int:  # type: ignore[override]
        return self._info().num_persons

    def tasks(self) -> list[str]:
        """One task: the whole pickle (it is loaded once)."""
        self._info()
        return [str(self.input)]

    def run(self, task: str) -> TaskResult:
        path = Path(task)
        try:
            annotations, _ = self._data()
            info = self._info()
            digest = digest_file(path)
        except BadInputError as err:
            return TaskResult(rejected=[Rejected.from_error(err)])
        result = TaskResult(digest=digest)
        for i, ann in enumerate(annotations):
            try:
                result.sequences.append(self._sequence(path, i, ann, info))
            except BadInputError as err:
                result.rejected.append(Rejected.from_error(err))
        self._loaded = None  # the sequences keep views of the arrays they need; the rest can go
        return result

    def class_names(self) -> list[str]:
        return list(self._info().class_names)

    def splits(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"by": field, "train": ["train"], "test": ["test"]}
            for name, field in self._info().split_names.items()
        }

    def describe(self) -> dict[str, Any]:
        info = self._info()
        return {
            "format": "PySKL annotation pickle (loaded with the restricted unpickler)",
            "split_fields": {name: field for name, field in info.split_names.items()},
            "split_field_values": ["train", "test", NOT_IN_SPLIT],
            "persons": f"at most {self.options['persons']} per annotation, the first ones (PySKL FormatGCNInput)",
            "scores": "keypoint_score appended as channel 3" if self.options["scores"] else "keypoint_score ignored",
            "notes": list(info.notes),
        }

    def _data(self) -> tuple[list[Any], dict[str, list[str]]]:
        if self._loaded is None:
            self._loaded = load_pyskl(self.input)
        return self._loaded

    def _info(self) -> _PySKLInfo:
        if self._summary is None:
            annotations, split = self._data()
            self._summary = self._summarise(annotations, split)
        return self._summary

    def _summarise(self, annotations: list[Any], split: dict[str, list[str]]) -> _PySKLInfo:
        path = self.input
        arrays = [a["keypoint"] for a in annotations if isinstance(a, dict) and _is_keypoint(a.get("keypoint"))]
        if not arrays:
            raise BadInputError(path, "no annotation has a 'keypoint' array of shape (M, T, V, C)")
        layout = resolve_layout(path, arrays[0].shape[2], self.options["layout"])
        channels = arrays[0].shape[3] + (1 if self.options["scores"] else 0)
        persons = max(1, min(self.options["persons"], max(a.shape[0] for a in arrays)))
        labels = [_label(a.get("label")) for a in annotations if isinstance(a, dict)]
        top = max((x for x in labels if x is not None), default=-1)
        names = {a.get("frame_dir") for a in annotations if isinstance(a, dict) and isinstance(a.get("frame_dir"), str)}
        members, split_names, notes = _pair_splits(path, split, names)
        return _PySKLInfo(
            layout=layout,
            num_persons=persons,
            channels=channels,
            class_names=class_names_for(self.options["class_names"], top + 1),
            split_members=members,
            split_names=split_names,
            notes=tuple(notes),
        )

    def _sequence(self, path: Path, i: int, ann: Any, info: _PySKLInfo) -> Sequence:
        where = f"annotation {i}"
        if not isinstance(ann, dict):
            raise BadInputError(path, f"{where}: not a dict")
        name = ann.get("frame_dir")
        if not isinstance(name, str) or not name:
            raise BadInputError(path, f"{where}: 'frame_dir' (the sequence name) is missing or not a string")
        where = f"annotation {i} ({name})"
        label = _label(ann.get("label"))
        if label is None or label >= len(info.class_names):
            raise BadInputError(path, f"{where}: label {ann.get('label')!r:.40} is not a class index")
        kp = ann.get("keypoint")
        if not _is_keypoint(kp):
            raise BadInputError(path, f"{where}: 'keypoint' is not a numeric (M, T, V, C) array")
        m, t = kp.shape[:2]
        if "total_frames" in ann and (_count(ann["total_frames"]) != t):
            raise BadInputError(path, f"{where}: total_frames {ann['total_frames']!r} but keypoint has {t} frames")
        if self.options["scores"]:
            kp = _with_scores(path, where, kp, ann.get("keypoint_score"))
        if kp.shape[3] != info.channels:
            raise BadInputError(path, f"{where}: {kp.shape[3]} channels, the first annotation has {info.channels}")
        if m == 0:
            raise BadInputError(path, f"{where}: has no person")
        keypoints = check_keypoints(
            path,
            kp[: self.options["persons"]].transpose(1, 0, 2, 3),
            num_joints=get_layout(info.layout).num_joints,
            max_persons=info.num_persons,
            what=where,
        )
        fields = {
            field: "train" if name in train else "test" if name in test else NOT_IN_SPLIT
            for field, (train, test) in info.split_members.items()
        }
        return Sequence(name=name, keypoints=keypoints, label=label, fields=fields)


def _is_keypoint(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.ndim == 4 and value.dtype.kind in "fiu"


def _with_scores(path: Path, where: str, kp: np.ndarray, score: Any) -> np.ndarray:
    if kp.shape[3] != 2:
        raise BadInputError(path, f"{where}: scores=true needs 2D keypoints, these have {kp.shape[3]} channels")
    if not isinstance(score, np.ndarray) or score.shape != kp.shape[:3] or score.dtype.kind not in "fiu":
        raise BadInputError(path, f"{where}: 'keypoint_score' is missing or not an (M, T, V) array")
    return np.concatenate([kp, score[..., None].astype(kp.dtype)], axis=-1)


def load_pyskl(path: Path) -> tuple[list[Any], dict[str, list[str]]]:
    """``(annotations, split)`` from a PySKL pickle, loaded safely; ``BadInputError`` on a wrong structure."""
    if not path.is_file():
        raise BadInputError(path, "no such file; pass a PySKL annotation pickle (.pkl)")
    obj = safe_load(path)
    if isinstance(obj, list):
        annotations, split = obj, {}
    elif isinstance(obj, dict) and "annotations" in obj:
        annotations, split = obj["annotations"], obj.get("split", {})
    else:
        raise BadInputError(path, "expected a dict with 'annotations' (and 'split'), or a list of annotations")
    if not isinstance(annotations, list) or not annotations:
        raise BadInputError(path, "'annotations' must be a non-empty list")
    if not isinstance(split, dict) or not all(
        isinstance(k, str) and isinstance(v, (list, tuple)) and all(isinstance(n, str) for n in v)
        for k, v in split.items()
    ):
        raise BadInputError(path, "'split' must map split names to lists of frame_dir names")
    return annotations, {k: list(v) for k, v in split.items()}


_PART = re.compile(r"(?:(?P<base>.*?)_)?(?P<part>train|val|test)")


def _pair_splits(
    path: Path, split: dict[str, list[str]], names: set[Any]
) -> tuple[dict[str, tuple[frozenset[str], frozenset[str]]], dict[str, str], list[str]]:
    """Group PySKL split keys ``<x>_train`` + ``<x>_val``/``<x>_test`` into store splits named ``<x>``.

    ``train`` + ``val``/``test`` (no prefix) becomes ``default``. Returns (field → (train, test) name sets,
    store split name → field, notes on keys left unpaired and names absent from the annotations).
    """
    parts: dict[str, dict[str, str]] = {}
    notes: list[str] = []
    for key in sorted(split):
        match = _PART.fullmatch(key)
        if match is None:
            notes.append(f"split {key!r} is not named <x>_train/<x>_val/<x>_test; not stored")
            continue
        parts.setdefault(match["base"] or "", {})[match["part"]] = key
    members: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
    split_names: dict[str, str] = {}
    for base, found in sorted(parts.items()):
        test_key = found.get("test", found.get("val"))
        if "train" not in found or test_key is None:
            notes.append(f"split {', '.join(sorted(found.values()))} has no train/test partner; not stored")
            continue
        if "test" in found and "val" in found:
            notes.append(f"{found['val']} ignored: {found['test']} is used as the test part")
        train, test = frozenset(split[found["train"]]), frozenset(split[test_key])
        both = train & test
        if both:
            raise BadInputError(path, f"{next(iter(sorted(both)))!r} is in both {found['train']} and {test_key}")
        absent = len((train | test) - names)
        if absent:
            notes.append(f"{absent} names in {found['train']}/{test_key} have no annotation")
        field = _split_field(base)
        members[field] = (train, test)
        split_names[base or "default"] = field
    return members, split_names, notes


# -------------------------------------------------------------------------------------------------------- aimclr


@dataclass(frozen=True)
class _FolderPart:
    data: str  # path of the .npy
    count: int
    names: tuple[str, ...]
    labels: tuple[int | None, ...]
    label_digest: str


@dataclass(frozen=True)
class _AimCLRInfo:
    layout: str
    num_persons: int
    parts: dict[str, _FolderPart]  # "train" / "test"
    class_names: tuple[str, ...]


class AimCLRImporter(Importer):
    """An ST-GCN/AimCLR data folder (``{train,val}_<stream>.npy`` + ``{train,val}_label.pkl``) → sequences.

    Each sequence keeps its frames up to the last one with any non-zero coordinate (the zero padding of
    the fixed-length arrays is dropped; all-zero frames inside a sequence stay). Sample names lose the
    ``.skeleton`` suffix ST-GCN's gendata gives them, so they match the NTU importer's names.
    """

    source: ClassVar[str] = "aimclr"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "layout": _LAYOUT_OPTION,
        "stream": Option(str, "data_joint", "data file stem: {train,val}_<stream>.npy (PSTL: position)"),
        "class_names": _CLASS_NAMES_OPTION,
        "chunk": _CHUNK_OPTION,
    }

    def __init__(self, input: str | Path, **options: Any) -> None:
        super().__init__(input, **options)
        self._summary: _AimCLRInfo | None = None

    @property
    def layout(self) -> str:  # type: ignore[override]
        return self._info().layout

    @property
    def num_persons(self) -> int:  # type: ignore[override]
        return self._info().num_persons

    def tasks(self) -> list[tuple[str, int, int]]:
        """``(part, first, stop)`` chunks of each data file."""
        step = self.options["chunk"]
        return [
            (part, start, min(start + step, info.count))
            for part, info in self._info().parts.items()
            for start in range(0, info.count, step)
        ]

    def run(self, task: tuple[str, int, int]) -> TaskResult:
        part, start, stop = task
        try:
            info = self._info()
            folder = info.parts[part]
            chunk = _open_npy(Path(folder.data))[start:stop]
            digest = digest_arrays(chunk)
        except BadInputError as err:
            return TaskResult(rejected=[Rejected.from_error(err)])
        result = TaskResult(digest=digest + folder.label_digest if start == 0 else digest)
        lengths = _valid_lengths(np.any(chunk != 0, axis=(1, 3, 4)))
        v = get_layout(info.layout).num_joints
        for j, i in enumerate(range(start, stop)):
            name, where = folder.names[i], f"sample {i} ({folder.names[i]})"
            try:
                label = folder.labels[i]
                if label is None or label >= len(info.class_names):
                    raise BadInputError(folder.data, f"{where}: label is not a class index")
                if lengths[j] == 0:
                    raise BadInputError(folder.data, f"{where}: every coordinate is zero (no valid frame)")
                kp = chunk[j, :, : lengths[j]].transpose(1, 3, 2, 0)  # (C, T, V, M) -> (T, M, V, C)
                kp = check_keypoints(folder.data, kp, num_joints=v, max_persons=info.num_persons, what=where)
            except BadInputError as err:
                result.rejected.append(Rejected.from_error(err))
                continue
            result.sequences.append(Sequence(name=name, keypoints=kp, label=label, fields={"split": part}))
        return result

    def class_names(self) -> list[str]:
        return list(self._info().class_names)

    def splits(self) -> dict[str, dict[str, Any]]:
        return {"default": {"by": "split", "train": ["train"], "test": ["test"]}}

    def describe(self) -> dict[str, Any]:
        return {
            "format": f"ST-GCN/AimCLR folder: {{train,val}}_{self.options['stream']}.npy (N, C, T, V, M) "
            "+ {train,val}_label.pkl (names, labels)",
            "split": "train_* files are 'train', val_* files are 'test'",
            "valid_length": "frames up to the last one with any non-zero coordinate",
        }

    def _info(self) -> _AimCLRInfo:
        if self._summary is None:
            self._summary = self._summarise()
        return self._summary

    def _summarise(self) -> _AimCLRInfo:
        folder = self.input
        if not folder.is_dir():
            raise BadInputError(folder, "not a folder; pass the folder with train_data_joint.npy, train_label.pkl …")
        parts: dict[str, _FolderPart] = {}
        shapes = []
        for prefix, part in (("train", "train"), ("val", "test")):
            data = folder / f"{prefix}_{self.options['stream']}.npy"
            labels = folder / f"{prefix}_label.pkl"
            for needed in (data, labels):
                if not needed.is_file():
                    raise BadInputError(
                        needed,
                        "missing; an AimCLR folder needs {train,val}_<stream>.npy and "
                        "{train,val}_label.pkl (set stream= for other data file names)",
                    )
            arr = _open_npy(data)
            shapes.append((data, arr.shape))
            names, values = _read_labels(labels, arr.shape[0])
            parts[part] = _FolderPart(str(data), arr.shape[0], names, values, digest_file(labels))
        (first, shape), (second, other) = shapes
        if shape[1:2] + shape[3:] != other[1:2] + other[3:]:
            raise BadInputError(second, f"shape {other} does not match {first.name} {shape} (C, V, M must agree)")
        all_names = parts["train"].names + parts["test"].names
        if len(set(all_names)) != len(all_names):
            dup = next(n for n in parts["test"].names if n in set(parts["train"].names))
            raise BadInputError(folder, f"sample name {dup!r} is in both the train and the val label files")
        layout = resolve_layout(first, shape[3], self.options["layout"])
        top = max((x for p in parts.values() for x in p.labels if x is not None), default=-1)
        return _AimCLRInfo(layout, shape[4], parts, class_names_for(self.options["class_names"], top + 1))


def _open_npy(path: Path) -> np.ndarray:
    """Memory-map an ``(N, C, T, V, M)`` float ``.npy`` (no pickle); ``BadInputError`` if unusable."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except READ_ERRORS as err:
        raise BadInputError(path, f"not a readable .npy array (truncated, or an object array?): {err}") from err
    if not isinstance(arr, np.ndarray) or arr.ndim != 5 or arr.dtype.kind != "f":
        raise BadInputError(path, f"expected a float (N, C, T, V, M) array, got {arr.dtype} {arr.shape}")
    n, c, t, _v, m = arr.shape
    if c not in (2, 3) or not 1 <= m <= MAX_BODIES or t > MAX_FRAMES or n == 0:
        raise BadInputError(path, f"shape {arr.shape} is not (N >= 1, C = 2 or 3, T, V, 1 <= M <= {MAX_BODIES})")
    return arr


def _read_labels(path: Path, count: int) -> tuple[tuple[str, ...], tuple[int | None, ...]]:
    """``(names, labels)`` from an ST-GCN label pickle; a label that is not a non-negative int is ``None``."""
    obj = safe_load(path)
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise BadInputError(path, "expected a pickled (sample_names, labels) pair")
    names, labels = obj
    if isinstance(names, np.ndarray):
        names = names.tolist()
    if isinstance(labels, np.ndarray):
        labels = labels.tolist()
    if not isinstance(names, (list, tuple)) or not isinstance(labels, (list, tuple)):
        raise BadInputError(path, "sample names and labels must be lists")
    if len(names) != count or len(labels) != count:
        raise BadInputError(path, f"{len(names)} names and {len(labels)} labels for {count} samples in the data file")
    if not all(isinstance(n, str) and n for n in names):
        raise BadInputError(path, "every sample name must be a non-empty string")
    if len(set(names)) != len(names):
        raise BadInputError(path, "sample names repeat; they must be unique")
    return tuple(str(n).removesuffix(".skeleton") for n in names), tuple(_label(x) for x in labels)


# -------------------------------------------------------------------------------------------------------- ctrgcn


@dataclass(frozen=True)
class _CTRGCNInfo:
    layout: str
    num_persons: int
    channels: int
    members: dict[str, NpyMember]
    one_hot: bool
    class_names: tuple[str, ...]
    index_digest: str


class CTRGCNImporter(Importer):
    """A CTR-GCN/MAMP ``.npz`` (``x_train`` ``(N, T, M·V·C)``, ``y_train``, ``x_test``, ``y_test``) → sequences.

    Names are synthesised (``train_000000``, ``test_000000`` …). Each sequence keeps its frames up to the
    last one with any non-zero value (trailing padding dropped; all-zero frames inside stay).
    """

    source: ClassVar[str] = "ctrgcn"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "layout": Option(
            str, "", "layout name (default: ntu25 for 75/150 features, kinect20 for 60/120)", ("", *LAYOUTS)
        ),
        "channels": Option(int, 3, "coordinates per joint in the flattened features", (2, 3)),
        "class_names": _CLASS_NAMES_OPTION,
        "chunk": _CHUNK_OPTION,
    }

    def __init__(self, input: str | Path, **options: Any) -> None:
        super().__init__(input, **options)
        self._summary: _CTRGCNInfo | None = None

    @property
    def layout(self) -> str:  # type: ignore[override]
        return self._info().layout

    @property
    def num_persons(self) -> int:  # type: ignore[override]
        return self._info().num_persons

    def tasks(self) -> list[tuple[str, int, int]]:
        """``(part, first, stop)``: chunks when ``x_<part>`` is stored uncompressed, else the whole part."""
        info = self._info()
        out = []
        for part in ("train", "test"):
            x = info.members[f"x_{part}"]
            n = x.shape[0]
            step = n if x.compressed else self.options["chunk"]
            out.extend((part, start, min(start + step, n)) for start in range(0, n, step))
        return out

    def run(self, task: tuple[str, int, int]) -> TaskResult:
        part, start, stop = task
        try:
            info = self._info()
            x = npz_array(self.input, info.members[f"x_{part}"])[start:stop]
            y = np.asarray(npz_array(self.input, info.members[f"y_{part}"])[start:stop])
            digest = digest_arrays(x, y)
        except BadInputError as err:
            return TaskResult(rejected=[Rejected.from_error(err)])
        result = TaskResult(digest=digest + info.index_digest if (start == 0 and part == "train") else digest)
        layout = get_layout(info.layout)
        shape = (info.num_persons, layout.num_joints, info.channels)
        lengths = _valid_lengths(np.any(x != 0, axis=2))
        width = max(6, len(str(info.members[f"x_{part}"].shape[0] - 1)))
        for j, i in enumerate(range(start, stop)):
            name = f"{part}_{i:0{width}d}"
            try:
                label = _one_hot_label(y[j]) if info.one_hot else _label(y[j].item())
                if label is None or label >= len(info.class_names):
                    raise BadInputError(self.input, f"{name}: y_{part}[{i}] is not a valid class label")
                if lengths[j] == 0:
                    raise BadInputError(self.input, f"{name}: every coordinate is zero (no valid frame)")
                kp = x[j, : lengths[j]].reshape(lengths[j], *shape)
                kp = check_keypoints(self.input, kp, num_joints=layout.num_joints, max_persons=shape[0], what=name)
            except BadInputError as err:
                result.rejected.append(Rejected.from_error(err))
                continue
            result.sequences.append(Sequence(name=name, keypoints=kp, label=label, fields={"split": part}))
        return result

    def class_names(self) -> list[str]:
        return list(self._info().class_names)

    def splits(self) -> dict[str, dict[str, Any]]:
        return {"default": {"by": "split", "train": ["train"], "test": ["test"]}}

    def describe(self) -> dict[str, Any]:
        info = self._info()
        return {
            "format": "CTR-GCN/MAMP npz: x_{train,test} (N, T, M*V*C) person-major, y_{train,test}",
            "labels": "one-hot" if info.one_hot else "integer",
            "names": "synthesised: <part>_<index>",
            "valid_length": "frames up to the last one with any non-zero value",
        }

    def _info(self) -> _CTRGCNInfo:
        if self._summary is None:
            self._summary = self._summarise()
        return self._summary

    def _summarise(self) -> _CTRGCNInfo:
        path = self.input
        if not path.is_file():
            raise BadInputError(path, "no such file; pass a CTR-GCN .npz with x_train, y_train, x_test, y_test")
        members = npz_members(path)
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in members]
        if missing:
            raise BadInputError(path, f"missing member(s) {', '.join(missing)}; found {', '.join(sorted(members))}")
        x, xt = members["x_train"], members["x_test"]
        for m in (x, xt):
            if len(m.shape) != 3 or m.dtype.kind != "f" or m.shape[0] == 0 or m.shape[1] > MAX_FRAMES:
                raise BadInputError(path, f"{m.key} must be a float (N, T, M*V*C) array, got {m.dtype} {m.shape}")
        if x.shape[2] != xt.shape[2]:
            raise BadInputError(path, f"x_train has {x.shape[2]} features per frame, x_test {xt.shape[2]}")
        layout, persons = self._layout(x.shape[2])
        one_hot = len(members["y_train"].shape) == 2
        ys = {}
        for part, m in (("train", members["y_train"]), ("test", members["y_test"])):
            n = members[f"x_{part}"].shape[0]
            if m.shape[0:1] != (n,) or len(m.shape) != (2 if one_hot else 1) or m.dtype.kind not in "fiub":
                raise BadInputError(path, f"y_{part} has shape {m.shape}: expected ({n}, K) one-hot or ({n},) int")
            ys[part] = np.asarray(npz_array(path, m))
        if one_hot:
            if ys["train"].shape[1] != ys["test"].shape[1]:
                raise BadInputError(path, f"y_train has {ys['train'].shape[1]} classes, y_test {ys['test'].shape[1]}")
            count = ys["train"].shape[1]
        else:
            if ys["train"].dtype.kind not in "iu" or ys["test"].dtype.kind not in "iu":
                raise BadInputError(path, "integer labels y_train / y_test must have an integer dtype")
            # labels outside 0 .. MAX_CLASSES - 1 do not count: their samples are rejected one by one
            valid = [y[(y >= 0) & (y < MAX_CLASSES)] for y in ys.values()]
            count = max((int(v.max()) for v in valid if v.size), default=-1) + 1
        names = class_names_for(self.options["class_names"], count)
        return _CTRGCNInfo(
            layout, persons, self.options["channels"], members, one_hot, names, digest_arrays(*ys.values())
        )

    def _layout(self, features: int) -> tuple[str, int]:
        channels = self.options["channels"]
        option = self.options["layout"]
        if option:
            layout = layout_for(self.input, option)
        else:
            candidates = [n for v, n in ((25, "ntu25"), (20, "kinect20")) if features % (v * channels) == 0]
            if len(candidates) != 1:
                raise BadInputError(
                    self.input, f"cannot tell the layout of {features} features per frame; pass layout=NAME"
                )
            layout = candidates[0]
        per_person = get_layout(layout).num_joints * channels
        if features % per_person or not 1 <= features // per_person <= MAX_BODIES:
            raise BadInputError(
                self.input, f"{features} features per frame is not a whole number of {layout} persons x {channels}"
            )
        return layout, features // per_person


def _one_hot_label(row: np.ndarray) -> int | None:
    """The index of the single 1 in a one-hot row, or ``None`` if the row is not one-hot."""
    ones = np.flatnonzero(row == 1)
    if len(ones) != 1 or np.count_nonzero(row) != 1:
        return None
    return int(ones[0])
