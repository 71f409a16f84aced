"""``convert`` on the command line: arguments -> ``ConvertConfig`` -> ``pipeline.verbs.convert``."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.verbs.convert import SOURCES, ConvertConfig, convert
from pipeline.workspace import Workspace
from stages.common import add_work_argument, field_type


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Which model's released checkpoint, and the run it becomes."""
    parser.add_argument(
        "model", choices=SOURCES, help="the model the checkpoint is of: mvm, Kim, Yeo and Ro's memory model"
    )
    parser.add_argument(
        "checkpoint",
        type=Path,
        metavar="CHECKPOINT",
        help="the released checkpoint file (PyTorch; needs the `torch` extra)",
    )
    add_work_argument(parser)
    parser.add_argument("--name", help="run name under WORK/models (default: MODEL-authors)")
    parser.add_argument(
        "--radius",
        type=field_type(ConvertConfig, "radius"),
        default=16.0,
        help="the memories' addressing radius it was trained with (the authors' --radius)",
    )
    parser.add_argument("--perspective", help="the perspective it reads (default: the manifest's only one)")
    parser.add_argument("--force", action="store_true", help="replace a run folder of that name")


def config_from(args: argparse.Namespace) -> ConvertConfig:
    """The command line as the verb's config."""
    return ConvertConfig(
        checkpoint=args.checkpoint,
        model=args.model,
        name=args.name,
        radius=args.radius,
        perspective=args.perspective,
        force=args.force,
    )


def run(args: argparse.Namespace) -> int:
    """Convert the checkpoint and say how to score it."""
    result = convert(Workspace(args.work), config_from(args))
    print(f"{result.tensors} tensors -> {result.run_dir}; score it with `evaluate --models {result.name}`")
    return 0
