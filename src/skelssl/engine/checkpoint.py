"""Crash-safe training checkpoints, RNG capture, and encoder export (safetensors + JSON card).

Training state (:func:`save_checkpoint` / :func:`load_checkpoint`)
    One ``torch.save`` zip file holding a dict of state dicts, counters, RNG states and data-order
    state. Writing is atomic: a temporary file in the same directory is written, flushed and fsynced,
    then renamed over the target with ``os.replace`` and the directory is fsynced — a crash at any
    moment leaves either the old file or the new one, never a mix (an interrupted write leaves at
    most a hidden ``.<name>.*.tmp`` file, which :func:`latest_checkpoint` ignores). Only values that
    ``torch.load(weights_only=True)`` accepts may be saved (checked before writing, so a run cannot
    produce a checkpoint it could not resume from), and loading uses ``weights_only=True`` only: a
    file carrying pickled code is refused without running it. Loading first verifies the zip's CRC-32
    checksums, so truncation and bit rot are reported (with the file name) instead of being loaded.

RNG (:func:`capture_rng` / :func:`restore_rng`)
    The global torch CPU generator (and CUDA generators when CUDA is initialised) plus any named
    ``torch.Generator`` / ``numpy.random.Generator``, as uint8 tensors and plain Python values.

Encoders (:func:`save_encoder` / :func:`load_encoder`)
    ``<stem>.safetensors`` (contiguous CPU tensors, no pickle) beside ``<stem>.json``: the caller's card
    (config, data, metrics, …) plus the skelssl version, creation time, tensor and parameter counts and
    the sha256 of the safetensors file, which :func:`load_encoder` checks.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from skelssl import __version__
from skelssl.errors import BadInputError
from skelssl.utils import atomic_replace, atomic_write, fsync_file

__all__ = [
    "ENCODER_FORMAT",
    "atomic_write",
    "capture_rng",
    "latest_checkpoint",
    "load_checkpoint",
    "load_encoder",
    "load_latest_checkpoint",
    "restore_rng",
    "save_checkpoint",
    "save_encoder",
    "unwrap_module",
]

ENCODER_FORMAT = "skelssl-encoder"
ENCODER_FORMAT_VERSION = 1

Generator = torch.Generator | np.random.Generator | np.random.BitGenerator


# ------------------------------------------------------------------------------------------- atomic I/O


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------- checkpoints

_SAFE_LEAVES = (str, bytes, bytearray, int, float, complex, bool, type(None), torch.dtype, torch.device, torch.Size)


def _check_loadable(obj: Any, key: str, depth: int = 0) -> None:
    """Refuse values that ``torch.load(weights_only=True)`` would refuse, naming where they are.

    Exact types only: subclasses such as ``numpy.float64`` (a ``float``) pickle as their own class.
    """
    if depth > 64:
        raise TypeError(f"{key}: checkpoint state is nested too deeply")
    if isinstance(obj, torch.Tensor) or type(obj) in _SAFE_LEAVES:
        return
    if type(obj) in (dict, OrderedDict):
        for k, v in obj.items():
            if type(k) not in (str, int, float, bool, type(None)):
                raise TypeError(f"{key}: key {k!r} of type {type(k).__name__} cannot be saved in a checkpoint")
            _check_loadable(v, f"{key}[{k!r}]", depth + 1)
        return
    if type(obj) in (list, tuple, set):
        for i, v in enumerate(obj):
            _check_loadable(v, f"{key}[{i}]", depth + 1)
        return
    hint = (
        " (convert numpy values with .item()/.tolist() or torch.as_tensor)" if type(obj).__module__ == "numpy" else ""
    )
    raise TypeError(
        f"{key} is a {type(obj).__module__}.{type(obj).__qualname__}, which a weights-only checkpoint cannot hold{hint}"
    )


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Atomically write ``state`` (a dict of tensors, state dicts, numbers, strings, RNG states …) to ``path``.

    Raises ``TypeError`` before writing if ``state`` holds a value ``torch.load(weights_only=True)``
    cannot read back, and :class:`~skelssl.errors.SkelsslError` when the file cannot be written.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"checkpoint state must be a mapping, got {type(state).__name__}")
    state = dict(state)
    _check_loadable(state, "state")
    return atomic_write(path, lambda fh: torch.save(state, fh))


def _verify_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except zipfile.BadZipFile as exc:
        raise BadInputError(path, f"not a complete checkpoint (truncated or corrupt zip: {exc})") from None
    except (OSError, EOFError, ValueError) as exc:
        raise BadInputError(path, f"cannot read the checkpoint: {exc}") from None
    if bad is not None:
        raise BadInputError(path, f"corrupt checkpoint: member {bad!r} fails its CRC-32 check")


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device | None = "cpu", *, verify: bool = True
) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` (never full unpickling).

    ``verify`` first checks every zip member's CRC-32. Raises :class:`~skelssl.errors.BadInputError`
    naming the file when it is missing, truncated, corrupt, not a dict, or holds anything but tensors
    and plain containers (such a file is refused and nothing in it runs).
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "checkpoint not found")
    if verify and zipfile.is_zipfile(path):
        _verify_zip(path)
    elif verify and path.stat().st_size > 0:
        with open(path, "rb") as fh:
            magic = fh.read(4)
        if magic[:2] == b"PK":  # a zip whose central directory is missing: truncated
            raise BadInputError(path, "not a complete checkpoint (truncated zip: no central directory)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        detail = next((line.strip() for line in first if "GLOBAL" in line or "Unsupported" in line), "")
        raise BadInputError(
            path,
            "refused: the file holds pickled Python objects beyond tensors and plain containers"
            + (f" ({detail})" if detail else "")
            + "; only weights-only checkpoints are loaded",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(path, f"truncated or corrupt checkpoint ({msg})") from None
    if not isinstance(state, dict):
        raise BadInputError(path, f"a checkpoint must hold a dict, found {type(state).__name__}")
    return state


def _natural_key(name: str) -> list[Any]:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


def _candidates(directory: Path, pattern: str) -> list[Path]:
    if not directory.is_dir():
        return []
    files = [
        p for p in directory.glob(pattern) if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".tmp")
    ]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, _natural_key(p.name)), reverse=True)


def load_latest_checkpoint(
    directory: str | os.PathLike[str], pattern: str = "*.pt", map_location: str | torch.device | None = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """The newest (by modification time, then name) checkpoint in ``directory`` that loads, with its state.

    Corrupt, truncated or unsafe files are skipped; temp files of interrupted writes are ignored.
    ``None`` when there is none.
    """
    for path in _candidates(Path(directory), pattern):
        try:
            return path, load_checkpoint(path, map_location)
        except BadInputError:
            continue
    return None


def latest_checkpoint(directory: str | os.PathLike[str], pattern: str = "*.pt") -> Path | None:
    """Path of the newest valid checkpoint in ``directory`` (see :func:`load_latest_checkpoint`)."""
    found = load_latest_checkpoint(directory, pattern)
    return None if found is None else found[0]


# ------------------------------------------------------------------------------------------------ RNG


def _np_to_plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {
            "__ndarray__": [int(x) for x in value.ravel().tolist()],
            "dtype": str(value.dtype),
            "shape": list(value.shape),
        }
    if isinstance(value, dict):
        return {k: _np_to_plain(v) for k, v in value.items()}
    if isinstance(value, np.integer):
        return int(value)
    return value


def _np_from_plain(value: Any) -> Any:
    if isinstance(value, dict) and "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
    if isinstance(value, dict):
        return {k: _np_from_plain(v) for k, v in value.items()}
    return value


def capture_rng(generators: Mapping[str, Generator] | None = None, *, include_global: bool = True) -> dict[str, Any]:
    """The state of the global torch generators (``include_global``) and of named generators.

    Returns plain checkpointable values: ``{"torch": uint8 tensor, "cuda": [uint8 tensors] (only when CUDA
    is initialised), "generators": {name: {"kind": "torch"|"numpy", ...}}}``.
    """
    out: dict[str, Any] = {}
    if include_global:
        out["torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["cuda"] = list(torch.cuda.get_rng_state_all())
    named: dict[str, Any] = {}
    for name, gen in (generators or {}).items():
        if isinstance(gen, torch.Generator):
            named[name] = {"kind": "torch", "device": str(gen.device), "state": gen.get_state()}
        elif isinstance(gen, (np.random.Generator, np.random.BitGenerator)):
            bit = gen.bit_generator if isinstance(gen, np.random.Generator) else gen
            named[name] = {"kind": "numpy", "state": _np_to_plain(bit.state)}
        else:
            raise TypeError(
                f"generator {name!r}: expected torch.Generator or numpy Generator, got {type(gen).__name__}"
            )
    out["generators"] = named
    return out


def restore_rng(
    state: Mapping[str, Any], generators: Mapping[str, Generator] | None = None, *, strict: bool = True
) -> None:
    """Put the states from :func:`capture_rng` back (in place) into the global and the named generators.

    ``strict``: the names in ``state`` and ``generators`` must match exactly. CUDA states are restored
    for the devices present in both the checkpoint and this process.
    """
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu() if isinstance(state["torch"], torch.Tensor) else state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        cuda_states = list(state["cuda"])[: torch.cuda.device_count()]
        for device, cuda_state in enumerate(cuda_states):
            torch.cuda.set_rng_state(cuda_state.cpu(), device)
    saved = dict(state.get("generators", {}))
    generators = dict(generators or {})
    if strict and set(saved) != set(generators):
        raise ValueError(f"RNG state has generators {sorted(saved)} but {sorted(generators)} were given to restore")
    for name, gen in generators.items():
        if name not in saved:
            continue
        entry = saved[name]
        if isinstance(gen, torch.Generator):
            if entry.get("kind") != "torch":
                raise ValueError(f"generator {name!r}: saved state is {entry.get('kind')!r}, not a torch generator")
            gen.set_state(entry["state"].cpu())
        elif isinstance(gen, (np.random.Generator, np.random.BitGenerator)):
            if entry.get("kind") != "numpy":
                raise ValueError(f"generator {name!r}: saved state is {entry.get('kind')!r}, not a numpy generator")
            bit = gen.bit_generator if isinstance(gen, np.random.Generator) else gen
            bit.state = _np_from_plain(entry["state"])
        else:
            raise TypeError(
                f"generator {name!r}: expected torch.Generator or numpy Generator, got {type(gen).__name__}"
            )


# -------------------------------------------------------------------------------------------- encoders


def unwrap_module(module: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel / ``torch.compile`` wrappers."""
    while True:
        if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module._orig_mod, nn.Module):
            module = module._orig_mod
        else:
            return module


