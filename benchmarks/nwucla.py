"""The NW-UCLA results table: every method's CPU preset through every evaluation protocol, in one command.

Pretrain on views 1 + 2, evaluate on view 3 (split ``xview``), for PSTL, SkeletonBT (PSTL's preset with
``pstl.baseline=true``), Skeleton2vec and MAMP; then, per encoder:

- ``linear``: frozen encoder + linear classifier, MAE recipe (``skelssl eval linear … recipe=mae``);
- ``linear_joint``: the same probe on per-joint features (``pool=joint``: mean over time per joint, the joints
  concatenated — MAMP's fine-tune head's pooling; not the references' linear protocol);
- ``knn``: cosine kNN, k = 1 and 20 (``skelssl eval knn``);
- ``semi10``: linear classifier on a class-balanced 10 % of the labels (``skelssl eval semi fraction=0.1``);
- ``finetune``: the whole network with labels, the method's fine-tune recipe shortened to ``--finetune-epochs``;
- ``finetune10``: the same on a class-balanced 10 % of the labels (``eval semi fraction=0.1 head=finetune``).

Beside them, the same architectures at random init (BatchNorm statistics calibrated on the unlabelled
training part; one row per preset, so PSTL and SkeletonBT share theirs), where ``finetune`` and ``finetune10``
train from scratch with 100 % and 10 % of the labels; and, per preset, the raw input (``--raw-input``: no
network, the preset's clips flattened) under the frozen-feature protocols ``linear``, ``knn`` and ``semi10`` —
the floor a learned representation has to clear.

Every measurement is one ``skelssl`` command run as a subprocess; its wall time and the command are recorded in
``OUT/steps.jsonl`` and in the table. A step whose output exists is not run again, so an interrupted table is
completed by running the same command again (an unfinished pretraining is resumed with ``--resume``).
``--run METHOD=DIR`` takes an existing pretraining run instead of making one. The table is written to
``OUT/nwucla.md`` and ``OUT/nwucla.json`` and printed. ``--dry-run`` prints the commands only.

    python benchmarks/nwucla.py --store stores/nw-ucla --out benchmarks/results/nwucla
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: method → (preset, extra overrides)
METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pstl": ("pstl/nw-ucla", ()),
    "skeletonbt": ("pstl/nw-ucla", ("pstl.baseline=true",)),
    "skeleton2vec": ("skeleton2vec/nw-ucla", ()),
    "mamp": ("mamp/nw-ucla", ()),
}
#: preset → fine-tune recipe options. The ST-GCN recipe's batch of 128 (PSTL's, for NTU's 40k clips) gives
#: 7 steps per epoch on NW-UCLA's 1,020 and 1 on its 10 % subset (measured: 6-17 % top-1 after 30 epochs on
#: 10 % of the labels, 36.9 % with batches of 16); CTR-GCN trains on NW-UCLA in batches of 16.
FINETUNE_OPTIONS: dict[str, tuple[str, ...]] = {"pstl/nw-ucla": ("batch_size=16",)}
PROTOCOLS = ("linear", "linear_joint", "knn", "semi10", "finetune", "finetune10")
#: the ``skelssl eval`` command of each protocol
COMMANDS = {"linear": "linear", "linear_joint": "linear", "knn": "knn", "finetune": "finetune"}
#: the protocols of the raw-input rows (fine-tuning needs a network; a flattened clip has no joints to pool)
RAW_PROTOCOLS = ("linear", "knn", "semi10")
#: ``--quick``: a smoke run of the whole pipeline (minutes, meaningless numbers)
QUICK_PRETRAIN = ("--epochs", "1", "train.batch_size=16", "train.knn_every_epochs=0", "schedule.warmup_epochs=0")


@dataclass(frozen=True)
class Step:
    """One ``skelssl`` command of the table: ``row`` × ``protocol``, its argv (after ``skelssl``) and output."""

    row: str
    protocol: str
    argv: tuple[str, ...]
    out: Path
    needs: Path | None = None  # a run directory that must hold an encoder first

    @property
    def command(self) -> str:
        return "skelssl " + shlex.join(self.argv)

    def done(self) -> bool:
        marker = "encoder.safetensors" if self.protocol == "pretrain" else "report.json"
        return (self.out / marker).is_file()


@dataclass
class Plan:
    """The steps, in order, and the row labels in table order."""

    steps: list[Step] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)

    def add(self, step: Step) -> None:
        self.steps.append(step)
        if step.row not in self.rows:
            self.rows.append(step.row)


def _slug(row: str) -> str:
    """A folder name for a row label: ``random init (pstl/nw-ucla)`` → ``random-init-pstl-nw-ucla``."""
    return "-".join("".join(c if c.isalnum() else " " for c in row).split())


def make_plan(
    *,
    store: Path,
    out: Path,
    methods: Sequence[str],
    protocols: Sequence[str],
    threads: int,
    finetune_epochs: int,
    runs: dict[str, Path],
    quick: bool = False,
) -> Plan:
    """Every step of the table for ``methods`` × ``protocols`` (see the module docstring)."""
    plan = Plan()
    data = ("--data", str(store))
    eval_extra = ("--epochs", "2") if quick else ()
    ft_epochs = ("--epochs", str(1 if quick else finetune_epochs))
    baselines_done: set[str] = set()
    for method in methods:
        preset, overrides = METHODS[method]
        run = runs.get(method, out / "runs" / method)
        if method not in runs:
            extra = QUICK_PRETRAIN if quick else ()
            argv = ("pretrain", preset, *data, "--out", str(run), f"train.threads={threads}", *overrides, *extra)
            plan.add(Step(method, "pretrain", argv, run))
        encoders = [(method, (), run)]
        if preset not in baselines_done:  # one random-init and one raw-input row per preset
            baselines_done.add(preset)
            encoders.append((f"random init ({preset})", ("--random-init",), run))
            encoders.append((f"raw input ({preset})", ("--raw-input",), run))
        for row, flags, enc in encoders:
            ev = out / "eval" / _slug(row)
            base = ("--encoder", str(enc), *data, *flags)
            options = {
                "linear": (*eval_extra, "recipe=mae"),
                "linear_joint": (*eval_extra, "recipe=mae", "pool=joint"),
                "knn": ("ks=1,20",),
                "semi10": (*eval_extra, "fraction=0.1", "seeds=1,2,3", "recipe=mae"),
                "finetune": (*ft_epochs, *FINETUNE_OPTIONS.get(preset, ())),
                "finetune10": (
                    *ft_epochs,
                    "fraction=0.1",
                    "seeds=1,2,3",
                    "head=finetune",
                    *FINETUNE_OPTIONS.get(preset, ()),
                ),
            }
            allowed = RAW_PROTOCOLS if "--raw-input" in flags else PROTOCOLS
            for protocol in (p for p in allowed if p in protocols):
                command = COMMANDS.get(protocol, "semi")
                argv = ("eval", command, *base, "--out", str(ev / protocol), *options[protocol])
                plan.add(Step(row, protocol, argv, ev / protocol, run))
    return plan


def _claim(out: Path) -> Path | None:
    """Take the lock ``OUT.lock`` beside a step's output (holding this process's id); ``None`` when a live
    process holds it. A lock left by a process that no longer runs is taken over."""
    lock = out.with_name(out.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = int(lock.read_text(encoding="utf-8").strip() or 0)
                os.kill(holder, 0)  # raises when no such process
                return None
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            except PermissionError:  # alive, another user's
                return None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(str(os.getpid()))
        return lock
    return None


def run_plan(plan: Plan, *, log: Path, threads: int, echo: Any = print) -> None:
    """Run every step not yet done, in order; record wall time, command and exit status in ``log`` (JSONL).

    A failed pretraining skips the steps that need its encoder; other rows go on. Each step is locked while it
    runs, so two invocations with the same ``--out`` share the work (one per core with ``--threads 1``).
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log.parent.mkdir(parents=True, exist_ok=True)
    for step in plan.steps:
        if step.done():
            continue
        if (
            step.needs is not None
            and step.protocol != "pretrain"
            and not (step.needs / "encoder.safetensors").is_file()
        ):
            echo(f"skip {step.row}/{step.protocol}: {step.needs} holds no encoder")
            continue
        lock = _claim(step.out)
        if lock is None:
            echo(f"skip {step.row}/{step.protocol}: another run of this table is working on it")
            continue
        try:
            if step.done():  # finished by another invocation since the check above
                continue
            argv = list(step.argv)
            if step.protocol == "pretrain" and (step.out / "checkpoints").is_dir():
                argv.append("--resume")
            echo(f"$ skelssl {shlex.join(argv)}")
            start = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "skelssl.cli", *argv], env=env, check=False)
            seconds = time.perf_counter() - start
        finally:
            lock.unlink(missing_ok=True)
        record = {
            "row": step.row,
            "protocol": step.protocol,
            "command": step.command,
            "seconds": seconds,
            "rc": res.returncode,
        }
        with log.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if res.returncode != 0:
            echo(f"failed ({res.returncode}) after {seconds:.0f} s: {step.row}/{step.protocol}")


