"""``skelssl demo``: the whole pipeline on the bundled NW-UCLA copy, on a CPU, in minutes.

1. **store** — the bundled generic ``.npz`` (:data:`DEMO_DATA`, made by ``scripts/make_demo_data.py``) is
   imported into ``DIR/store`` with the generic importer; its split (NW-UCLA cross-view: views 1+2 train,
   view 3 test) is the store's ``default`` split;
2. **pretrain** — the method's NW-UCLA preset (``<method>/nw-ucla``) with a shortened schedule
   (:data:`DEMO_EPOCHS`; everything else as the preset, the kNN monitor off) into ``DIR/run``;
3. **evaluate** — the linear probe (the MAE recipe: BatchNorm on the frozen features, then Linear — PSTL's own
   recipe, a bare Linear with Adam, stays near chance on short-schedule encoders) and cosine kNN of the
   pretrained encoder and of the same architecture at random init, each in its own folder
   ``DIR/eval/<which>/<protocol>`` (``report.json``, ``report.md``, confusion matrix and embedding plots);
4. **pictures** — ``skelssl viz`` figures (a sequence, the method's masks, the training curves) into
   ``DIR/pictures`` when :mod:`skelssl.viz` is available;
5. **report** — a short table (pretrained vs random init) and ``DIR/report.json``::

       {"method", "epochs", "preset_epochs", "shortened", "seed", "seconds", "pretrain_seconds", "data",
        "pretrained": {"top1", "top5", "knn_top1", "knn", "linear_report", "knn_report"},
        "random_init": {…the same}, "linear_recipe", "pictures", "outputs"}

   Accuracies are fractions in [0, 1]; ``seconds`` is the demo's whole wall time.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from skelssl.errors import BadInputError, ConfigError

__all__ = ["DEMO_DATA", "DEMO_EPOCHS", "DEMO_OUTPUTS", "DEMO_SPLIT", "METHODS", "demo_metadata", "run_demo"]

#: The bundled NW-UCLA copy (generic ``.npz``, float16 coordinates; see ``NW-UCLA-DEMO.md`` beside it).
DEMO_DATA = Path(__file__).resolve().parent / "data" / "resources" / "nw-ucla-demo.npz"
#: Methods the demo runs (each has an ``<method>/nw-ucla`` preset).
METHODS = ("pstl", "skeleton2vec", "mamp")
#: Pretraining epochs of the shortened schedules (the presets run 20 / 60 / 320), chosen so that the whole demo
#: takes at most 10 minutes on a 2-core CPU, measured with 2 threads on the unloaded 2-core machine: MAMP (the
#: default) 7 min 30 s for 150 epochs; PSTL 9 min 33 s for 11 epochs (12 took 10 min 27 s). On one thread a preset
#: epoch takes about 90 s (PSTL), 25 s (Skeleton2vec) and 5 s (MAMP) on that machine.
DEMO_EPOCHS = {"pstl": 11, "skeleton2vec": 6, "mamp": 150}
#: The generic importer's name for the file's ``split`` member (NW-UCLA cross-view).
DEMO_SPLIT = "default"
#: What the demo writes into ``DIR`` (and what ``overwrite=True`` removes first).
DEMO_OUTPUTS = ("store", "run", "eval", "pictures", "report.json", "report.md")


def demo_metadata(path: str | Path = DEMO_DATA) -> dict[str, Any]:
    """The bundled file's metadata (source, attribution, terms, how it was made, float16 error): the JSON in the
    ``.npz`` archive's comment."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            comment = archive.comment
    except (OSError, zipfile.BadZipFile) as err:
        raise BadInputError(path, f"cannot read the demo data ({err}); reinstall skelssl") from err
    try:
        meta = json.loads(comment.decode("utf-8")) if comment else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadInputError(path, f"the archive comment is not JSON metadata: {err}") from err
    if not isinstance(meta, dict):
        raise BadInputError(path, "the archive comment is not a JSON object")
    return meta


# ------------------------------------------------------------------------------------------------ steps


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite``; then remove the demo's own earlier outputs only."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"{out} is not empty; pass --overwrite to replace the demo's outputs there, or choose another --out"
            )
        for name in DEMO_OUTPUTS:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _subset_npz(src: Path, dst: Path, limit: int) -> Path:
    """A generic ``.npz`` of ``limit`` sequences of ``src`` spread evenly over it (for quick test runs)."""
    with np.load(src, allow_pickle=False) as data:
        members = {key: data[key] for key in data.files}
    lengths = members["lengths"].astype(np.int64)
    n = len(lengths)
    pick = np.unique(np.linspace(0, n - 1, min(limit, n)).round().astype(np.int64))
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    frames = np.concatenate([np.arange(offsets[i], offsets[i] + lengths[i]) for i in pick])
    out = {key: value for key, value in members.items() if key in ("class_names", "layout")}
    out["keypoints"] = members["keypoints"][frames]
    for key in ("lengths", "labels", "names", "subjects", "views", "split"):
        if key in members:
            out[key] = members[key][pick]
    np.savez(dst, **out)
    return dst


