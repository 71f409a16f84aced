"""``demo``: the whole pipeline, offline, on the embedded synthetic dataset.

prepare (render + mouth ROI) -> extract (pixels backbone with PCA) -> train MP-LSTM and every
baseline -> evaluate, ending with the comparison table. ``--composite`` instead shows composite
unsupervised pretraining on moving digits. It calls the library verbs with the
configs a user's own Python would pass (see the README's Python API).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.execution.logs import configure, get_logger
from pipeline.execution.runner import RunSummary
from pipeline.media.roi import RoiConfig
from pipeline.verbs import (
    EvaluateConfig,
    ExecutionConfig,
    ExtractConfig,
    PrepareConfig,
    TrainConfig,
    evaluate,
    extract,
    prepare,
    train,
)
from pipeline.workspace import Workspace
from stages.common import positive_int

log = get_logger(__name__)
PER_CLASS = 24  # 240 clips (144 train, 48 val, 48 test)
EPOCHS, LR = 15, 5e-3  # the default run: every model trained with a learning rate 5x train's default
FULL_PER_CLASS, FULL_EPOCHS, FULL_LR = 40, 50, 1e-3  # --full: the larger run, at train's default rate
PATIENCE = 15  # train's default 10 stops MV-LSTM at chance at --full's rate (it improves slowly at first)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Size and place of the demo run."""
    parser.add_argument("--work", type=Path, default=Path("demo-work"), help="run folder (default ./demo-work)")
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=2,
        help="worker processes for prepare, and models trained at once (default 2)",
    )
    parser.add_argument(
        "--per-class",
        type=positive_int,
        help=f"clips per class, 10 classes, 3 views (default: {PER_CLASS}; --full {FULL_PER_CLASS})",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        help=f"most training epochs per model (default: {EPOCHS}; --full {FULL_EPOCHS}; early stopping may end sooner)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help=f"the larger run: {FULL_PER_CLASS} clips per class, up to {FULL_EPOCHS} epochs at learning rate {FULL_LR}"
        f" (default {LR})",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny run for tests: few clips and epochs")
    parser.add_argument(
        "--composite",
        action="store_true",
        help="composite pretraining on moving digits instead (work folder WORK-composite)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="--composite: seeds, each a labelled subset, a pretraining and two classifiers",
    )
    parser.add_argument(
        "--labelled-fraction",
        type=float,
        default=0.05,
        help="--composite: share of the training clips whose labels the classifiers see",
    )


def run(args: argparse.Namespace) -> int:
    """Prepare, extract, train every model, evaluate and print the comparison."""
    if args.composite:
        return run_composite(args)
    ws = Workspace(args.work)
    per_class, epochs, lr = demo_size(args)
    check(
        prepare(
            ws,
            PrepareConfig(
                dataset="synthetic", options={"n_per_class": per_class}, execution=ExecutionConfig(jobs=args.jobs)
            ),
        )
    )
    check(extract(ws, ExtractConfig(backbone="pixels", pixel_size=32, pca=64)))
    sizes = {"units": 64, "batch_size": 32}
    runs = [
        ("late_fusion", {"combine": "features"}, None),
        ("mvlstm", {"units": 192, "mv_output": "tanh"}, None),
        ("mplstm", {}, None),
        ("early_fusion", {}, None),
    ]
    runs += [("single", {}, (view,)) for view in ws.load_manifest().perspectives]
    configs = [
        TrainConfig(
            model=model,
            features="pixels",
            perspectives=views,
            epochs=epochs,
            patience=PATIENCE,
            lr=lr,
            options={**sizes, **options},
        )
        for model, options, views in runs
    ]  # the slowest first, so that two workers end together
    train_all(ws, configs, args.jobs)
    result = evaluate(ws, EvaluateConfig())
    print(result.table)
    log.info("demo finished: reports in %s", result.out)
    return 1 if result.unscored else 0


def demo_size(args: argparse.Namespace) -> tuple[int, int, float]:
    """Clips per class, most epochs and learning rate: ``--quick``'s tiny run, else the default's or ``--full``'s,
    ``--per-class`` and ``--epochs`` winning over either."""
    if args.quick:
        return 4, 3, LR
    per_class, epochs, lr = (FULL_PER_CLASS, FULL_EPOCHS, FULL_LR) if args.full else (PER_CLASS, EPOCHS, LR)
    return args.per_class or per_class, args.epochs or epochs, lr


def train_all(ws: Workspace, configs: list[TrainConfig], jobs: int) -> None:
    """Train every config, ``jobs`` at a time in worker processes (each run has its own folder and lock)."""
    if jobs == 1:
        for config in configs:
            train(ws, config)
        return
    from joblib import Parallel, delayed

    level = get_logger().getEffectiveLevel()
    Parallel(n_jobs=min(jobs, len(configs)))(delayed(_train_in_worker)(ws, config, level) for config in configs)


def _train_in_worker(ws: Workspace, config: TrainConfig, level: int) -> None:
    """``train`` in a worker process, logging as the demo's own process does."""
    import logging

    configure(-1 if level > logging.INFO else 1 if level <= logging.DEBUG else 0)
    train(ws, config)


def check(summary: RunSummary) -> None:
    """Stop the demo when samples failed (the synthetic data has no bad clips)."""
    if summary.failed:
        raise SystemExit(f"demo: {summary.failed} sample(s) failed: {summary.describe()}")


def run_composite(args: argparse.Namespace) -> int:
    """Moving digits -> 64x64 pixel frames -> composite pretraining on every training clip, then, per seed, the
    classifier fine-tuned from it on a small labelled fraction against the very same network from scratch."""
    from pipeline.evaluation.report import seed_summary

    ws = Workspace(f"{args.work}-composite")
    clips, epochs, pre_epochs, seeds = (40, 2, 1, [0]) if args.quick else (600, 30, 15, list(range(args.seeds)))
    check(
        prepare(
            ws,
            PrepareConfig(
                dataset="moving-digits",
                options={"n": clips, "digits": 1},
                roi=RoiConfig(roi=None, fixed_box=(0, 0, 64, 64), grayscale=True),
                contact_sheet=6,
                execution=ExecutionConfig(jobs=args.jobs),
            ),
        )
    )
    check(extract(ws, ExtractConfig(backbone="pixels", pixel_size=64, dtype="float32")))
    names = []
    for seed in seeds:
        for init in ("composite", "scratch"):
            name = f"single-{init}-v1-pixels" + (f"-seed{seed}" if seed else "")
            options = {"units": 128, "batch_size": 32, "labelled_fraction": args.labelled_fraction, "pretrain": init}
            if init == "composite":
                options.update(future=10, pretrain_epochs=pre_epochs)
            train(
                ws,
                TrainConfig(
                    model="single",
                    features="pixels",
                    perspectives=("v1",),
                    timesteps=10,
                    epochs=epochs,
                    seed=seed,
                    name=name,
                    options=options,
                ),
            )
            names.append(name)
    result = evaluate(ws, EvaluateConfig(models=tuple(names)))
    print(seed_summary(result.out, names, group=lambda name: name.split("-")[1]))
    log.info(
        "composite demo finished: reconstructions and predictions in %s",
        ws.pretrain(ws.run(names[0])) / "predictions.png",
    )
    return 1 if result.unscored else 0