def _encoder_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    path = Path(path)
    if path.is_dir():
        path = path / "encoder"
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        from skelssl.config import config_to_dict

        return config_to_dict(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, (np.generic, torch.Tensor)) and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} value {obj!r:.60} cannot be written to the encoder card (JSON)")


def save_encoder(
    path_stem: str | os.PathLike[str],
    module_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    card: Mapping[str, Any],
) -> tuple[Path, Path]:
    """Write ``<stem>.safetensors`` and its card ``<stem>.json`` (both atomically); returns both paths.

    ``module_or_state_dict``: a module (DDP/compile wrappers are unwrapped) or a state dict of tensors.
    ``card``: JSON-serialisable information (config — dataclasses are converted — data, metrics, …);
    the keys ``format``, ``format_version``, ``skelssl_version``, ``created``, ``weights``, ``tensors``,
    ``parameters`` and ``sha256`` are filled in here.
    """
    weights_path, card_path = _encoder_paths(path_stem)
    if isinstance(module_or_state_dict, nn.Module):
        state = unwrap_module(module_or_state_dict).state_dict()
    else:
        state = dict(module_or_state_dict)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"encoder state entry {key!r} is a {type(value).__name__}, not a tensor")
        tensors[key] = value.detach().to("cpu").contiguous().clone()  # clone: no shared storage in the file
    from safetensors.torch import save_file

    digest: dict[str, str] = {}

    def produce(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata={"format": ENCODER_FORMAT, "skelssl_version": __version__})
        fsync_file(tmp)
        digest["sha256"] = _sha256_file(tmp)

    atomic_replace(weights_path, produce)
    full_card = dict(card)
    full_card.update(
        format=ENCODER_FORMAT,
        format_version=ENCODER_FORMAT_VERSION,
        skelssl_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        weights=weights_path.name,
        tensors=len(tensors),
        parameters=int(sum(t.numel() for t in tensors.values())),
        sha256=digest["sha256"],
    )
    text = json.dumps(full_card, indent=2, default=_json_default, sort_keys=False) + "\n"
    atomic_write(card_path, lambda fh: fh.write(text.encode("utf-8")))
    return weights_path, card_path


