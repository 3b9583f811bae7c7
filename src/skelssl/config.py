"""Typed configurations: nested dataclasses ↔ YAML, with ``key=value`` overrides.

A configuration is a (nested) dataclass whose field annotations say what each key accepts. It is
filled, in this order, from

1. the dataclass defaults (a section's default instance counts: its values are kept unless overridden),
2. ``base`` (a mapping, e.g. a method's defaults),
3. a YAML file,
4. command-line overrides ``"optim.lr=1e-3"``, ``"data.frames=50"``, ``"model.channels=[64,128]"``
   (dotted keys; the value is read as YAML),

and every value is then checked against its field annotation. Supported annotations: ``int``,
``float`` (ints accepted), ``bool``, ``str``, ``pathlib.Path``, ``Literal[...]``, ``tuple[X, ...]``,
``tuple[X, Y]``, ``list[X]``, ``dict[str, X]``, ``X | None`` / ``Optional[X]``, unions, ``Any`` and
nested dataclasses. Unknown keys at any level, wrong types and values outside a ``Literal`` are
refused with a :class:`~skelssl.errors.ConfigError` that names the key, where it came from (file and
line, or the override), what was expected, and the closest valid key.

After loading, every dataclass in the tree that defines ``check(self) -> None`` has it called,
innermost sections first, so a configuration can refuse impossible combinations (a mask that keeps no
token, …) before any work starts. ``check`` raises :class:`ConfigError` or ``ValueError`` (the latter is
reported with the section's key path).

YAML is read with a safe loader (``yaml.SafeLoader`` subclass) that differs from PyYAML's defaults in
three ways, all towards YAML 1.2: ``1e-3`` is a float (PyYAML needs ``1.0e-3``), only
``true``/``false`` are booleans (``yes``/``no``/``on``/``off`` stay strings), and a key repeated in one
mapping is an error. No code is ever evaluated: no tags, no dotted import paths, no registry.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union

import yaml

from skelssl.errors import ConfigError
from skelssl.utils import atomic_write, closest

__all__ = [
    "config_keys",
    "config_to_dict",
    "dump_config",
    "load_config",
    "read_yaml",
    "validate_config",
]

T = TypeVar("T")

_NONE_TYPE = type(None)


# ----------------------------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML-1.2-style floats and booleans and duplicate-key detection."""


# Booleans: only true/false (YAML 1.2), not yes/no/on/off.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# Floats written without a dot, such as 1e-3 or 5E+2 (PyYAML reads them as strings).
_FLOAT_NO_DOT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_NO_DOT, list("-+0123456789."))


class _LineDict(dict):
    """A dict that remembers the 1-based line of each key in its YAML source."""

    lines: dict[Any, int]


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    out = _LineDict()
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a scalar", key_node.start_mark
            ) from None
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {out.lines[key]})", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def _yaml_load(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` with the safe loader described above (empty file → ``{}``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    data = _yaml_load(text, str(path))
    if data is None:
        return _LineDict()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of keys, not {type(data).__name__}")
    return data


class _Dumper(yaml.SafeDumper):
    """SafeDumper writing lists of scalars in flow style (``[1, 2]``) and everything else in block style."""


def _represent_list(dumper: _Dumper, data: list) -> yaml.Node:
    flow = all(isinstance(x, (str, int, float, bool)) or x is None for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)
# Quote strings such as "1e-3" that our loader would read as floats (PyYAML's own rules already quote
# "yes"/"no", so the file reads back the same with this loader and with plain yaml.safe_load).
_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_NO_DOT, list("-+0123456789."))


# ------------------------------------------------------------------------------------------- overrides


@dataclasses.dataclass(frozen=True)
class _Override:
    """A command-line value: the YAML-parsed value and the raw text (used for ``str`` fields)."""

    value: Any
    text: str


# ------------------------------------------------------------------------------------------- type hints


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception as exc:  # NameError for unresolvable forward references
        raise TypeError(f"cannot resolve the field annotations of {cls.__qualname__}: {exc}") from exc


