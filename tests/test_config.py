"""Typed configs: YAML + dotted overrides → nested dataclasses, with checked types and helpful errors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from skelssl.config import config_keys, config_to_dict, dump_config, load_config, read_yaml, validate_config
from skelssl.errors import ConfigError


@dataclass
class Optim:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 5e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-5


@dataclass
class Data:
    frames: int = 50
    path: Optional[Path] = None  # noqa: UP045 - Optional[...] is one of the spellings under test
    streams: tuple[str, ...] = ("joint",)
    flip: bool = True
    layout: str = "ntu25"

    def check(self) -> None:
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")


@dataclass
class Mask:
    joints: int = 8
    ratio: float | None = None


@dataclass
class Model:
    channels: list[int] = field(default_factory=lambda: [64, 128])
    mask: Mask | None = None


@dataclass
class Run:
    name: str = "run"
    seed: int | None = None
    optim: Optim = field(default_factory=lambda: Optim(lr=1.0))  # a section default that differs from Optim()
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    weights: dict[str, float] = field(default_factory=lambda: {"csm": 1.0, "matm": 1.0})
    extra: Any = None
    checks: list[str] = field(default_factory=list, init=False, repr=False, compare=False)

    def check(self) -> None:
        if self.model.mask is not None and self.model.mask.joints >= 25:
            raise ConfigError("model.mask.joints must leave at least one of the 25 joints visible")


@dataclass
class Required:
    epochs: int
    lr: float = 0.1


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_and_section_default_instance():
    cfg = load_config(Run, None)
    assert cfg == Run()
    assert cfg.optim.lr == 1.0  # the field's default_factory, not Optim()'s 5e-3
    cfg = load_config(Run, None, ["optim.weight_decay=0"])
    assert cfg.optim.lr == 1.0 and cfg.optim.weight_decay == 0.0


def test_file_then_overrides_in_order(tmp_path):
    path = _write(
        tmp_path,
        "name: pstl\noptim:\n  name: adamw\n  lr: 1e-3\n  betas: [0.9, 0.95]\n"
        "data:\n  frames: 30\n  streams: [joint, bone]\n",
    )
    cfg = load_config(Run, path, ["optim.lr=2e-4", "data.path=/tmp/x", "seed=7", "model.channels=[32,64,128]"])
    assert cfg.name == "pstl"
    assert cfg.optim == Optim(name="adamw", lr=2e-4, betas=(0.9, 0.95), weight_decay=1e-5)
    assert cfg.data.frames == 30 and cfg.data.streams == ("joint", "bone") and cfg.data.path == Path("/tmp/x")
    assert cfg.seed == 7 and cfg.model.channels == [32, 64, 128]
    assert isinstance(cfg.optim.betas, tuple) and isinstance(cfg.optim.lr, float)


def test_base_mapping_under_file_and_overrides(tmp_path):
    path = _write(tmp_path, "data:\n  frames: 20\n")
    base = {"data": {"frames": 10, "layout": "kinect20"}, "optim": {"lr": 0.5}}
    cfg = load_config(Run, path, ["optim.lr=0.25"], base=base)
    assert (cfg.data.frames, cfg.data.layout, cfg.optim.lr) == (20, "kinect20", 0.25)
    assert base == {"data": {"frames": 10, "layout": "kinect20"}, "optim": {"lr": 0.5}}  # not mutated


def test_value_parsing():
    cfg = load_config(
        Run,
        None,
        [
            "optim.lr=1e-3",  # PyYAML alone reads this as a string
            "optim.weight_decay=5E+0",
            "optim.betas=[1, 0]",  # ints are fine for floats
            "name=123",  # str fields take the text as written
            "data.layout=no",  # not the YAML-1.1 boolean
            "data.flip=false",
            "seed=null",
            "weights.csm=0.5",
            "weights.extra=2",
            "model.mask.joints=5",  # creates the optional section from its defaults
            "extra={a: [1, 2]}",
        ],
    )
    assert cfg.optim.lr == 1e-3 and cfg.optim.weight_decay == 5.0 and cfg.optim.betas == (1.0, 0.0)
    assert cfg.name == "123" and cfg.data.layout == "no" and cfg.data.flip is False and cfg.seed is None
    assert cfg.weights == {"csm": 0.5, "matm": 1.0, "extra": 2.0}
    assert cfg.model.mask == Mask(joints=5)
    assert cfg.extra == {"a": [1, 2]}
    cfg = load_config(Run, None, ["model.mask={joints: 3, ratio: 0.5}", "data.path="])
    assert cfg.model.mask == Mask(joints=3, ratio=0.5) and cfg.data.path is None


def test_dict_fields_files_replace_overrides_update(tmp_path):
    path = _write(tmp_path, "weights:\n  bone: 2\n")
    assert load_config(Run, path).weights == {"bone": 2.0}  # a file states the whole mapping
    assert load_config(Run, path, ["weights.csm=3"]).weights == {"bone": 2.0, "csm": 3.0}
    assert load_config(Run, None, ["weights={bone: 2}"]).weights == {"csm": 1.0, "matm": 1.0, "bone": 2.0}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lrr=1", "unknown key 'optim.lrr' (did you mean 'optim.lr'?)"),
        ("optimm.lr=1", "unknown key 'optimm' (did you mean 'optim'?)"),
        ("lr=1", "unknown key 'lr' (did you mean 'optim.lr'?)"),
        ("data.frame=1", "unknown key 'data.frame' (did you mean 'data.frames'?)"),
        ("model.mask.jionts=1", "unknown key 'model.mask.jionts' (did you mean 'model.mask.joints'?)"),
        ("zzz=1", "valid keys at the top level: name, seed, optim, data, model, weights, extra"),
        ("optim.name=adan", "optim.name: expected one of 'adam', 'adamw', 'sgd', got 'adan' (did you mean 'adam'?)"),
        ("data.frames=abc", "data.frames: expected int, got 'abc' (str)"),
        ("data.frames=5.0", "data.frames: expected int, got 5.0 (float)"),
        ("data.frames=true", "data.frames: expected int, got True (bool)"),
        ("data.flip=1", "data.flip: expected bool, got 1 (int)"),
        ("optim.lr=fast", "optim.lr: expected float, got 'fast' (str)"),
        ("optim.betas=[0.9]", "optim.betas: expected a list of 2 (float, float), got 1 item(s)"),
        ("optim.betas=0.9", "optim.betas: expected a list of 2 (float, float), got 0.9 (float)"),
        ("model.channels=[64, x]", "model.channels[1]: expected int, got 'x' (str)"),
        ("seed=1.5", "seed: expected int or null, got 1.5 (float)"),
        ("weights.csm=high", "weights.csm: expected float, got 'high' (str)"),
        ("name.first=1", "'name' holds str, not a section"),
        ("data=5", "expected a mapping of keys for section 'data'"),
        ("optim.lr=[1", "invalid YAML"),
        ("justakey", "expected key=value"),
        ("data..frames=1", "expected key=value"),
    ],
)
def test_override_errors(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(Run, None, [override])
    assert expected in str(info.value)
    if "=" in override and "invalid YAML" not in expected and "key=value" not in expected:
        assert f"override {override!r}" in str(info.value)  # says where the bad value came from


def test_file_errors_name_file_and_line(tmp_path):
    path = _write(tmp_path, "name: x\noptim:\n  lr: 1e-3\n  wieght_decay: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'optim.wieght_decay' \(did you mean 'optim.weight_decay'\?\)"):
        load_config(Run, path)
    with pytest.raises(ConfigError, match=rf"{path}:4"):
        load_config(Run, path)
    path = _write(tmp_path, "data:\n  frames: fifty\n")
    with pytest.raises(ConfigError, match=rf"data.frames: expected int, got 'fifty' \(str\) \(from {path}:2\)"):
        load_config(Run, path)
    path = _write(tmp_path, "optim:\n  lr: 1\n  lr: 2\n")
    with pytest.raises(ConfigError, match=rf"{path}:3: invalid YAML: duplicate key 'lr' \(first on line 2\)"):
        load_config(Run, path)
    path = _write(tmp_path, "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(Run, path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Run, tmp_path / "missing.yaml")
    path = _write(tmp_path, "")
    assert load_config(Run, path) == Run()


def test_yaml_tags_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = _write(tmp_path, f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Run, path)
    assert not marker.exists()
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Run, None, [f"extra=!!python/object/apply:os.system ['touch {marker}']"])
    assert not marker.exists()


def test_check_hooks_run_innermost_first():
    with pytest.raises(ConfigError, match=r"^data: frames must be >= 1, got 0"):
        load_config(Run, None, ["data.frames=0"])
    with pytest.raises(ConfigError, match="must leave at least one"):
        load_config(Run, None, ["model.mask.joints=25"])
    load_config(Run, None, ["model.mask.joints=24"])


def test_required_fields_and_post_init():
    with pytest.raises(ConfigError, match="missing required key 'epochs'"):
        load_config(Required, None)
    assert load_config(Required, None, ["epochs=3"]) == Required(epochs=3)


def test_validate_config_type_checks_edited_objects():
    cfg = load_config(Run, None)
    fixed = validate_config(dataclasses.replace(cfg, optim=Optim(lr=1)))
    assert isinstance(fixed.optim.lr, float)
    with pytest.raises(ConfigError, match=r"optim\.name: expected one of"):
        validate_config(dataclasses.replace(cfg, optim=Optim(name="lamb")))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="frames must be >= 1"):
        validate_config(dataclasses.replace(cfg, data=Data(frames=0)))


def test_config_to_dict_is_plain_yaml():
    cfg = load_config(Run, None, ["data.path=/a/b", "model.mask.ratio=0.9"])
    d = config_to_dict(cfg)
    assert d["data"]["path"] == "/a/b" and d["optim"]["betas"] == [0.9, 0.999]
    assert "checks" not in d  # init=False fields are not configuration
    assert yaml.safe_load(yaml.safe_dump(d)) == d


def test_dump_then_load_round_trip(tmp_path):
    cfg = load_config(
        Run,
        None,
        ["optim.lr=1e-5", "data.layout=yes", "data.path=/x y/z", "model.mask.ratio=0.9", "weights.bone=0.25"],
    )
    out = dump_config(cfg, tmp_path / "run" / "config.yaml")
    text = out.read_text()
    assert "betas: [0.9, 0.999]" in text  # lists of scalars in flow style
    assert load_config(Run, out) == cfg
    assert read_yaml(out) == config_to_dict(cfg)
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


_floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    lr=_floats,
    betas=st.tuples(_floats, _floats),
    frames=st.integers(min_value=1, max_value=10**12),
    name=_names,
    streams=st.lists(_names, max_size=4),
    seed=st.none() | st.integers(-(2**63), 2**63),
    ratio=st.none() | _floats,
    weights=st.dictionaries(_names, _floats, max_size=3),
)
def test_round_trip_property(tmp_path_factory, lr, betas, frames, name, streams, seed, ratio, weights):
    cfg = Run(
        name=name,
        weights=weights,
        seed=seed,
        optim=Optim(name="sgd", lr=lr, betas=betas),
        data=Data(frames=frames, streams=tuple(streams)),
        model=Model(mask=Mask(ratio=ratio)),
    )
    path = dump_config(cfg, tmp_path_factory.mktemp("rt") / "c.yaml")
    assert load_config(Run, path) == cfg
    assert load_config(Run, None, base=config_to_dict(cfg)) == cfg


def test_config_keys_lists_every_dotted_key():
    keys = config_keys(Run)
    assert keys[:3] == ["name", "seed", "optim"]
    assert {"optim.lr", "data.frames", "model.mask", "model.mask.joints", "weights"} <= set(keys)
    assert "checks" not in keys
