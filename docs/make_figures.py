"""Write the README's pictures into ``docs/img/`` from the real NW-UCLA data (``../shared/data/nw-ucla``).

    python docs/make_figures.py [--data ../shared/data/nw-ucla] [--name a11_s01_e00_v01] [--seed 0]
                                [--run RUN] [--features features.npy]

The chosen sequence is imported with skelssl's own NW-UCLA importer into a temporary store, then drawn with
``skelssl.viz``: the sequence as a strip of frames, and the masks of PSTL (CSM, MATM), Skeleton2vec (the
motion-aware tube mask, at the NW-UCLA preset's ``mask_ratio`` 0.8) and MAMP on the methods' own clip views.
With ``--run`` (a ``skelssl pretrain`` run directory) the training curves are drawn too, and with
``--features`` (from ``skelssl embed``) the embeddings.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from skelssl.data.importers import get_importer_class
from skelssl.data.prepare import prepare_store
from skelssl.data.store import SkeletonStore
from skelssl.viz import draw_sequence, from_store, plot_curves, plot_mask_figures

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "nw-ucla")
    parser.add_argument("--name", default="a11_s01_e00_v01", help="the sequence drawn (default: a throw, view 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--run", type=Path, default=None, help="a pretraining run: draws curves.png")
    parser.add_argument("--features", type=Path, default=None, help="features.npy from skelssl embed")
    args = parser.parse_args()

    source = args.data / "all_sqe" / f"{args.name}.json"
    if not source.is_file():
        raise SystemExit(f"{source}: not found; pass --data (the NW-UCLA folder) and --name")
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="skelssl-figures-") as tmp:
        raw = Path(tmp) / "all_sqe"
        raw.mkdir()
        shutil.copy(source, raw / source.name)
        store = SkeletonStore.open(prepare_store(get_importer_class("nw-ucla")(raw), Path(tmp) / "store").path)
        item = store[0]
        title = f"{item.name} ({store.class_names[int(item.label)]}): 8 of {len(item.keypoints)} frames"
        pic = draw_sequence(from_store(item.keypoints), store.layout, args.out / "sequence.png", frames=8, title=title)
        written.append(pic.path)
        options = {"skeleton2vec-tube": {"mask_ratio": 0.8}}  # as the skeleton2vec/nw-ucla preset
        pictures = plot_mask_figures(store, 0, args.out, seed=args.seed, options=options)
        written += [p.path for p in pictures.values()]
        store.close()
    if args.run is not None:
        written.append(plot_curves(args.run, args.out / "curves.png").path)
    if args.features is not None:
        from skelssl.viz.cli import run_viz

        run_viz(argparse.Namespace(viz_command="embeddings", features=args.features, out=args.out / "embeddings.png",
                                   method="pca", seed=0))  # fmt: skip
        written.append(args.out / "embeddings.png")
    for path in written:
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}  {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
