"""``evaluate`` on the command line: arguments -> ``EvaluateConfig`` -> ``pipeline.verbs.evaluate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.training.feed import MODES
from pipeline.verbs.evaluate import EvaluateConfig, evaluate
from pipeline.workspace import Workspace
from stages.common import add_work_argument, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Which checkpoints, which split, where reports go."""
    add_work_argument(parser)
    parser.add_argument(
        "--models", nargs="*", help="run names or folders under WORK/models (default: every trained run)"
    )
    parser.add_argument("--split", choices=("test", "val", "train"), default="test", help="which split to score")
    parser.add_argument("--out", type=Path, help="report folder (default WORK/reports)")
    parser.add_argument("--top-k", type=positive_int, nargs="+", default=[1, 3, 5], help="top-k accuracies to report")
    parser.add_argument(
        "--tta",
        action="store_true",
        help="pixel models: add the logits of the horizontally flipped clip to the clip's own "
        "(softmax models: their log-probabilities)",
    )
    parser.add_argument(
        "--input",
        choices=MODES,
        default="auto",
        help="read the split into memory, or stream batches from the shards "
        "(auto: memory when it fits in a quarter of RAM)",
    )


def config_from(args: argparse.Namespace) -> EvaluateConfig:
    """The command line as the verb's config."""
    return EvaluateConfig(
        models=tuple(args.models) if args.models else None,
        split=args.split,
        out=args.out,
        top_k=tuple(args.top_k),
        tta=args.tta,
        input=args.input,
    )


def run(args: argparse.Namespace) -> int:
    """Evaluate every requested run and print the comparison; exit status 1 when a run could not be scored."""
    result = evaluate(Workspace(args.work), config_from(args))
    if result.reports:
        print(result.table)
        print(f"reports and plots: {result.out}")
    return 1 if result.unscored else 0
