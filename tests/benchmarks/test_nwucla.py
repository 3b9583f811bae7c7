"""``benchmarks/nwucla.py``: the plan of commands, and a quick end-to-end table on a small real NW-UCLA store."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nwucla_benchmark", ROOT / "benchmarks" / "nwucla.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


nw = _load()


def _plan(tmp_path: Path, **kw: object) -> object:
    args = {
        "store": tmp_path / "store",
        "out": tmp_path / "out",
        "methods": list(nw.METHODS),
        "protocols": list(nw.PROTOCOLS),
        "threads": 1,
        "finetune_epochs": 7,
        "runs": {},
    }
    return nw.make_plan(**{**args, **kw})


def test_plan_covers_every_method_protocol_and_baseline(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    cmds = {(s.row, s.protocol): s.command for s in plan.steps}
    assert [s.protocol for s in plan.steps if s.row in nw.METHODS].count("pretrain") == 4
    assert "pstl.baseline=true" in cmds[("skeletonbt", "pretrain")]
    assert "pstl.baseline=true" not in cmds[("pstl", "pretrain")]
    assert "skeleton2vec/nw-ucla" in cmds[("skeleton2vec", "pretrain")]
    # one random-init row per preset: PSTL and SkeletonBT share the ST-GCN one
    presets = ["pstl/nw-ucla", "skeleton2vec/nw-ucla", "mamp/nw-ucla"]
    randoms = [r for r in plan.rows if r.startswith("random init")]
    assert randoms == [f"random init ({p})" for p in presets]
    # and one raw-input row per preset, with the frozen-feature protocols only
    raws = [r for r in plan.rows if r.startswith("raw input")]
    assert raws == [f"raw input ({p})" for p in presets]
    for row in plan.rows:
        if row in raws:
            expected = {"linear", "knn", "semi10"}
        else:
            expected = {"linear", "linear_joint", "knn", "semi10", "finetune", "finetune10"} | (
                set() if row in randoms else {"pretrain"}
            )
        assert {p for r, p in cmds if r == row} == expected, row
        for protocol in expected - {"pretrain"}:
            assert ("--random-init" in cmds[(row, protocol)]) == (row in randoms)
            assert ("--raw-input" in cmds[(row, protocol)]) == (row in raws)
    assert "--epochs 7" in cmds[("mamp", "finetune")] and "head=finetune" in cmds[(randoms[2], "finetune10")]
    # ST-GCN fine-tunes in NW-UCLA-sized batches, transformers keep their recipe's
    for row in ("pstl", "skeletonbt", randoms[0]):
        assert cmds[(row, "finetune")].endswith("batch_size=16") and "batch_size=16" in cmds[(row, "finetune10")]
    assert "batch_size" not in cmds[("mamp", "finetune")] + cmds[(randoms[1], "finetune10")]
    assert (
        cmds[("pstl", "finetune10")].startswith("skelssl eval semi ") and "fraction=0.1" in cmds[("pstl", "finetune10")]
    )
    assert "fraction=0.1" in cmds[("pstl", "semi10")] and "recipe=mae" in cmds[("pstl", "linear")]
    assert cmds[("mamp", "linear_joint")].startswith("skelssl eval linear ")
    assert cmds[("mamp", "linear_joint")].endswith("recipe=mae pool=joint") and "pool" not in cmds[("mamp", "linear")]
    # every output folder is distinct
    assert len({s.out for s in plan.steps}) == len(plan.steps)


def test_plan_reuses_runs_and_subsets(tmp_path: Path) -> None:
    run = tmp_path / "given"
    plan = _plan(tmp_path, methods=["pstl"], protocols=["knn"], runs={"pstl": run})
    assert [(s.row, s.protocol) for s in plan.steps] == [
        ("pstl", "knn"),
        ("random init (pstl/nw-ucla)", "knn"),
        ("raw input (pstl/nw-ucla)", "knn"),
    ]
    assert all(f"--encoder {run}" in s.command for s in plan.steps)
    with pytest.raises(SystemExit, match="holds no encoder"):
        nw.main(["--dry-run", "--run", f"pstl={run}"])
    with pytest.raises(SystemExit, match="unknown method"):
        nw.main(["--dry-run", "--methods", "pstl,simclr"])


def test_markdown_table_from_reports(tmp_path: Path) -> None:
    plan = _plan(tmp_path, methods=["pstl"], protocols=["linear", "linear_joint", "knn"])
    for step in plan.steps:
        step.out.mkdir(parents=True)
        if step.protocol == "pretrain":
            (step.out / "encoder.safetensors").write_bytes(b"")
            (step.out / "encoder.json").write_text(json.dumps({"metrics": {"steps": 300}}))
        else:
            rows = [{"k": 1, "top1": 0.44}, {"k": 20, "top1": 0.3}] if step.protocol == "knn" else []
            top1 = (0.6 if step.protocol == "linear_joint" else 0.5) if step.row == "pstl" else 0.25
            (step.out / "report.json").write_text(json.dumps({"top1": top1, "rows": rows}))
    log = tmp_path / "steps.jsonl"
    log.write_text(
        json.dumps({"row": "pstl", "protocol": "pretrain", "command": "x", "seconds": 1200.0, "rc": 0}) + "\n"
    )
    table = nw.markdown(nw.collect(plan, log), plan.rows)
    assert "| pstl | 20.0 min | 50.0 | 60.0 | 44.0 | 30.0 | – | – | – |" in table
    assert "| raw input (pstl/nw-ucla) | – | 25.0 | – | 44.0 |" in table  # no per-joint probe of raw clips
    assert "| random init (pstl/nw-ucla) | – | 25.0 |" in table
    assert "`skelssl eval knn --encoder" in table


def test_a_step_runs_in_one_invocation_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the id of a process that has ended
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "eval" / "pstl" / "knn"
    lock = nw._claim(out)
    assert lock == out.with_name("knn.lock") and lock.read_text() == str(os.getpid())
    assert nw._claim(out) is None  # held by a live process (this one)
    # a second invocation skips the locked step and runs nothing
    ran: list[object] = []
    monkeypatch.setattr(nw.subprocess, "run", lambda *a, **k: ran.append(a))
    plan = _plan(tmp_path, methods=["pstl"], protocols=["knn"], runs={"pstl": tmp_path / "run"})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "encoder.safetensors").write_bytes(b"")
    said: list[str] = []
    locked = plan.steps[0]
    assert locked.out.name == "knn"
    nw._claim(locked.out)
    nw.run_plan(nw.Plan(steps=[locked], rows=[locked.row]), log=tmp_path / "log.jsonl", threads=1, echo=said.append)
    assert ran == [] and said == ["skip pstl/knn: another run of this table is working on it"]
    # a lock whose process is gone is taken over, and released after the step
    locked.out.with_name("knn.lock").write_text(gone.stdout.strip())
    monkeypatch.setattr(nw.subprocess, "run", lambda *a, **k: ran.append(a) or subprocess.CompletedProcess(a, 0))
    nw.run_plan(nw.Plan(steps=[locked], rows=[locked.row]), log=tmp_path / "log.jsonl", threads=1, echo=said.append)
    assert len(ran) == 1 and not locked.out.with_name("knn.lock").exists()


@pytest.fixture(scope="module")
def store(small_ucla_store: Path) -> Path:
    return small_ucla_store


def test_quick_table_end_to_end_and_rerun_does_nothing(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "table"
    argv = ["--store", str(store), "--out", str(out), "--methods", "pstl", "--protocols", "linear,knn", "--quick"]
    argv += ["--threads", "1"]
    assert nw.main(argv) == 0
    result = json.loads((out / "nwucla.json").read_text())
    records = {(r["row"], r["protocol"]): r for r in result["records"]}
    assert set(records) == {("pstl", p) for p in ("pretrain", "linear", "knn")} | {
        (f"{baseline} (pstl/nw-ucla)", p) for baseline in ("random init", "raw input") for p in ("linear", "knn")
    }
    for (row, protocol), r in records.items():
        assert r["done"] and r["seconds"] > 0, (row, protocol)
        if protocol != "pretrain":
            assert 0 <= r["top1"] <= 1
    assert 0 <= records[("pstl", "knn")]["knn@20"] <= 1
    lines = (out / "steps.jsonl").read_text().splitlines()
    assert len(lines) == 7 and all(json.loads(x)["rc"] == 0 for x in lines)
    assert nw.main(argv) == 0  # every output exists: nothing runs again
    assert (out / "steps.jsonl").read_text().splitlines() == lines
    table = (out / "nwucla.md").read_text()
    assert "| pstl |" in table and "| raw input (pstl/nw-ucla) | – |" in table
