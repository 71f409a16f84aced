"""``demo``: the whole pipeline, offline, on the embedded synthetic dataset.

prepare (render + mouth ROI) -> extract (pixels backbone with PCA) -> train MP-LSTM and every
baseline -> evaluate, ending with the comparison table. ``--composite`` instead shows composite
unsupervised pretraining on moving digits. It drives the other stages exactly as their own
commands would, so it doubles as an end-to-end check of the CLI.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from pipeline.logs import get_logger
from stages.common import positive_int

log = get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Size and place of the demo run."""
    parser.add_argument("--work", type=Path, default=Path("demo-work"), help="run folder (default ./demo-work)")
    parser.add_argument("--jobs", type=positive_int, default=2, help="worker processes for prepare (default 2)")
    parser.add_argument("--per-class", type=positive_int, default=40, help="clips per class (10 classes, 3 views)")
    parser.add_argument("--epochs", type=positive_int, default=50, help="training epochs per model")
    parser.add_argument("--quick", action="store_true", help="a tiny run for tests: few clips and epochs")
    parser.add_argument("--composite", action="store_true", help="composite pretraining on moving digits instead (work folder WORK-composite)")
    parser.add_argument("--seeds", type=int, default=3, help="--composite: seeds, each a labelled subset, a pretraining and two classifiers")
    parser.add_argument("--labelled-fraction", type=float, default=0.05, help="--composite: share of the training clips whose labels the classifiers see")


def _stage(name: str) -> tuple[Callable[[list[str]], argparse.Namespace], Callable[[argparse.Namespace], int]]:
    """A stage's own argument parser and run function."""
    import importlib

    module = importlib.import_module(f"stages.{name}")
    parser = argparse.ArgumentParser(prog=f"mpview {name}")
    module.add_arguments(parser)

    def parse(argv: list[str]) -> argparse.Namespace:
        args = parser.parse_args(argv)
        args.quiet, args.verbose = False, False
        return args

    return parse, module.run


def call(name: str, argv: list[str]) -> None:
    """Run one stage as ``mpview <name> <argv>`` would; stop the demo if it fails."""
    parse, run = _stage(name)
    log.info("$ mpview %s %s", name, " ".join(argv))
    status = run(parse(argv))
    if status:
        raise SystemExit(f"demo: `{name}` exited with status {status}")


def run(args: argparse.Namespace) -> int:
    """Prepare, extract, train every model, evaluate and print the comparison."""
    if args.composite:
        return run_composite(args)
    work = str(args.work)
    per_class, epochs = (4, 3) if args.quick else (args.per_class, args.epochs)
    call("prepare", ["--work", work, "--dataset", "synthetic", "--jobs", str(args.jobs), "--option", f"n_per_class={per_class}"])
    call("extract", ["--work", work, "--backbone", "pixels", "--pixel-size", "32", "--pca", "64"])
    common = ["--work", work, "--features", "pixels", "--timesteps", "30", "--units", "64", "--epochs", str(epochs), "--batch-size", "32", "--patience", "15"]
    from pipeline.manifest import Manifest
    from stages.common import manifest_path

    views = Manifest.load(manifest_path(args.work)).perspectives
    for model in (["mplstm"], ["early_fusion"], ["late_fusion", "--combine", "features"], ["mvlstm", "--units", "192", "--mv-output", "tanh"]):
        call("train", common + ["--model", *model])
    for view in views:
        call("train", common + ["--model", "single", "--perspectives", view])
    call("evaluate", ["--work", work])
    log.info("demo finished: reports in %s", args.work / "reports")
    return 0


def run_composite(args: argparse.Namespace) -> int:
    """Moving digits -> 64x64 pixel frames -> composite pretraining on every training clip, then, per seed, the
    classifier fine-tuned from it on a small labelled fraction against the very same network from scratch."""
    from pipeline.report import seed_summary

    work = f"{args.work}-composite"
    clips, epochs, pre_epochs, seeds = (40, 2, 1, [0]) if args.quick else (600, 30, 15, list(range(args.seeds)))
    call("prepare", ["--work", work, "--dataset", "moving-digits", "--jobs", str(args.jobs), "--option", f"n={clips}", "--option", "digits=1",
                     "--fixed-box", "0", "0", "64", "64", "--gray", "--contact-sheet", "6"])
    call("extract", ["--work", work, "--backbone", "pixels", "--pixel-size", "64", "--dtype", "float32"])
    common = ["--work", work, "--features", "pixels", "--model", "single", "--perspectives", "v1", "--timesteps", "10", "--units", "128",
              "--epochs", str(epochs), "--batch-size", "32", "--labelled-fraction", str(args.labelled_fraction)]
    names = []
    for seed in seeds:
        for init in ("composite", "scratch"):
            name = f"single-{init}-v1-pixels" + (f"-seed{seed}" if seed else "")
            extra = ["--future", "10", "--pretrain-epochs", str(pre_epochs)] if init == "composite" else []
            call("train", common + ["--pretrain", init, "--seed", str(seed), "--name", name, *extra])
            names.append(name)
    call("evaluate", ["--work", work, "--models", *names])
    table = seed_summary(Path(work) / "reports", names, group=lambda name: name.split("-")[1])
    print(table)
    log.info("composite demo finished: reconstructions and predictions in %s", Path(work) / "models" / names[0] / "pretrain" / "predictions.png")
    return 0