def load_encoder(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load ``(state_dict, card)`` written by :func:`save_encoder`, checking the file's sha256.

    ``path``: the stem, either file, or a run directory holding ``encoder.safetensors``. Raises
    :class:`~skelssl.errors.BadInputError` naming the file when the card is missing or unreadable, the
    checksum does not match, or the safetensors file is corrupt.
    """
    weights_path, card_path = _encoder_paths(path)
    if not weights_path.is_file():
        raise BadInputError(weights_path, "encoder weights not found")
    if not card_path.is_file():
        raise BadInputError(card_path, f"encoder card not found (save_encoder writes it beside {weights_path.name})")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(card_path, f"unreadable encoder card: {exc}") from None
    if not isinstance(card, dict) or card.get("format") != ENCODER_FORMAT or "sha256" not in card:
        raise BadInputError(card_path, f"not a {ENCODER_FORMAT} card (missing format/sha256)")
    data = weights_path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != card["sha256"]:
        raise BadInputError(
            weights_path,
            f"sha256 {actual[:12]}… does not match the card's {str(card['sha256'])[:12]}… ({card_path.name})",
        )
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    try:
        state = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise BadInputError(weights_path, f"corrupt safetensors file: {exc}") from None
    if str(device) != "cpu":
        state = {k: v.to(device) for k, v in state.items()}
    return state, card
