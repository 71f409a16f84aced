"""``prepare``: dataset -> manifest with splits -> per-perspective ROI clips in HDF5 shards."""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path
from typing import Any

from pipeline.cluster import backend_for
from pipeline.logs import get_logger
from pipeline.manifest import Manifest, ManifestError
from pipeline.prepare_job import PrepareJob
from pipeline.recipes import RECIPES
from pipeline.recipes.common import RecipeError
from pipeline.roi import RoiConfig
from pipeline.runner import RunError, run_stage
from pipeline.settings import SettingsChanged
from pipeline.roi_preview import write_roi_contact_sheet
from stages.common import (add_execution_arguments, add_work_argument, finish, guard_outputs, manifest_path, non_negative_int,
                           positive_int, shard_size)

log = get_logger(__name__)
SHARD_SIZE = 32  # samples per shard by default
EXPECTED_ERRORS = (ManifestError, RecipeError, RunError, ValueError, FileNotFoundError)
GENERATED = ("synthetic", "moving-digits")  # recipes that write their own data under --root
VIEW_OPTIONS = ("views", "cameras", "sequences")  # what --views means, by the recipe's parameter name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Dataset, ROI and execution options."""
    add_work_argument(parser)
    data = parser.add_argument_group("dataset")
    data.add_argument("--dataset", choices=sorted(RECIPES), help="layout of the data (required on the first run)")
    data.add_argument("--root", type=Path, help="dataset root; for generated datasets, where to write them (default WORK/data)")
    data.add_argument("--views", help="perspectives to keep, e.g. 1,3,5 (OuluVS2 views, MP-LSTM cameras, hor,ver)")
    data.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="recipe option, e.g. subset=digits or split=28-12-12 (JSON values)")
    roi = parser.add_argument_group("region of interest")
    roi.add_argument("--roi", choices=("mouth", "face", "frame"), help="mouth (landmarks 48-67), face, or frame: the whole "
                     "frame resized, no detection, for clips already cropped (default: what the recipe says, e.g. frame "
                     "for OuluVS2's cropped-mouth release, else mouth)")
    roi.add_argument("--size", type=positive_int, nargs=2, metavar=("H", "W"), help="crop size (default 96 96 mouth and frame, 112 112 face)")
    roi.add_argument("--resize", choices=("pad", "stretch"), default="pad", help="--roi frame: keep the aspect ratio with black borders, or stretch")
    roi.add_argument("--perspective-size", action="append", default=[], metavar="VIEW=HxW", type=parse_perspective_size,
                     help="a size for one perspective, e.g. v1=29x50 (repeatable; Petridis et al. sized each OuluVS2 view)")
    roi.add_argument("--gray", action="store_true", help="store grayscale crops")
    roi.add_argument("--fixed-box", type=non_negative_int, nargs=4, metavar=("X0", "Y0", "X1", "Y1"), help="crop this box, no detection (pre-aligned data; LRW: 59 95 195 231)")
    roi.add_argument("--no-align", action="store_true", help="crop without similarity alignment to the reference face")
    roi.add_argument("--face-policy", choices=("largest", "central"), default="largest", help="which face when several are found")
    roi.add_argument("--detect-every", type=positive_int, default=RoiConfig.detect_every, help="run the detector at least every N frames; track in between")
    roi.add_argument("--landmark-every", type=positive_int, default=RoiConfig.landmark_every, help="fit the 68 landmarks at least every N frames; optical flow in between")
    roi.add_argument("--detect-scale", type=float, default=RoiConfig.detect_scale, help="detect on frames resized by this factor")
    roi.add_argument("--smooth", type=non_negative_int, default=RoiConfig.smooth_window, help="landmark smoothing window in frames (0: off)")
    roi.add_argument("--max-missing", type=float, default=RoiConfig.max_missing_fraction, help="fail a clip when the face is missing in more than this fraction of frames")
    roi.add_argument("--audio", action="store_true", help="also store 80-bin log-mel audio aligned to the video frames")
    roi.add_argument("--contact-sheet", type=non_negative_int, default=12, metavar="N", help="samples shown in the contact-sheet PNG (0: none)")
    add_execution_arguments(parser, shard_size=SHARD_SIZE)