def _init_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` → ``(X, True)``; other unions are returned as they are."""
    if _is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not _NONE_TYPE]
        has_none = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], has_none
        return Union[tuple(args)], has_none  # noqa: UP007 - runtime construction
    return tp, False


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _type_name(tp: Any) -> str:
    if tp is Any:
        return "any value"
    if tp is _NONE_TYPE:
        return "null"
    if _is_dataclass_type(tp):
        return f"a section ({tp.__name__})"
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "a path"
    if isinstance(tp, type):
        return tp.__name__
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if _is_union(tp):
        return " or ".join(_type_name(a) for a in args)
    if origin in (tuple, list):
        if origin is tuple and args and (len(args) != 2 or args[1] is not Ellipsis):
            return f"a list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin in (dict, Mapping):
        return f"a mapping of {_type_name(args[1])}" if args else "a mapping"
    return str(tp)


# ------------------------------------------------------------------------------------------ conversion


class _Bad(Exception):
    """A value or key error at ``key`` (dotted), turned into a ConfigError with its source by the caller."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _convert(tp: Any, value: Any, key: str) -> Any:
    if isinstance(value, _Override):
        try:
            return _convert_value(tp, value.value, key)
        except _Bad:
            if isinstance(value.value, str) or not value.text:
                raise
            try:  # "name=123" or "choice=no" for a str/Literal field: take the text as written
                return _convert_value(tp, value.text, key)
            except _Bad:
                pass
            raise
    return _convert_value(tp, value, key)


def _expected(tp: Any, value: Any, key: str) -> _Bad:
    return _Bad(key, f"{key or 'value'}: expected {_type_name(tp)}, got {_show(value)} ({type(value).__name__})")


def _convert_value(tp: Any, value: Any, key: str) -> Any:
    if isinstance(value, _Override):
        return _convert(tp, value, key)
    if tp is Any or tp is object:
        return value
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            value = config_to_dict(value)
        return _build(tp, value, key)
    if _is_union(tp):
        inner, has_none = _strip_optional(tp)
        if value is None:
            if has_none:
                return None
            raise _expected(tp, value, key)
        if not _is_union(inner):
            try:
                return _convert_value(inner, value, key)
            except _Bad as exc:
                if has_none and exc.key == key and not _is_dataclass_type(inner):
                    raise _expected(tp, value, key) from None
                raise
        for alt in typing.get_args(inner):
            try:
                return _convert_value(alt, value, key)
            except _Bad:
                continue
        raise _expected(tp, value, key)
    if tp is _NONE_TYPE:
        if value is None:
            return None
        raise _expected(tp, value, key)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        for choice in args:
            if type(value) is type(choice) and value == choice:
                return choice
        hint = closest(str(value), [str(a) for a in args]) if isinstance(value, str) else None
        suffix = f" (did you mean {hint!r}?)" if hint else ""
        raise _Bad(key, f"{key}: expected {_type_name(tp)}, got {_show(value)}{suffix}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _expected(tp, value, key)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _expected(tp, value, key)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _expected(tp, value, key)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _expected(tp, value, key)
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, (str, PurePath)) and str(value):
            return tp(value)
        raise _expected(tp, value, key)
    if tp in (tuple, list) or origin in (tuple, list):
        container = origin or tp
        if not isinstance(value, (list, tuple)):
            raise _expected(tp, value, key)
        if not args:
            items = list(value)
        elif container is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise _Bad(key, f"{key}: expected {_type_name(tp)}, got {len(value)} item(s): {_show(value)}")
            items = [_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))]
        else:
            items = [_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if container is tuple else items
    if tp in (dict, Mapping) or origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _expected(tp, value, key)
        key_tp, val_tp = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            k2 = _convert(key_tp, k, f"{key}.{k}")
            out[k2] = _convert(val_tp, v, _join(key, str(k)))
        return out
    raise TypeError(f"{key}: unsupported config annotation {tp!r}")


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _unknown_key(cls: type, key: str, name: Any) -> _Bad:
    full = _join(key, str(name))
    names = list(_init_fields(cls))
    hint = closest(str(name), names)
    if hint is not None:
        return _Bad(full, f"unknown key {full!r} (did you mean {_join(key, hint)!r}?)")
    leaf = str(name).rsplit(".", 1)[-1]
    deeper = [k for k in config_keys(cls) if k.rsplit(".", 1)[-1] == leaf]
    if deeper:
        return _Bad(full, f"unknown key {full!r} (did you mean {_join(key, deeper[0])!r}?)")
    where = f"section {key!r}" if key else "the top level"
    return _Bad(full, f"unknown key {full!r}; valid keys at {where}: {', '.join(names)}")


def _build(cls: type, data: Any, key: str) -> Any:
    if not isinstance(data, Mapping):
        raise _Bad(key, f"expected a mapping of keys for section {key or cls.__name__!r}, got {_show(data)}")
    hints = _hints(cls)
    flds = _init_fields(cls)
    for name in data:
        if not isinstance(name, str) or name not in flds:
            raise _unknown_key(cls, key, name)
    kwargs: dict[str, Any] = {}
    for name, f in flds.items():
        sub = _join(key, name)
        if name in data:
            value = data[name]
            if isinstance(value, Mapping):
                default = _field_default(f)
                if dataclasses.is_dataclass(default) and not isinstance(default, type):
                    value = _merge(config_to_dict(default), value)
            kwargs[name] = _convert(hints[name], value, sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _Bad(sub, f"missing required key {sub!r} ({_type_name(hints[name])})")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise _Bad(key, f"{key or cls.__name__}: {exc}") from exc


def _merge(base: Mapping, update: Mapping) -> dict:
    """Deep merge: mappings merge key by key; anything else in ``update`` replaces."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


# ------------------------------------------------------------------------------------------ provenance


def _record(prov: dict[str, str], data: Any, prefix: str, source: str) -> None:
    """Note where every key of ``data`` came from (``file:line`` when the YAML loader kept lines)."""
    if not isinstance(data, Mapping):
        return
    lines = getattr(data, "lines", {})
    for k, v in data.items():
        sub = _join(prefix, str(k))
        prov[sub] = f"{source}:{lines[k]}" if k in lines else source
        _record(prov, v, sub, source)


def _where(prov: Mapping[str, str], key: str) -> str:
    key = re.sub(r"\[\d+\]", "", key)
    below = [v for k, v in prov.items() if k.startswith(key + ".")] if key else []
    if key not in prov and below:  # e.g. an unknown section named by an override of one of its keys
        return below[0]
    while key:
        if key in prov:
            return prov[key]
        key = key.rpartition(".")[0]
    return ""


def _accepts_text(tp: Any) -> bool:
    """Whether a field of type ``tp`` can hold a plain string (so unparsable YAML is taken as text)."""
    inner, _ = _strip_optional(tp)
    alts = typing.get_args(inner) if _is_union(inner) else (inner,)
    for alt in alts:
        if alt is str or (isinstance(alt, type) and issubclass(alt, PurePath)):
            return True
        if typing.get_origin(alt) is Literal and any(isinstance(a, str) for a in typing.get_args(alt)):
            return True
    return False


def _is_section(tp: Any) -> bool:
    inner, _ = _strip_optional(tp)
    return _is_dataclass_type(inner) or inner in (dict, Mapping) or typing.get_origin(inner) in (dict, Mapping)


def _apply_override(cls: type, data: dict, dotted: str, text: str, item: str) -> Any:
    """Set ``dotted`` in the nested mapping ``data`` to the YAML value of ``text``; returns the value."""
    parts = dotted.split(".")
    tp: Any = cls
    node = data
    default: Any = dataclasses.MISSING  # the value the key has when nothing sets it
    for i, part in enumerate(parts):
        here = ".".join(parts[:i])
        inner, _ = _strip_optional(tp)
        if _is_dataclass_type(inner):
            if part not in _init_fields(inner):
                raise _unknown_key(inner, here, part)
            child = _hints(inner)[part]
            if dataclasses.is_dataclass(default) and not isinstance(default, type):
                default = getattr(default, part)
            else:
                default = _field_default(_init_fields(inner)[part])
        elif inner in (dict, Mapping) or typing.get_origin(inner) in (dict, Mapping):
            args = typing.get_args(inner)
            child = args[1] if args else Any
            default = default.get(part, dataclasses.MISSING) if isinstance(default, Mapping) else dataclasses.MISSING
        elif inner is Any and i > 0:
            child = Any
            default = dataclasses.MISSING
        else:
            raise _Bad(dotted, f"{here!r} holds {_type_name(tp)}, not a section; cannot set {dotted!r}")
        if part not in node and isinstance(default, Mapping):
            # "weights.csm=0.5" updates the dict the field would otherwise have, instead of replacing it
            node[part] = config_to_dict(default)
        if i < len(parts) - 1:
            node[part] = dict(node[part]) if isinstance(node.get(part), Mapping) else {}
            node = node[part]
            tp = child
            continue
        try:
            value = _yaml_load(text, f"override {item!r}") if text else None
        except ConfigError:
            if not _accepts_text(child):
                raise
            value = text
        if isinstance(value, Mapping) and (_is_section(child) or child is Any):
            node[part] = _merge(node[part], value) if isinstance(node.get(part), Mapping) else dict(value)
        else:
            node[part] = _Override(value, text)
        return value
    return None


# -------------------------------------------------------------------------------------------- checks


def _children(value: Any) -> Iterator[tuple[str, Any]]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield f.name, getattr(value, f.name)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield f"[{i}]", v
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield str(k), v


def _run_checks(obj: Any, key: str, prov: Mapping[str, str]) -> None:
    for name, child in _children(obj):
        sub = f"{key}{name}" if name.startswith("[") else _join(key, name)
        _run_checks(child, sub, prov)
    check = getattr(obj, "check", None)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type) and callable(check):
        try:
            check()
        except ValueError as exc:
            where = _where(prov, key)
            label = f"{key}: " if key else ""
            raise ConfigError(f"{label}{exc}" + (f" (from {where})" if where else "")) from exc


# ------------------------------------------------------------------------------------------------ API


def load_config(
    cls: type[T],
    path: str | os.PathLike[str] | None,
    overrides: Sequence[str] = (),
    *,
    base: Mapping[str, Any] | None = None,
) -> T:
    """Build a ``cls`` instance from its defaults, ``base``, the YAML file at ``path`` and ``overrides``.

    Every value is type-checked against ``cls``'s annotations and every ``check()`` hook is run.
    Raises :class:`ConfigError` naming the key path and where the value came from.
    """
    if not _is_dataclass_type(cls):
        raise TypeError(f"load_config needs a dataclass type, got {cls!r}")
    prov: dict[str, str] = {}
    data: dict[str, Any] = {}
    try:
        if base is not None:
            base_data = config_to_dict(base) if dataclasses.is_dataclass(base) else base
            _record(prov, base_data, "", "base config")
            data = _merge(data, base_data)
        if path is not None:
            file_data = read_yaml(path)
            _record(prov, file_data, "", str(path))
            data = _merge(data, file_data)
        for item in overrides:
            dotted, sep, text = (part.strip() for part in item.partition("="))
            if not sep or not dotted or any(not part for part in dotted.split(".")):
                raise ConfigError(f"override {item!r}: expected key=value with a dotted key (e.g. optim.lr=1e-3)")
            prov[dotted] = f"override {item!r}"
            value = _apply_override(cls, data, dotted, text, item)
            _record(prov, value, dotted, f"override {item!r}")
        obj = _build(cls, data, "")
    except _Bad as exc:
        where = _where(prov, exc.key)
        raise ConfigError(exc.message + (f" (from {where})" if where else "")) from None
    _run_checks(obj, "", prov)
    return obj


def validate_config(obj: T) -> T:
    """Type-check an existing configuration (e.g. one edited in code) and run its ``check()`` hooks.

    Returns a fresh, validated instance (tuples where tuples are declared, floats for ints, …).
    """
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"validate_config needs a dataclass instance, got {obj!r}")
    try:
        new = _build(type(obj), config_to_dict(obj), "")
    except _Bad as exc:
        raise ConfigError(exc.message) from None
    _run_checks(new, "", {})
    return new


def config_to_dict(obj: Any) -> Any:
    """A dataclass (tree) as plain YAML-safe values: dicts, lists, str, int, float, bool, None."""
    return _plain(obj, "")


def _plain(value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name), _join(key, f.name)) for f in dataclasses.fields(value) if f.init}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {
            k if isinstance(k, (str, int, float, bool)) else str(k): _plain(v, _join(key, str(k)))
            for k, v in value.items()
        }
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(value, "ndim", None) == 0:
        return _plain(item(), key)
    raise TypeError(f"{key or 'config'}: {type(value).__name__} value {_show(value)} cannot be written to YAML")


def config_keys(cls: type) -> list[str]:
    """Every dotted key of a config class, sections and leaves, in declaration order."""
    out: list[str] = []

    def walk(tp: type, prefix: str, depth: int) -> None:
        for name in _init_fields(tp):
            sub = _join(prefix, name)
            out.append(sub)
            inner, _ = _strip_optional(_hints(tp)[name])
            if _is_dataclass_type(inner) and depth < 16:
                walk(inner, sub, depth + 1)

    walk(cls, "", 0)
    return out


def dump_config(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` (a dataclass or a plain mapping) to ``path`` as YAML, atomically. Returns the path."""
    data = config_to_dict(obj)
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return atomic_write(Path(path), lambda fh: fh.write(text.encode("utf-8")))
