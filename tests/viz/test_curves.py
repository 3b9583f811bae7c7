"""Training curves read from a real metrics.jsonl written by MetricsLog."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from skelssl.engine.metrics import MetricsLog
from skelssl.errors import BadInputError
from skelssl.viz.curves import curve_series, plot_curves


def _run(tmp_path: Path) -> tuple[Path, dict]:
    run = tmp_path / "run"
    run.mkdir()
    log = MetricsLog(run, tensorboard=False)
    log.log("knn", 0, epoch=0, **{"knn_top1@1": 0.45, "knn_top1@20": 0.31})
    logged = {"loss": {}, "lr": {}, "epoch": {}}
    for step in range(1, 41):
        loss, lr = 100.0 / step, 1e-3 * min(1.0, step / 10)
        log.log("train", step, epoch=(step - 1) // 10, lr=lr, clips_per_s=20.0, loss=loss, loss_csm=loss / 2)
        logged["loss"][step], logged["lr"][step] = loss, lr
        if step % 10 == 0:
            log.log("epoch", step, epoch=step // 10, loss=loss * 1.1, lr=lr)
            logged["epoch"][step] = loss * 1.1
    log.log("knn", 20, epoch=2, **{"knn_top1@1": 0.55, "knn_top1@20": 0.5})
    log.log("knn", 40, epoch=4, **{"knn_top1@1": 0.6, "knn_top1@20": 0.58})
    log.close()
    return run, logged


def test_curves_plot_what_was_logged(tmp_path: Path) -> None:
    run, logged = _run(tmp_path)
    pic = plot_curves(run, tmp_path / "curves.png")
    assert pic.panels == ("loss", "lr", "knn")
    xs, ys = pic.series["train/loss"]
    assert xs == list(logged["loss"]) and ys == pytest.approx(list(logged["loss"].values()), rel=1e-5)
    assert pic.series["train/loss_csm"][1] == pytest.approx([v / 2 for v in logged["loss"].values()], rel=1e-5)
    assert pic.series["epoch/loss"][0] == [10, 20, 30, 40]
    assert pic.series["lr"][1] == pytest.approx(list(logged["lr"].values()))
    assert pic.series["knn_top1@20"] == ([0, 2, 4], pytest.approx([31.0, 50.0, 58.0]))
    assert "clips_per_s" not in " ".join(pic.series)
    with Image.open(pic.path) as im:
        w, h = im.size
        assert im.format == "PNG" and w > 2 * h  # three panels side by side
    # the metrics.jsonl path itself works too
    assert plot_curves(run / "metrics.jsonl", tmp_path / "c2.png").panels == pic.panels


def test_resumed_rows_replace_earlier_ones_and_empty_panels_are_left_out() -> None:
    records = [
        {"kind": "train", "step": 1, "loss": 3.0},
        {"kind": "train", "step": 2, "loss": 2.0},
        {"kind": "train", "step": 2, "loss": 1.5},  # logged again after a resume
        {"kind": "train", "step": 3, "loss": "nan"},
    ]
    panels = curve_series(records)
    assert list(panels) == ["loss"] and panels["loss"]["train/loss"] == ([1, 2], [3.0, 1.5])


def test_curves_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"metrics\.jsonl"):
        plot_curves(tmp_path, tmp_path / "c.png")
    (tmp_path / "metrics.jsonl").write_text('{"kind": "note", "step": 1}\n')
    with pytest.raises(BadInputError, match="no loss"):
        plot_curves(tmp_path, tmp_path / "c.png")
    (tmp_path / "metrics.jsonl").write_text("{not json\n")
    with pytest.raises(BadInputError, match="JSON"):
        plot_curves(tmp_path, tmp_path / "c.png")
