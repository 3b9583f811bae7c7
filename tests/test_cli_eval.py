"""End to end: `skelssl eval` and `skelssl embed` on a small real NW-UCLA store with a tiny saved ST-GCN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from skelssl.cli import main

from .evaluation.eval_helpers import make_small_store, save_tiny_encoder

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def setup(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("cli-eval")
    store = make_small_store(shared_data, root)
    save_tiny_encoder(root / "run")
    return store, root / "run", root


def _eval(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["eval", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("protocol", "extra", "summary"),
    [
        ("knn", [], "knn top1 "),
        ("linear", ["--epochs", "5"], "linear top1 "),
        ("semi", ["--epochs", "3", "fraction=0.5", "seeds=1,2"], "semi top1 "),
    ],
)
def test_eval_writes_reports(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str], protocol: str, extra: list[str], summary: str
) -> None:
    store, run, root = setup
    out = root / "evals" / protocol
    code, stdout, err = _eval(capsys, protocol, "--encoder", str(run), "--data", str(store), "--out", str(out), *extra)
    assert code == 0, err
    line = stdout.strip().splitlines()[-1]
    assert line.startswith(summary) and line.endswith(f"→ {out / 'report.json'}")
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"] == protocol and report["data"]["split"] == "xview"  # split from the card
    assert 0 <= report["top1"] <= 1 and report["encoder"]["random_init"] is False
    assert f"# {protocol} evaluation" in (out / "report.md").read_text()
    for name in ("confusion.png", "embeddings.png"):
        assert (out / name).read_bytes()[:8] == PNG
    assert (root / "evals" / ".feature-cache").is_dir()
    if protocol == "semi":
        assert (out / "subset-seed1.json").is_file() and len(report["rows"]) == 2
    if protocol == "linear":
        assert np.load(out / "logits.npy").shape == (20, 10)


def test_random_init_gives_another_encoder(setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    store, run, root = setup
    digests = []
    tags = {"--random-init": "[random init]", "--raw-input": "[raw input]"}
    for flags in ([], ["--random-init"], ["--raw-input"]):
        out = root / "ri" / "-".join(flags or ["trained"])
        code, stdout, err = _eval(capsys, "knn", "--encoder", str(run / "encoder.safetensors"), "--data", str(store),
                                  "--out", str(out), "embedding=none", *flags)  # fmt: skip
        assert code == 0, err
        report = json.loads((out / "report.json").read_text())
        assert report["encoder"]["random_init"] == (flags == ["--random-init"])
        assert report["encoder"]["raw_input"] == (flags == ["--raw-input"])
        digests.append(report["encoder"]["digest"])
        for flag, tag in tags.items():
            assert (tag in stdout) == (flag in flags)
    assert len(set(digests)) == 3
    code, _, err = _eval(capsys, "finetune", "--encoder", str(run), "--data", str(store), "--out", str(root / "rf"),
                         "--raw-input")  # fmt: skip
    assert code == 2 and "fine-tune needs an encoder network" in err and "Traceback" not in err


def test_eval_errors_exit_2(setup: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, run, _ = setup
    base = ["--data", str(store), "--out", str(tmp_path / "o")]
    cases = [
        (["knn", "--encoder", str(tmp_path / "none.safetensors"), *base], "not found"),
        (["knn", "--encoder", str(run), "encoder=student", *base], "student"),
        (["knn", "--encoder", str(run), "--split", "xsub", *base], "no split 'xsub'"),
        (["linear", "--encoder", str(run), "recipie=mae", *base], "did you mean 'recipe'"),
        (["knn", "--encoder", str(run), "--encoder", str(run), *base], "ensemble"),
    ]
    save_tiny_encoder(tmp_path / "ntu", layout="ntu25")
    cases.append((["knn", "--encoder", str(tmp_path / "ntu"), *base], "do not correspond"))
    for args, message in cases:
        code, _, err = _eval(capsys, *args)
        assert code == 2 and message in err and "Traceback" not in err, (args, err)


def test_embed_command(setup: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, run, _ = setup
    out = tmp_path / "features.npy"
    assert main(["embed", "--encoder", str(run), "--data", str(store), "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("embedded 60 sequences into 16-D features")
    names = json.loads((tmp_path / "features.names.json").read_text())
    assert np.load(out).shape == (60, 16) and len(names["names"]) == 60 and len(names["labels"]) == 60
    code = main(["embed", "--encoder", str(run), "--data", str(store), "--out", str(tmp_path / "x.txt")])
    assert code == 2 and ".npy" in capsys.readouterr().err
