"""`skelssl viz …` end to end on a real NW-UCLA store: files written, clear errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skelssl.cli import main
from skelssl.engine.metrics import MetricsLog


def test_viz_sequence_png_and_gif(viz_store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = str(viz_store.names[3])
    assert (
        main(["viz", "sequence", "--data", str(viz_store.path), "--name", name, "--out", str(tmp_path / "s.png")]) == 0
    )
    assert name in capsys.readouterr().out and (tmp_path / "s.png").stat().st_size > 2000
    code = main(
        ["viz", "sequence", "--data", str(viz_store.path), "--index", "2", "--out", str(tmp_path / "s.gif"),
         "--frames", "5", "--view", "zy"]
    )  # fmt: skip
    assert code == 0
    with Image.open(tmp_path / "s.gif") as im:
        assert im.n_frames == 5


def test_viz_masks_one_method(viz_store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m"
    code = main(["viz", "masks", "--data", str(viz_store.path), "--index", "0", "--out", str(out), "--method", "mamp"])
    assert code == 0 and [p.name for p in out.iterdir()] == ["mamp-mask.png"]
    assert "59 of 600 tokens visible" in capsys.readouterr().out
    # --config: the preset's masks, on its clips (MAMP's CPU preset: 32 frames, 8 x 20 tokens, 15 visible)
    code = main(["viz", "masks", "--data", str(viz_store.path), "--index", "0", "--out", str(out / "p"),
                 "--config", "mamp/nw-ucla"])  # fmt: skip
    assert code == 0 and "15 of 160 tokens visible" in capsys.readouterr().out
    code = main(["viz", "masks", "--data", str(viz_store.path), "--index", "0", "--out", str(out / "q"),
                 "--config", "mamp/nw-ucla", "--method", "pstl"])  # fmt: skip
    assert code == 2 and "pretrains mamp, not --method pstl" in capsys.readouterr().err


def test_viz_curves_and_embeddings(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    log = MetricsLog(run, tensorboard=False)
    for step in range(1, 6):
        log.log("train", step, epoch=0, lr=0.1, loss=1.0 / step)
    log.close()
    assert main(["viz", "curves", "--run", str(run), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 2000
    rng = np.random.default_rng(0)
    feats = np.concatenate([rng.normal(0, 1, (20, 8)), rng.normal(4, 1, (20, 8))]).astype(np.float32)
    np.save(tmp_path / "features.npy", feats)
    meta = {"names": [f"s{i}" for i in range(40)], "labels": [0] * 20 + [1] * 20, "class_names": ["a", "b"]}
    (tmp_path / "features.names.json").write_text(json.dumps(meta))
    assert (
        main(["viz", "embeddings", "--features", str(tmp_path / "features.npy"), "--out", str(tmp_path / "e.png")]) == 0
    )
    assert (tmp_path / "e.png").stat().st_size > 2000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--index", "12"], "--index 12 is out of range"),
        (["--name", "a01_s01_e00_v9"], "no sequence named 'a01_s01_e00_v9'"),
        ([], "exactly one of --index"),
        (["--index", "0", "--name", "x"], "exactly one of --index"),
        (["--index", "0", "--view", "xx"], "--view 'xx'"),
    ],
)
def test_viz_errors_exit_2(viz_store, tmp_path: Path, capsys, args: list[str], message: str) -> None:
    code = main(["viz", "sequence", "--data", str(viz_store.path), "--out", str(tmp_path / "s.png"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "s.png").exists()


def test_viz_file_errors_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["viz", "curves", "--run", str(tmp_path), "--out", str(tmp_path / "c.png")]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err
    assert main(["viz", "embeddings", "--features", str(tmp_path / "f.npy"), "--out", str(tmp_path / "e.png")]) == 2
    assert "skelssl embed" in capsys.readouterr().err
    assert main(["viz", "sequence", "--data", str(tmp_path / "nope"), "--index", "0", "--out", "x.png"]) == 2