def _times(log: Path) -> dict[tuple[str, str], float]:
    """Wall seconds of the last successful run of each (row, protocol) in ``log``."""
    times: dict[tuple[str, str], float] = {}
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            if rec["rc"] == 0:
                times[(rec["row"], rec["protocol"])] = rec["seconds"]
    return times


def _result(step: Step) -> dict[str, Any] | None:
    """The figures of a finished step: top-1 (and kNN@20, semi std), from its report or run directory."""
    if not step.done():
        return None
    if step.protocol == "pretrain":
        card = json.loads((step.out / "encoder.json").read_text(encoding="utf-8"))
        return {"top1": None, "steps": card.get("metrics", {}).get("steps")}
    report = json.loads((step.out / "report.json").read_text(encoding="utf-8"))
    result: dict[str, Any] = {"top1": report["top1"]}
    if step.protocol == "knn":
        result.update({f"knn@{r['k']}": r["top1"] for r in report["rows"]})
    if report.get("top1_std") is not None:
        result["top1_std"] = report["top1_std"]
    return result


def collect(plan: Plan, log: Path) -> list[dict[str, Any]]:
    """One record per step: row, protocol, command, wall seconds (None if not run here) and its figures."""
    times = _times(log)
    records = []
    for step in plan.steps:
        res = _result(step)
        seconds = times.get((step.row, step.protocol))
        records.append(
            {"row": step.row, "protocol": step.protocol, "command": step.command, "seconds": seconds, **(res or {})}
        )
        records[-1]["done"] = res is not None
    return records


