"""The ``skelssl`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skelssl import __version__
from skelssl.errors import ConfigError, SkelsslError

if TYPE_CHECKING:
    from skelssl.evaluation.protocols import LoadedEncoder


def _parse_overrides(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _cmd_prepare(args: argparse.Namespace) -> int:
    from skelssl.data.importers import get_importer_class
    from skelssl.data.prepare import prepare_store, tty_progress

    cls = get_importer_class(args.source)
    importer = cls(args.input, **_parse_overrides(args.options))
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    print(f"prepare {args.source}: {args.input} -> {args.out} ({args.workers} worker{'s' * (args.workers > 1)})")
    summary = prepare_store(
        importer, args.out, workers=args.workers, overwrite=args.overwrite, progress=tty_progress(args.source)
    )
    for rej in summary.rejected[:20]:
        where = f"{rej.path}:{rej.line}" if rej.line is not None else rej.path
        print(f"  rejected {where}: {rej.reason}")
    if len(summary.rejected) > 20:
        print(f"  … {len(summary.rejected) - 20} more in {summary.path / 'rejected.json'}")
    if summary.skipped:
        print(f"  skipped {len(summary.skipped)} sample(s) on purpose (listed in {summary.path / 'rejected.json'})")
    print(
        f"prepared {summary.num_sequences} sequences ({summary.num_frames} frames, {summary.num_classes} classes) "
        f"from {summary.num_tasks} inputs in {summary.seconds:.1f} s -> {summary.path}; "
        f"{len(summary.rejected)} rejected, {len(summary.skipped)} skipped"
    )
    if args.strict and summary.rejected:
        print(f"error: --strict: {len(summary.rejected)} input(s) rejected", file=sys.stderr)
        return 1
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from skelssl.data.store import SkeletonStore

    store = SkeletonStore.open(args.store)
    meta = store.meta
    lengths = store.lengths
    print(f"store      {store.path}")
    print(f"source     {meta['source']}   (format v{meta['version']}, {meta.get('created_by', '?')})")
    print(f"layout     {store.layout.name}: {store.num_joints} joints x {store.channels} coordinates")
    print(f"persons    up to {store.num_persons} per frame")
    print(f"sequences  {len(store)}   frames {int(lengths.sum())}")
    if len(store):
        print(
            f"length     min {lengths.min()}  median {int(np.median(lengths))}  "
            f"mean {lengths.mean():.1f}  max {lengths.max()}"
        )
    counts = np.bincount(store.labels, minlength=store.num_classes)
    print(f"classes    {store.num_classes}")
    for i, name in enumerate(store.class_names):
        print(f"  {i:>4}  {name:<40} {counts[i]:>7}")
    if store.field_names:
        print(f"fields     {', '.join(store.field_names)}")
    if store.splits:
        print("splits")
        for name in store.splits:
            sizes = "  ".join(f"{p} {len(store.split_indices(name, p))}" for p in store.split_parts(name))
            print(f"  {name:<10} {sizes}")
    rejected = meta.get("num_rejected", 0)
    skipped = meta.get("num_skipped", 0)
    print(f"inputs     {meta.get('input', '?')}  (checksum {meta.get('input_checksum', '?')[:16]}…)")
    print(f"rejected   {rejected}   skipped {skipped}   (details in rejected.json)")
    print(
        f"{store.path.name}: {len(store)} sequences, {store.num_classes} classes, "
        f"{len(store.splits)} split(s), layout {store.layout.name}"
    )
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from skelssl.config import load_config
    from skelssl.configs import resolve
    from skelssl.engine.pretrain import PretrainConfig, pretrain

    path = resolve(args.config)
    overrides = list(args.options)
    for flag, key in (("data", "data.store"), ("epochs", "train.epochs"), ("seed", "train.seed")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.checkpoint_every_steps is not None:
        overrides.append(f"train.checkpoint_every_steps={args.checkpoint_every_steps}")
    cfg = load_config(PretrainConfig, path, overrides)
    if not cfg.data.store:
        raise ConfigError(f"{path}: no data.store; pass --data STORE (a directory made by `skelssl prepare`)")
    run = args.out or Path("runs") / f"{cfg.method}-{path.stem}"
    result = pretrain(cfg, run_dir=run, device=args.device, resume=args.resume, max_steps=args.max_steps)
    if not result.finished:
        print(
            f"stopped at step {result.step} (epoch {result.epoch}/{cfg.train.epochs}) after {result.seconds:.0f} s; "
            f"continue with --resume -> {result.run_dir}"
        )
        return 0
    knn = ""
    if result.knn:
        knn = ", " + ", ".join(f"{k} {v:.1%}" for k, v in result.knn.items())
        if result.knn_at_start:
            knn += " (at init " + ", ".join(f"{v:.1%}" for v in result.knn_at_start.values()) + ")"
    print(
        f"pretrained {cfg.method} for {cfg.train.epochs} epochs ({result.step} steps) in {result.seconds:.0f} s: "
        f"final loss {result.last_loss:.4g}{knn} -> {result.run_dir / 'encoder.safetensors'}"
    )
    return 0


#: ``skelssl eval`` protocols: name → (module, function); imported only when chosen.
EVAL_PROTOCOLS: dict[str, tuple[str, str]] = {
    "knn": ("skelssl.evaluation.protocols", "run_knn"),
    "linear": ("skelssl.evaluation.linear", "run_linear"),
    "semi": ("skelssl.evaluation.semi", "run_semi"),
    "finetune": ("skelssl.evaluation.finetune", "run_finetune"),
    "robustness": ("skelssl.evaluation.robustness", "run_robustness"),
    "ensemble": ("skelssl.evaluation.ensemble", "run_ensemble"),
}
#: protocols whose frozen test features are cached, so ``embeddings.png`` costs nothing extra
_FEATURE_PROTOCOLS = ("knn", "linear", "semi")


def _default_split(store: object, card: dict, given: str | None) -> str:
    splits = list(getattr(store, "splits", {}))
    if given is not None:
        if given not in splits:
            known = ", ".join(splits) or "none"
            raise ConfigError(f"the store {getattr(store, 'path', '')} has no split {given!r} (it has: {known})")
        return given
    pre = ((card.get("pretrain") or {}).get("data") or {}).get("split")
    if pre in splits:
        return str(pre)
    if len(splits) == 1:
        return splits[0]
    raise ConfigError(
        f"the store {getattr(store, 'path', '')} has splits {', '.join(splits) or 'none'}; choose one with --split"
    )


def _load_encoder(args: argparse.Namespace, path: str, which: str) -> LoadedEncoder:
    """The encoder an eval / embed command names, or its random-init / raw-input baseline."""
    from skelssl.evaluation.protocols import load_eval_encoder

    return load_eval_encoder(
        path, device=args.device, random_init=args.random_init, raw_input=args.raw_input, seed=args.seed, which=which
    )


def _cmd_eval(args: argparse.Namespace) -> int:
    import importlib

    from skelssl.data.store import SkeletonStore
    from skelssl.evaluation.protocols import EvalContext
    from skelssl.evaluation.report import summary_line, write_run_report

    options = _parse_overrides(args.options)
    which = options.pop("encoder", "encoder")
    embedding = options.pop("embedding", "pca")
    if embedding not in ("pca", "tsne", "none"):
        raise ConfigError(f"embedding={embedding!r}: expected pca, tsne or none")
    if len(args.encoder) > 1 and args.protocol != "ensemble":
        raise ConfigError(f"{args.protocol} takes one --encoder (several only for ensemble)")
    module_name, func_name = EVAL_PROTOCOLS[args.protocol]
    try:
        run = getattr(importlib.import_module(module_name), func_name)
    except (ModuleNotFoundError, AttributeError):
        raise ConfigError(f"the {args.protocol} protocol is not available in this build ({module_name})") from None
    encoders = [_load_encoder(args, path, which) for path in args.encoder]
    store = SkeletonStore.open(args.data)
    split = _default_split(store, encoders[0].card, args.split)
    ctx = EvalContext(
        encoders=encoders,
        store=store,
        split=split,
        train_part=args.train_part,
        test_part=args.test_part,
        device=args.device,
        seed=args.seed,
        epochs=args.epochs,
        out_dir=args.out,
        options=options,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    report = run(ctx)
    features = embedding if args.protocol in _FEATURE_PROTOCOLS else "none"
    path = write_run_report(ctx, report, embedding=features)
    print(summary_line(report, path))
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from skelssl.evaluation.embed import embed, write_embeddings

    options = _parse_overrides(args.options)
    which = options.pop("encoder", "encoder")
    if options:
        raise ConfigError(f"unknown option(s) {', '.join(options)} for embed; known: encoder=NAME")
    encoder = _load_encoder(args, args.encoder, which)
    result = embed(encoder, args.data, split=args.split, part=args.part, device=args.device, batch_size=args.batch_size)
    for line in result.rejected[:10]:
        print(f"  rejected {line}")
    feats, names = write_embeddings(args.out, result, encoder)
    print(
        f"embedded {result.features.shape[0]} sequences into {result.features.shape[1]}-D features "
        f"({encoder.method} {encoder.baseline or 'encoder'}, {result.seconds:.1f} s) "
        f"-> {feats} (+ {names.name})"
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from skelssl.demo import run_demo

    if args.options:
        raise ConfigError(f"demo takes no key=value options, got {' '.join(args.options)}")
    run_demo(
        args.out,
        epochs=args.epochs,
        method=args.method,
        seed=args.seed,
        overwrite=args.overwrite,
        threads=args.threads,
        device=args.device,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from skelssl.data.importers import SOURCES

    parser = argparse.ArgumentParser(
        prog="skelssl", description="Self-supervised learning on skeleton sequences (PSTL, Skeleton2vec, MAMP)."
    )
    parser.add_argument("--version", action="version", version=f"skelssl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="import a raw dataset into a store")
    p.add_argument("source", metavar="SOURCE", choices=SOURCES, help=" | ".join(SOURCES))
    p.add_argument("--input", required=True, type=Path, help="raw dataset folder or file")
    p.add_argument("--out", required=True, type=Path, help="store directory to create")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any input was rejected")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store at --out")
    p.add_argument("options", nargs="*", metavar="key=value", help="importer options (e.g. bodies=denoise)")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("pretrain", help="self-supervised pretraining (PSTL, …) into a run directory")
    p.add_argument("config", metavar="CONFIG", help="a YAML file or a shipped preset such as pstl/nw-ucla")
    p.add_argument("--data", default=None, help="store directory (sets data.store)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/<method>-<preset>)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--epochs", type=int, default=None, help="sets train.epochs (changes the schedule)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this global step (schedule unchanged)")
    p.add_argument("--seed", type=int, default=None, help="sets train.seed")
    p.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    p.add_argument("--checkpoint-every-steps", type=int, default=None, help="sets train.checkpoint_every_steps")
    p.add_argument("options", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=1e-3")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("eval", help="evaluate a pretrained encoder (knn, linear, semi, finetune, …)")
    p.add_argument("protocol", metavar="PROTOCOL", choices=list(EVAL_PROTOCOLS), help=" | ".join(EVAL_PROTOCOLS))
    p.add_argument(
        "--encoder",
        required=True,
        action="append",
        help="a run directory (its encoder.safetensors; encoder=student for another) or an .safetensors file; "
        "repeat for ensemble",
    )
    p.add_argument("--data", required=True, type=Path, help="the evaluation store (may differ: transfer)")
    p.add_argument("--split", default=None, help="split name (default: the pretraining split, or the only one)")
    p.add_argument("--train-part", default="train", help="labelled part (default train)")
    p.add_argument("--test-part", default="test", help="evaluated part (default test)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0, help="seed of heads, subsets and --random-init (default 0)")
    p.add_argument("--random-init", action="store_true", help="the same architecture freshly initialised (baseline)")
    p.add_argument(
        "--raw-input",
        action="store_true",
        help="no network: the encoder's input clips flattened (baseline for linear, knn, semi, ensemble)",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (report.json, report.md, plots)")
    p.add_argument(
        "options",
        nargs="*",
        metavar="key=value",
        help="protocol options, e.g. recipe=mae selection=best fraction=0.01 seeds=1,2,3 ks=1,20 "
        "pool=mean|joint (frozen features: mean over tokens, or per joint) "
        "cache=DIR (feature cache; default OUT/../.feature-cache) embedding=pca|tsne|none",
    )
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("embed", help="features of every sequence of a store or generic .npz")
    p.add_argument("--encoder", required=True, help="a run directory or an .safetensors file")
    p.add_argument("--data", required=True, type=Path, help="a store directory or a generic .npz")
    p.add_argument("--out", required=True, type=Path, help="features .npy (names go to <stem>.names.json)")
    p.add_argument("--split", default=None, help="only this split's --part (default: every sequence)")
    p.add_argument("--part", default=None, help="the part of --split")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per forward pass (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of --random-init (default 0)")
    p.add_argument("--random-init", action="store_true", help="the same architecture freshly initialised")
    p.add_argument("--raw-input", action="store_true", help="no network: the encoder's input clips flattened")
    p.add_argument("options", nargs="*", metavar="key=value", help="encoder=student for another encoder file")
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser("demo", help="the whole pipeline on the bundled NW-UCLA data (CPU, minutes)")
    p.add_argument("--out", type=Path, default=Path("skelssl-demo"), help="output folder (default skelssl-demo)")
    p.add_argument("--method", default="mamp", choices=("pstl", "skeleton2vec", "mamp"), help="default mamp")
    p.add_argument("--epochs", type=int, default=None, help="pretraining epochs (default: the demo's short schedule)")
    p.add_argument("--seed", type=int, default=0, help="pretraining, linear-head and random-init seed (default 0)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace the demo's earlier outputs in --out")
    p.set_defaults(func=_cmd_demo, options=[])

    from skelssl.viz.cli import add_viz_parser

    add_viz_parser(sub)

    p = sub.add_parser("info", help="describe a store")
    p.add_argument("store", type=Path, metavar="STORE")
    p.set_defaults(func=_cmd_info)
    return parser


def _rank_tag() -> str:
    """`` (rank N)`` inside a multi-process (``torchrun``) job, so a failing rank names itself."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        return f" (rank {os.environ.get('RANK', '?')})"
    return ""


def _record_for_torchrun(err: BaseException) -> None:
    """Under ``torchrun``, hand the error to the launcher, whose failure summary then shows it as the root cause."""
    import os

    if not os.environ.get("TORCHELASTIC_ERROR_FILE"):
        return
    try:
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(err)
    except Exception:  # the summary is a convenience; the error itself is printed anyway
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value options may stand anywhere after the command (argparse binds a trailing nargs="*"
    # positional too early when options follow it)
    stray = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "options")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.options = [*args.options, *extra]
    try:
        return int(args.func(args))
    except SkelsslError as err:
        _record_for_torchrun(err)
        print(f"error{_rank_tag()}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as err:  # a write or read the code did not expect to fail: still one line naming the file
        _record_for_torchrun(err)
        if err.filename is None:
            raise
        print(
            f"error{_rank_tag()}: {err.filename}: {err.strerror or err}; check the path, its permissions and the "
            "free disk space",
            file=sys.stderr,
        )
        return 2
    except Exception as err:
        _record_for_torchrun(err)
        raise


if __name__ == "__main__":
    sys.exit(main())
