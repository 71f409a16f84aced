"""``prepare`` on the command line: arguments -> ``PrepareConfig`` -> ``pipeline.verbs.prepare``."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.media.roi import RoiConfig
from pipeline.recipes import RECIPES
from pipeline.verbs.prepare import SHARD_SIZE, PrepareConfig, parse_option, prepare
from pipeline.workspace import Workspace
from stages.common import (
    add_execution_arguments,
    add_work_argument,
    execution_from,
    field_type,
    finish,
    non_negative_int,
    positive_int,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Dataset, ROI and execution options."""
    add_work_argument(parser)
    data = parser.add_argument_group("dataset")
    data.add_argument("--dataset", choices=sorted(RECIPES), help="layout of the data (required on the first run)")
    data.add_argument(
        "--root", type=Path, help="dataset root; for generated datasets, where to write them (default WORK/data)"
    )
    data.add_argument(
        "--perspectives",
        "--views",
        dest="perspectives",
        help="perspectives to keep, e.g. 1,3,5 (OuluVS2 views, MP-LSTM cameras, light-field hor,ver; default: all)",
    )
    data.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=option_type,
        help="recipe option, e.g. subset=digits or split=28-12-12 (JSON values)",
    )
    roi = parser.add_argument_group("region of interest")
    roi.add_argument(
        "--roi",
        choices=("mouth", "face", "frame"),
        help="mouth (landmarks 48-67), face, or frame: the whole "
        "frame resized, no detection, for clips already cropped (default: what the recipe says, e.g. frame "
        "for OuluVS2's cropped-mouth release, else mouth)",
    )
    roi.add_argument(
        "--size",
        type=positive_int,
        nargs=2,
        metavar=("H", "W"),
        help="crop size (default 96 96 mouth and frame, 112 112 face)",
    )
    roi.add_argument(
        "--resize",
        choices=("pad", "stretch"),
        default="pad",
        help="--roi frame: keep the aspect ratio with black borders, or stretch",
    )
    roi.add_argument(
        "--perspective-size",
        action="append",
        default=[],
        metavar="PERSPECTIVE=HxW",
        type=parse_perspective_size,
        help="a size for one perspective, e.g. v1=29x50 (repeatable; Petridis et al. sized each OuluVS2 view)",
    )
    roi.add_argument("--gray", action="store_true", help="store grayscale crops")
    roi.add_argument(
        "--fixed-box",
        type=non_negative_int,
        nargs=4,
        metavar=("X0", "Y0", "X1", "Y1"),
        help="crop this box, no detection (pre-aligned data; LRW: 59 95 195 231)",
    )
    roi.add_argument("--no-align", action="store_true", help="crop without similarity alignment to the reference face")
    roi.add_argument(
        "--face-policy", choices=("largest", "central"), default="largest", help="which face when several are found"
    )
    roi.add_argument(
        "--detect-every",
        type=field_type(RoiConfig, "detect_every"),
        default=RoiConfig.detect_every,
        help="run the detector at least every N frames; track in between",
    )
    roi.add_argument(
        "--landmark-every",
        type=field_type(RoiConfig, "landmark_every"),
        default=RoiConfig.landmark_every,
        help="fit the 68 landmarks at least every N frames; optical flow in between",
    )
    roi.add_argument(
        "--detect-scale",
        type=field_type(RoiConfig, "detect_scale"),
        default=RoiConfig.detect_scale,
        help="detect on frames resized by this factor",
    )
    roi.add_argument(
        "--smooth",
        type=field_type(RoiConfig, "smooth_window"),
        default=RoiConfig.smooth_window,
        help="landmark smoothing window in frames (0: off)",
    )
    roi.add_argument(
        "--max-missing",
        type=field_type(RoiConfig, "max_missing_fraction"),
        default=RoiConfig.max_missing_fraction,
        help="fail a clip when the face is missing in more than this fraction of frames",
    )
    roi.add_argument("--audio", action="store_true", help="also store 80-bin log-mel audio aligned to the video frames")
    roi.add_argument(
        "--compression",
        choices=PrepareConfig.__dataclass_fields__["compression"].metadata["choices"],
        default=PrepareConfig.compression,
        help=f"ROI shard compression, checksummed either way (default {PrepareConfig.compression}: fastest to read)",
    )
    roi.add_argument(
        "--contact-sheet",
        type=field_type(PrepareConfig, "contact_sheet"),
        default=12,
        metavar="N",
        help="samples shown in the contact-sheet PNG (0: none)",
    )
    add_execution_arguments(parser, shard_size=SHARD_SIZE)


def option_type(text: str) -> tuple[str, object]:
    """An argparse type: ``KEY=VALUE`` with a JSON value, as ``PrepareConfig.options`` holds it."""
    try:
        return parse_option(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_perspective_size(text: str) -> tuple[str, int, int]:
    """``v1=29x50`` -> ("v1", 29, 50): height by width, like ``--size H W``."""
    view, sep, size = text.partition("=")
    height, x, width = size.lower().partition("x")
    if not sep or not view or not x or not height.isdigit() or not width.isdigit() or min(int(height), int(width)) < 1:
        raise argparse.ArgumentTypeError(f"expected VIEW=HxW with positive sizes, e.g. v1=29x50, got {text!r}")
    return view.strip(), int(height), int(width)


def config_from(args: argparse.Namespace) -> PrepareConfig:
    """The command line as the verb's config."""
    return PrepareConfig(
        dataset=args.dataset,
        root=args.root,
        options=dict(args.option),
        perspectives=tuple(p.strip() for p in args.perspectives.split(",")) if args.perspectives else None,
        roi=RoiConfig(
            roi=args.roi,
            size=tuple(args.size) if args.size else None,
            resize=args.resize,
            perspective_sizes=tuple(args.perspective_size),
            grayscale=args.gray,
            fixed_box=tuple(args.fixed_box) if args.fixed_box else None,
            align=not args.no_align,
            face_policy=args.face_policy,
            detect_every=args.detect_every,
            landmark_every=args.landmark_every,
            detect_scale=args.detect_scale,
            smooth_window=args.smooth,
            max_missing_fraction=args.max_missing,
        ),
        audio=args.audio,
        contact_sheet=args.contact_sheet,
        compression=args.compression,
        execution=execution_from(args),
    )


def run(args: argparse.Namespace) -> int:
    """Build or resume the manifest and crop every sample's ROIs; exit status 1 when samples failed."""
    return finish(prepare(Workspace(args.work), config_from(args)), args.allow_failures)