def _pct(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}" + (f" ± {100 * std:.1f}" if std else "")


def _wall(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def markdown(records: list[dict[str, Any]], rows: list[str]) -> str:
    """A summary table (one line per encoder) and the full list of measurements with wall time and command."""
    by = {(r["row"], r["protocol"]): r for r in records}
    lines = [
        "| encoder | pretraining | linear | linear, per joint² | kNN@1 | kNN@20 | linear 10 % | fine-tune¹ "
        "| fine-tune 10 %¹ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:

        def g(protocol: str, key: str = "top1", row: str = row) -> Any:
            return by.get((row, protocol), {}).get(key)

        pre = by.get((row, "pretrain"))
        lines.append(
            f"| {row} | {_wall(pre['seconds']) if pre else '–'} | {_pct(g('linear'))} | {_pct(g('linear_joint'))} "
            f"| {_pct(g('knn', 'knn@1'))} "
            f"| {_pct(g('knn', 'knn@20'))} | {_pct(g('semi10'), g('semi10', 'top1_std'))} | {_pct(g('finetune'))} "
            f"| {_pct(g('finetune10'), g('finetune10', 'top1_std'))} |"
        )
    lines += [
        "",
        "¹ on a random-init row: trained from scratch with all / 10 % of the labels (supervised); a raw-input row "
        "(no network: the preset's clips flattened) has no fine-tuning.",
        "² `pool=joint`: the linear probe on the mean over time of each joint's tokens, the joints concatenated "
        "(V·D features) instead of the mean over all tokens (D).",
    ]
    lines += ["", "| encoder | protocol | top-1 | wall | command |", "|---|---|---:|---:|---|"]
    for r in records:
        lines.append(
            f"| {r['row']} | {r['protocol']} | {_pct(r.get('top1'))} | {_wall(r['seconds'])} | `{r['command']}` |"
        )
    return "\n".join(lines) + "\n"


def _runs(values: Sequence[str]) -> dict[str, Path]:
    runs = {}
    for value in values:
        method, sep, path = value.partition("=")
        if not sep or method not in METHODS:
            raise SystemExit(f"--run {value!r}: expected METHOD=DIR with METHOD one of {', '.join(METHODS)}")
        if not (Path(path) / "encoder.safetensors").is_file():
            raise SystemExit(f"--run {value!r}: {path} holds no encoder.safetensors (a finished skelssl pretrain run)")
        runs[method] = Path(path)
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--store", type=Path, default=ROOT / "stores" / "nw-ucla", help="the NW-UCLA store (skelssl prepare nw-ucla)"
    )
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "nwucla")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--protocols", default=",".join(PROTOCOLS), help=f"comma-separated subset of {','.join(PROTOCOLS)}")
    p.add_argument("--threads", type=int, default=2, help="threads per command (OMP_NUM_THREADS, train.threads)")
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=30,
        help="fine-tune / supervised epochs (the recipes' 100-150 take hours on a CPU)",
    )
    p.add_argument("--run", action="append", default=[], metavar="METHOD=DIR", help="use an existing pretraining run")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 1 pretraining epoch, 2 classifier epochs (numbers meaningless)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the commands and the table so far; run nothing")
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    protocols = [x for x in args.protocols.split(",") if x]
    for name, given, known in (("method", methods, METHODS), ("protocol", protocols, PROTOCOLS)):
        unknown = [x for x in given if x not in known]
        if unknown:
            raise SystemExit(f"unknown {name}(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    if not (args.store / "meta.json").is_file() and not args.dry_run:
        raise SystemExit(f"{args.store} is not a skelssl store: skelssl prepare nw-ucla --input DIR --out {args.store}")
    plan = make_plan(
        store=args.store,
        out=args.out,
        methods=methods,
        protocols=protocols,
        threads=args.threads,
        finetune_epochs=args.finetune_epochs,
        runs=_runs(args.run),
        quick=args.quick,
    )
    log = args.out / "steps.jsonl"
    if args.dry_run:
        for step in plan.steps:
            print(("done  " if step.done() else "todo  ") + step.command)
    else:
        run_plan(plan, log=log, threads=args.threads)
    records = collect(plan, log)
    table = markdown(records, plan.rows)
    if not args.dry_run:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "nwucla.md").write_text(table, encoding="utf-8")
        meta = {
            "store": str(args.store),
            "threads": args.threads,
            "finetune_epochs": args.finetune_epochs,
            "quick": args.quick,
        }
        (args.out / "nwucla.json").write_text(json.dumps({**meta, "records": records}, indent=1), encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
