"""Build ``src/skelssl/data/resources/nw-ucla-demo.npz``: the bundled NW-UCLA copy that ``skelssl demo`` runs on.

    python scripts/make_demo_data.py [--input ../shared/data/nw-ucla] [--out .../resources/nw-ucla-demo.npz]

The sequences go through skelssl's own path: the ``nw-ucla`` importer → a temporary store → the generic ``.npz``
format (``skelssl.data.importers.generic``) with the coordinates rounded to float16. The file holds ``keypoints``
float16 ``(total_frames, 1, 20, 3)`` (metres), ``lengths``, ``labels``, ``names``, ``subjects``, ``views``,
``split`` (the cross-view protocol: views 1+2 ``train``, view 3 ``test``), ``class_names`` and ``layout``
(``kinect20``); every member is deflate-compressed. The dataset's attribution and terms (from ``SOURCE.txt``), how
the file was made and the measured float16 error are in the zip archive's comment, as JSON (read it with
``skelssl.demo.demo_metadata``); the generic importer ignores the comment.

The bytes are deterministic: members in a fixed order, fixed zip timestamps and permissions, no time or path in the
metadata (the same input and skelssl version give the same file).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = ROOT.parent / "shared" / "data" / "nw-ucla"
DEFAULT_OUT = ROOT / "src" / "skelssl" / "data" / "resources" / "nw-ucla-demo.npz"
#: fixed zip timestamp (the earliest a zip can hold), so that the bytes do not depend on when the file was made
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
MAX_BYTES = 8 * 1024 * 1024


def _source_dir(path: Path) -> tuple[Path, Path | None]:
    """``(folder of json files, SOURCE.txt or None)`` for a path to the dataset folder or its ``all_sqe``."""
    path = Path(path)
    folder = path / "all_sqe" if (path / "all_sqe").is_dir() else path
    for candidate in (path / "SOURCE.txt", folder.parent / "SOURCE.txt"):
        if candidate.is_file():
            return folder, candidate
    return folder, None


def _attribution(source_txt: Path | None) -> dict[str, str]:
    """The ``origin`` and ``Terms`` lines of SOURCE.txt (and its first line, the dataset's title)."""
    if source_txt is None:
        return {}
    lines = source_txt.read_text(encoding="utf-8").splitlines()
    out = {"title": lines[0].strip()} if lines else {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("origin", "terms"):
            out[key.strip().lower()] = value.strip()
    return out


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def write_npz(path: Path, members: dict[str, np.ndarray], *, comment: bytes = b"") -> None:
    """An ``.npz`` with deterministic bytes: members in the given order, deflated at level 9, fixed
    timestamps and permissions, ``comment`` as the archive comment; written to a temporary file and renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            for key, arr in members.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                info.create_system = 3  # unix, whatever the machine
                archive.writestr(info, _npy_bytes(arr), compresslevel=9)
            archive.comment = comment
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_demo_data(
    source: str | Path = DEFAULT_INPUT,
    out: str | Path = DEFAULT_OUT,
    *,
    workers: int = 1,
    echo: Callable[[str], None] = print,
) -> dict:
    """Import NW-UCLA from ``source`` (the dataset folder with ``SOURCE.txt``, or its ``all_sqe``) with skelssl's
    ``nw-ucla`` importer and write the bundled generic ``.npz`` to ``out``. Returns the metadata written into
    the archive comment (with ``bytes``, the file size, added)."""
    from skelssl import __version__
    from skelssl.data.importers import get_importer_class
    from skelssl.data.prepare import prepare_store
    from skelssl.data.store import SkeletonStore

    folder, source_txt = _source_dir(Path(source))
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="skelssl-demo-data-") as tmp:
        summary = prepare_store(get_importer_class("nw-ucla")(folder), Path(tmp) / "store", workers=workers)
        if summary.rejected:
            first = summary.rejected[0]
            raise SystemExit(f"{len(summary.rejected)} NW-UCLA file(s) rejected; first: {first.path}: {first.reason}")
        store = SkeletonStore.open(Path(tmp) / "store")
        n = len(store)
        lengths = np.asarray(store.lengths, dtype=np.int64)
        keypoints = np.concatenate([store[i].keypoints for i in range(n)], axis=0).astype(np.float32)
        names = np.asarray(store.names, dtype=str)
        labels = np.asarray(store.labels, dtype=np.int64)
        subjects = np.asarray(store.field("subjects"), dtype=np.int64)
        views = np.asarray(store.field("views"), dtype=np.int64)
        train = set(int(i) for i in store.split_indices("xview", "train"))
        split = np.asarray(["train" if i in train else "test" for i in range(n)], dtype=str)
        class_names = np.asarray(store.class_names, dtype=str)
        input_checksum = store.meta.get("input_checksum")
    half = keypoints.astype(np.float16)
    error = np.abs(half.astype(np.float32) - keypoints)
    assert np.isfinite(half).all(), "a coordinate overflows float16"
    members = {
        "keypoints": half,
        "lengths": lengths.astype(np.int16),
        "labels": labels.astype(np.int8),
        "names": names,
        "subjects": subjects.astype(np.int8),
        "views": views.astype(np.int8),
        "split": split,
        "class_names": class_names,
        "layout": np.asarray("kinect20"),
    }
    meta = {
        "dataset": "Northwestern-UCLA Multiview Action 3D (NW-UCLA), skeletons only: the complete set",
        "citation": "J. Wang, X. Nie, Y. Xia, Y. Wu, S.-C. Zhu. Cross-view Action Modeling, Learning and "
        "Recognition. CVPR 2014.",
        "source": _attribution(source_txt),
        "made_by": f"scripts/make_demo_data.py (skelssl {__version__}): nw-ucla importer -> store -> generic .npz",
        "input_checksum": input_checksum,
        "sequences": n,
        "frames": int(lengths.sum()),
        "classes": len(class_names),
        "layout": "kinect20",
        "coordinates": "Kinect v1 camera space, metres, rounded to float16 (round to nearest)",
        "float16_max_abs_error": float(error.max()),
        "float16_mean_abs_error": float(error.mean()),
        "max_abs_coordinate": float(np.abs(keypoints).max()),
        "split": {
            "name in the file": "split (the generic importer calls it 'default')",
            "protocol": "cross-view: views 1 and 2 train, view 3 test",
            "train": int((split == "train").sum()),
            "test": int((split == "test").sum()),
        },
        "dropped_fields": ["takes (the generic format has no such member; the names aAA_sSS_eEE_vVV hold it)"],
    }
    comment = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")
    write_npz(out, members, comment=comment)
    meta["bytes"] = out.stat().st_size
    echo(
        f"wrote {out}: {n} sequences, {meta['frames']} frames, {meta['bytes'] / 2**20:.2f} MiB; float16 max abs error "
        f"{meta['float16_max_abs_error'] * 1000:.3f} mm (mean {meta['float16_mean_abs_error'] * 1000:.4f} mm)"
    )
    if meta["bytes"] > MAX_BYTES:
        echo(f"warning: {out} is larger than {MAX_BYTES / 2**20:.0f} MiB")
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="NW-UCLA folder (with SOURCE.txt)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the .npz to write")
    parser.add_argument("--workers", type=int, default=1, help="importer worker processes")
    args = parser.parse_args(argv)
    make_demo_data(args.input, args.out, workers=args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