def parse_perspective_size(text: str) -> tuple[str, int, int]:
    """``v1=29x50`` -> ("v1", 29, 50): height by width, like ``--size H W``."""
    view, sep, size = text.partition("=")
    height, x, width = size.lower().partition("x")
    if not sep or not view or not x or not height.isdigit() or not width.isdigit() or min(int(height), int(width)) < 1:
        raise argparse.ArgumentTypeError(f"expected VIEW=HxW with positive sizes, e.g. v1=29x50, got {text!r}")
    return view.strip(), int(height), int(width)


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` with a JSON value (``views=[1,3]``, ``border=1``); plain text when not JSON."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--option expects KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def build_manifest(args: argparse.Namespace) -> Manifest:
    """Run the dataset recipe with the command line's options."""
    recipe = RECIPES[args.dataset]
    params = inspect.signature(recipe).parameters
    options = dict(parse_option(o) for o in args.option)
    if args.views:
        key = next((k for k in VIEW_OPTIONS if k in params), None)
        if key is None:
            raise ValueError(f"--views does not apply to --dataset {args.dataset}")
        options[key] = [int(v) if v.strip().isdigit() else v.strip() for v in args.views.split(",")]
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(f"--dataset {args.dataset} has no option(s) {unknown}; it takes {[p for p in params][1:]}")
    root = args.root or (args.work / "data" if args.dataset in GENERATED else None)
    if root is None:
        raise ValueError(f"--dataset {args.dataset} needs --root (the dataset folder)")
    if "jobs" in params and "jobs" not in options:
        options["jobs"] = args.jobs
    return recipe(root, **options)


def check_same_dataset(args: argparse.Namespace, manifest: Manifest) -> None:
    """On a resumed run, refuse a --root, --option or --views other than those the manifest was built with."""
    asked = {"option": sorted(args.option), "views": args.views}
    recorded = manifest.info.get("recipe_options", {})
    changed = [f"--{key} {recorded[key]!r} -> {asked[key]!r}" for key in asked  # given again, and not as before
               if asked[key] and key in recorded and asked[key] != recorded[key]]
    if args.root and Path(args.root).resolve() != Path(manifest.root).resolve():
        changed.insert(0, f"--root {manifest.root} -> {args.root}")
    if changed:
        raise SettingsChanged(f"{manifest_path(args.work)} was built from other dataset options ({'; '.join(changed)}); "
                              "the manifest fixes them: use another --work for another dataset selection")


def roi_config(args: argparse.Namespace, manifest: Manifest) -> RoiConfig:
    """The ROI settings; a dataset's own ROI mode (OuluVS2's cropped release) or fixed box (LRW) applies unless given."""
    roi = args.roi or manifest.info.get("roi", "mouth")
    if not args.roi and "roi" in manifest.info:
        log.info("--roi %s, as the %s recipe chose for this data (%s)", roi, manifest.dataset, manifest.info.get("roi_reason", ""))
    fixed = args.fixed_box or (manifest.info.get("fixed_box") if roi != "frame" else None)
    unknown = sorted({view for view, _, _ in args.perspective_size} - set(manifest.perspectives))
    if unknown:
        raise ValueError(f"--perspective-size names {unknown}, not perspectives of this manifest ({manifest.perspectives})")
    return RoiConfig(
        roi=roi, size=tuple(args.size) if args.size else None, resize=args.resize, perspective_sizes=tuple(args.perspective_size),
        grayscale=args.gray, align=not args.no_align, fixed_box=tuple(fixed) if fixed else None, face_policy=args.face_policy, detect_every=args.detect_every, landmark_every=args.landmark_every,
        detect_scale=args.detect_scale, smooth_window=args.smooth, max_missing_fraction=args.max_missing,
    )


def run(args: argparse.Namespace) -> int:
    """Build or resume the manifest, crop every sample's ROIs, write shards and a contact sheet."""
    path = manifest_path(args.work)
    if path.exists():
        manifest = Manifest.load(path)
        recipe = manifest.info.get("recipe", manifest.dataset)
        if args.dataset and args.dataset != recipe:
            raise ValueError(f"{path} was prepared with --dataset {recipe}, not {args.dataset}; use another --work folder")
        check_same_dataset(args, manifest)
        log.info("resuming with %s (%d samples)", path, len(manifest))
    else:
        if not args.dataset:
            raise ValueError(f"no manifest in {args.work}: pass --dataset (and --root) for the first run")
        manifest = build_manifest(args)
        manifest.info["recipe"] = args.dataset
        manifest.info["recipe_options"] = {"option": sorted(args.option), "views": args.views}
        args.work.mkdir(parents=True, exist_ok=True)
        manifest.save(path)
        log.info("wrote %s: %d samples, perspectives %s, %d problem(s)", path, len(manifest), manifest.perspectives, len(manifest.problems))
    config = roi_config(args, manifest)
    guard_outputs(manifest, path, "prepare", {"roi": config.to_dict(), "audio": args.audio}, args.work / "roi", args.force,
                  [args.work / "features", args.work / "models"])
    job = PrepareJob(manifest.root, tuple(manifest.perspectives), config, audio=args.audio, strict=args.strict)
    size = shard_size(args, len(manifest), SHARD_SIZE)
    settings = {"roi": config.to_dict(), "audio": args.audio, "shard_size": size, "jobs": args.jobs}
    with backend_for(args.jobs, args.scheduler, args.dask_local) as backend:
        summary = run_stage(
            manifest, path, "prepare", list(manifest.samples), args.work / "roi", "roi", job, shard_size=size,
            jobs=args.jobs, backend=backend, redo_failed=args.retry_failed, stall_timeout=args.dask_stall_timeout, config={**settings, "backend": backend or "local"},
        )
    if args.contact_sheet:
        sheet = write_roi_contact_sheet(args.work / "roi" / "contact_sheet.png", manifest, args.work, args.contact_sheet)
        if sheet:
            log.info("contact sheet: %s", sheet)
    if summary.reasons.get("no-face") and config.roi != "frame":
        log.warning("%d clip(s) failed for want of a face; clips already cropped to the mouth or face need --roi frame",
                    summary.reasons["no-face"])
    return finish(summary, args.allow_failures)

