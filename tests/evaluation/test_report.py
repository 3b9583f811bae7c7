"""report.json / report.md / plots written from a report dict; the schema check; the summary line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from skelssl.evaluation.protocols import accuracy_report
from skelssl.evaluation.report import REPORT_KEYS, check_report, render_markdown, summary_line, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def _report(**changes: Any) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(30, 3))
    labels = rng.integers(0, 3, 30)
    rep: dict[str, Any] = {
        "protocol": "linear",
        "encoder": {"path": "/r/encoder.safetensors", "method": "pstl", "random_init": False, "digest": "ab" * 32},
        "data": {"store": "/s", "split": "xview", "train_part": "train", "test_part": "test", "counts": {}},
        "settings": {"recipe": "pstl", "epochs": np.int64(150), "lr": 0.01},
        "seed": 0,
        "rows": [],
        "seconds": 1.5,
        "selection": "final-epoch",
        **accuracy_report(logits, labels, class_names=["a|x", "b", "c"]),
    }
    rep.update(changes)
    return rep


def test_write_report_files_and_schema(tmp_path: Path) -> None:
    rep = _report()
    emb = np.random.default_rng(1).normal(size=(30, 8))
    path = write_report(tmp_path, rep, embeddings=emb, embedding_labels=np.arange(30) % 3)
    data = json.loads(path.read_text())
    for key in REPORT_KEYS:
        assert key in data
    assert data["settings"]["epochs"] == 150 and data["top1"] == pytest.approx(rep["top1"])
    assert data["images"] == ["confusion.png", "embeddings.png"]
    for name in data["images"]:
        assert (tmp_path / name).read_bytes()[:8] == PNG
    md = (tmp_path / "report.md").read_text()
    assert "# linear evaluation" in md and f"| {100 * rep['top1']:.2f} |" in md
    assert "| recipe | pstl |" in md and "a\\|x" in md and "![confusion](confusion.png)" in md


def test_confusion_from_logits_and_missing_joint_plot(tmp_path: Path) -> None:
    rep = _report(protocol="robustness")
    del rep["confusion"]
    rep["rows"] = [
        {"missing": k, "where": "test", "how": "zero", "top1": 0.8 - 0.05 * k, "top5": 0.9} for k in (0, 3, 5)
    ] + [{"missing": 5, "part": "left_arm", "where": "test", "how": "zero", "top1": 0.5, "top5": 0.9}]
    logits = np.eye(3)[[0, 1, 2, 0]]
    write_report(tmp_path, rep, logits=logits, labels=np.array([0, 1, 2, 1]))
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["images"] == ["confusion.png", "missing_joints.png"]
    assert (tmp_path / "missing_joints.png").read_bytes()[:8] == PNG
    assert "| missing | where | how | top1 | top5 | part |" in (tmp_path / "report.md").read_text()


def test_check_report_rejects_bad_reports() -> None:
    rep = _report()
    del rep["top5"]
    with pytest.raises(ValueError, match="top5"):
        check_report(rep)
    with pytest.raises(ValueError, match="fraction"):
        check_report(_report(top1=61.2))
    with pytest.raises(ValueError, match="rows"):
        check_report(_report(rows=None))


def test_non_finite_values_become_null(tmp_path: Path) -> None:
    write_report(tmp_path, _report(extra=float("nan")), plots=False)
    assert json.loads((tmp_path / "report.json").read_text())["extra"] is None


def test_summary_line() -> None:
    rep = _report(top1=0.612, top5=0.95)
    line = summary_line(rep, "out/report.json")
    assert line.startswith("linear top1 61.2% top5 95.0% [final-epoch, recipe pstl, epochs 150]")
    assert line.endswith("→ out/report.json")
    knn = summary_line(_report(protocol="knn", top5=None, rows=[{"k": 1, "top1": 0.5}, {"k": 5, "top1": 0.4}]), "r")
    assert "top5" not in knn and "(k=1 50.0%, k=5 40.0%)" in knn
    semi = render_markdown(_report(top1=0.5, top1_std=0.02))
    assert "50.00 ± 2.00" in semi
    joint = _report()
    joint["settings"] = {**joint["settings"], "pool": "joint (per-joint …)", "augment": 10}
    assert "recipe pstl, epochs 150, pool joint, augment 10]" in summary_line(joint, "r")
    # semi names its linear head's pooling
    head = _report(protocol="semi")
    head["settings"] = {"fraction": 0.1, "head_settings": {"pool": "joint (per-joint …)", "augment": 0}}
    assert summary_line(head, "r").count("[") == 1 and "fraction 0.1, pool joint]" in summary_line(head, "r")
    assert "pool" not in summary_line(_report(), "r")