def _prepare(data: Path, out: Path, echo: Callable[[str], None]) -> Any:
    from skelssl.data.importers.generic import GenericImporter
    from skelssl.data.prepare import prepare_store
    from skelssl.data.store import SkeletonStore

    summary = prepare_store(GenericImporter(data), out)
    if summary.rejected:
        first = summary.rejected[0]
        raise BadInputError(data, f"{len(summary.rejected)} sequence(s) rejected; first: {first.reason}")
    store = SkeletonStore.open(out)
    sizes = {part: len(store.split_indices(DEMO_SPLIT, part)) for part in ("train", "test")}
    echo(
        f"[1/5] store: {summary.num_sequences} sequences ({summary.num_frames} frames, {summary.num_classes} "
        f"classes), cross-view split train {sizes['train']} / test {sizes['test']} in {summary.seconds:.1f} s -> {out}"
    )
    return store


def _pretrain_config(method: str, store: Any, *, epochs: int, seed: int, threads: int) -> tuple[Any, int]:
    """The ``<method>/nw-ucla`` preset on ``store`` with ``epochs`` epochs; returns ``(config, preset epochs)``."""
    from skelssl.config import load_config
    from skelssl.configs import resolve
    from skelssl.engine.pretrain import PretrainConfig

    preset = load_config(PretrainConfig, resolve(f"{method}/nw-ucla"))
    overrides = [
        f"data.split={DEMO_SPLIT}",
        f"train.epochs={epochs}",
        f"train.seed={seed}",
        "train.knn_every_epochs=0",  # the demo evaluates kNN itself, after pretraining
        "train.knn_at_start=false",
        f"train.checkpoint_every_epochs={epochs}",
    ]
    if threads:
        overrides.append(f"train.threads={threads}")
    n_train = len(store.split_indices(DEMO_SPLIT, preset.data.part))
    batch = preset.train.batch_size
    if batch > n_train:  # only for the tiny stores of quick test runs
        batch = max(2, n_train // 2)
        overrides.append(f"train.batch_size={batch}")
    if preset.schedule.warmup_epochs >= epochs:  # very short runs (tests): keep a cooling phase after warm-up
        overrides.append(f"schedule.warmup_epochs={epochs // 2}")
    if method == "skeleton2vec":  # the EMA decay anneals over the whole (shortened) run, as the preset's does
        steps = epochs * (n_train // batch if preset.train.drop_last else -(-n_train // batch))
        overrides.append(f"skeleton2vec.ema_anneal_steps={max(1, steps)}")
    cfg = load_config(PretrainConfig, resolve(f"{method}/nw-ucla"), overrides)
    cfg = replace(cfg, data=replace(cfg.data, store=str(store.path)))  # any path, not parsed as YAML
    return cfg, preset.train.epochs


def _evaluate(
    run_dir: Path, store: Any, out: Path, *, random_init: bool, seed: int, device: str, echo: Callable[[str], None]
) -> dict[str, Any]:
    """Linear probe and kNN of the run's encoder (or the same architecture at random init) → summary row."""
    from skelssl.evaluation.linear import run_linear
    from skelssl.evaluation.protocols import EvalContext, load_eval_encoder, run_knn
    from skelssl.evaluation.report import summary_line, write_run_report

    encoder = load_eval_encoder(run_dir, device=device, random_init=random_init, seed=seed)
    row: dict[str, Any] = {}
    reports: dict[str, dict[str, Any]] = {}
    for protocol, run in (("linear", run_linear), ("knn", run_knn)):
        folder = out / protocol
        options = {"recipe": "mae"} if protocol == "linear" else {}
        ctx = EvalContext(
            encoders=[encoder], store=store, split=DEMO_SPLIT, device=device, seed=seed, out_dir=folder, options=options
        )
        report = run(ctx)
        path = write_run_report(ctx, report)
        echo("      " + summary_line(report, path))
        reports[protocol] = report
        row[f"{protocol}_report"] = str(path)
    row["top1"] = reports["linear"]["top1"]
    row["top5"] = reports["linear"]["top5"]
    row["knn_top1"] = reports["knn"]["top1"]
    row["knn"] = {str(r["k"]): r["top1"] for r in reports["knn"]["rows"]}
    row["linear_recipe"] = {k: reports["linear"]["settings"][k] for k in ("recipe", "epochs", "optimizer", "lr")}
    return row


def _pictures(out: Path, store: Any, run_dir: Path, method: str, seed: int, echo: Callable[[str], None]) -> list[str]:
    """``skelssl viz`` figures (through its command line, the stable contract) when :mod:`skelssl.viz` exists."""
    try:
        import skelssl.viz  # noqa: F401
    except ImportError:
        echo("[4/5] pictures: skelssl.viz is not in this build; skipped (the eval folders hold the plots)")
        return []
    from skelssl.cli import main as cli_main

    test = store.split_indices(DEMO_SPLIT, "test")
    long_enough = [int(i) for i in test if store.lengths[i] >= 30]
    index = str(long_enough[0] if long_enough else int(test[0]))
    folder = out / "pictures"
    folder.mkdir(parents=True, exist_ok=True)
    clip = ["--data", str(store.path), "--index", index]
    jobs = {
        "sequence.png": ["sequence", *clip, "--out", str(folder / "sequence.png")],
        # the masks of the preset the demo trains (its clips, token grid and ratios), not the reference ones
        "masks": ["masks", *clip, "--out", str(folder / "masks"), "--config", f"{method}/nw-ucla", "--seed", str(seed)],
        "curves.png": ["curves", "--run", str(run_dir), "--out", str(folder / "curves.png")],
    }
    made: list[str] = []
    for name, argv in jobs.items():
        try:
            code = cli_main(["viz", *argv])
        except SystemExit as err:  # argparse: the viz command line differs from what the demo expects
            code = err.code if isinstance(err.code, int) else 2
        except Exception as err:  # a picture must never sink the demo
            echo(f"      pictures: viz {argv[0]} failed: {err}")
            continue
        target = folder / name
        if code == 0 and target.exists():
            made.extend(str(p) for p in ([target] if target.is_file() else sorted(target.rglob("*.*"))))
        else:
            echo(f"      pictures: viz {argv[0]} did not finish (exit {code}); skipped")
    echo(f"[4/5] pictures: {len(made)} file(s) -> {folder}")
    return made


def _pct(x: float) -> str:
    return f"{100 * x:5.1f} %"


def _table(report: dict[str, Any]) -> str:
    pre, rnd = report["pretrained"], report["random_init"]
    label = f"pretrained ({report['method']}, {report['epochs']} ep)"
    width = max(len(label), len("random init"))
    lines = [
        f"{'':<{width}}  {'linear top-1':>12}  {'kNN@1':>8}  {'pretraining':>11}",
        f"{label:<{width}}  {_pct(pre['top1']):>12}  {_pct(pre['knn_top1']):>8}  {report['pretrain_seconds']:>9.0f} s",
        f"{'random init':<{width}}  {_pct(rnd['top1']):>12}  {_pct(rnd['knn_top1']):>8}  {'-':>11}",
    ]
    return "\n".join(lines)


def _markdown(report: dict[str, Any]) -> str:
    pre, rnd = report["pretrained"], report["random_init"]
    return "\n".join(
        [
            f"# skelssl demo: {report['method']} on NW-UCLA (cross-view)",
            "",
            f"Pretraining: the `{report['method']}/nw-ucla` preset shortened to {report['epochs']} epochs (preset: "
            f"{report['preset_epochs']}), {report['pretrain_seconds']:.0f} s; whole demo {report['seconds']:.0f} s.",
            "",
            "| encoder | linear top-1 | linear top-5 | kNN@1 |",
            "|---|---:|---:|---:|",
            f"| pretrained | {100 * pre['top1']:.1f} | {100 * pre['top5']:.1f} | {100 * pre['knn_top1']:.1f} |",
            f"| random init | {100 * rnd['top1']:.1f} | {100 * rnd['top5']:.1f} | {100 * rnd['knn_top1']:.1f} |",
            "",
            f"Data: {report['data']['citation']} Terms: {report['data']['terms']}",
            "",
        ]
    )


# ------------------------------------------------------------------------------------------------ the demo


def run_demo(
    out: str | Path,
    *,
    epochs: int | None = None,
    method: str = "mamp",
    seed: int = 0,
    echo: Callable[[str], None] = print,
    overwrite: bool = False,
    threads: int = 0,
    device: str = "cpu",
    data: str | Path | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Run the demo (module docstring) into the folder ``out``; returns the ``report.json`` dict.

    ``epochs``: pretraining epochs (default :data:`DEMO_EPOCHS` of the method). ``seed``: pretraining seed
    (``train.seed``), linear-head seed and the random-init baseline's seed. ``threads``: torch CPU threads (0 =
    torch's default). ``data``: another generic ``.npz`` instead of the bundled one. ``limit``: use only that many
    sequences (spread over the file; for quick checks — the accuracies then mean little).
    Raises :class:`~skelssl.errors.ConfigError` for a bad argument or a non-empty ``out`` without ``overwrite``.
    """
    import torch

    from skelssl.engine.pretrain import pretrain

    start = time.perf_counter()
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; the demo runs {', '.join(METHODS)}")
    epochs = DEMO_EPOCHS[method] if epochs is None else int(epochs)
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    if limit is not None and limit < 8:
        raise ConfigError(f"limit must be at least 8 sequences, got {limit}")
    if threads < 0:
        raise ConfigError(f"threads must be >= 0, got {threads}")
    source = Path(data) if data is not None else DEMO_DATA
    if not source.is_file():
        raise BadInputError(source, "the demo data is missing; reinstall skelssl or run scripts/make_demo_data.py")
    meta = demo_metadata(source) if data is None else {}
    out = Path(out)
    _check_out(out, overwrite)
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="skelssl-demo-") as tmp:
            if limit is not None:
                source = _subset_npz(source, Path(tmp) / "subset.npz", limit)
            store = _prepare(source, out / "store", echo)

        cfg, preset_epochs = _pretrain_config(method, store, epochs=epochs, seed=seed, threads=threads)
        echo(
            f"[2/5] pretrain {method}: the {method}/nw-ucla preset SHORTENED to {epochs} epochs (preset: "
            f"{preset_epochs}) so that the demo fits in minutes on a CPU -> {out / 'run'}"
        )
        result = pretrain(cfg, run_dir=out / "run", device=device, progress=False, echo=lambda s: echo("      " + s))
        echo(f"      pretrained in {result.seconds:.0f} s (final loss {result.last_loss:.4g})")

        rows: dict[str, dict[str, Any]] = {}
        for key, random_init in (("pretrained", False), ("random_init", True)):
            name = key.replace("_", "-")
            what = "the same architecture at random init" if random_init else "the pretrained encoder"
            echo(f"[3/5] evaluate {what}: linear probe and kNN -> {out / 'eval' / name}")
            rows[key] = _evaluate(
                out / "run", store, out / "eval" / name, random_init=random_init, seed=seed, device=device, echo=echo
            )
        pictures = _pictures(out, store, out / "run", method, seed, echo)
    finally:
        torch.set_num_threads(threads_before)

    source_info = meta.get("source") or {}
    recipe = rows["pretrained"].pop("linear_recipe")
    rows["random_init"].pop("linear_recipe")
    report: dict[str, Any] = {
        "method": method,
        "epochs": epochs,
        "preset": f"{method}/nw-ucla",
        "preset_epochs": preset_epochs,
        "shortened": epochs < preset_epochs,
        "seed": seed,
        "device": device,
        "threads": threads or threads_before,
        "pretrain_seconds": result.seconds,
        "pretrained": rows["pretrained"],
        "random_init": rows["random_init"],
        "linear_recipe": recipe,
        "data": {
            "file": str(Path(data) if data is not None else DEMO_DATA),
            "store": str(out / "store"),
            "sequences": len(store),
            "split": "cross-view: views 1+2 train, view 3 test (store split 'default')",
            "train": len(store.split_indices(DEMO_SPLIT, "train")),
            "test": len(store.split_indices(DEMO_SPLIT, "test")),
            "limit": limit,
            "dataset": meta.get("dataset", ""),
            "citation": meta.get("citation", ""),
            "terms": source_info.get("terms", ""),
            "float16_max_abs_error": meta.get("float16_max_abs_error"),
        },
        "pictures": pictures,
        "outputs": {"store": "store", "run": "run", "eval": "eval", "pictures": "pictures"},
    }
    report["seconds"] = time.perf_counter() - start
    _write(out / "report.json", json.dumps(report, indent=2, allow_nan=False) + "\n")
    _write(out / "report.md", _markdown(report))
    echo("[5/5] results (NW-UCLA cross-view, final epoch):")
    echo(_table(report))
    echo(
        f"demo {method}: pretrained linear top-1 {100 * report['pretrained']['top1']:.1f}% vs random init "
        f"{100 * report['random_init']['top1']:.1f}% in {report['seconds']:.0f} s -> {out / 'report.json'}"
    )
    return report


def _write(path: Path, text: str) -> None:
    from skelssl.utils import atomic_write

    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
