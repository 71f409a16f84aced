"""``extract``: ROI clips -> per-frame embeddings in HDF5 or TFRecord shards."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.backbones.registry import BACKBONES
from pipeline.backbones.errors import WeightFileError, WeightsUnavailableError
from pipeline.cluster import backend_for
from pipeline.extract_job import BackboneSpec, ExtractJob, load_backbone
from pipeline.logs import get_logger
from pipeline.manifest import DONE, Manifest, ManifestError
from pipeline.runner import RunError, run_stage
from pipeline.readers import FORMAT_SUFFIX, read_sample, require_format
from pipeline.shards import ShardError
from stages.common import (add_execution_arguments, add_work_argument, finish, guard_outputs, manifest_path, non_negative_int,
                           positive_int, shard_size)

log = get_logger(__name__)
SHARD_SIZE = 64  # samples per shard by default
EXPECTED_ERRORS = (ManifestError, RunError, ShardError, WeightsUnavailableError, WeightFileError, ValueError, FileNotFoundError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Backbone, weights, output format and execution options."""
    add_work_argument(parser)
    model = parser.add_argument_group("backbone")
    model.add_argument("--backbone", choices=BACKBONES, default="resnet50", help="embedding model (default resnet50, VGGFace2)")
    model.add_argument("--weights", default=None, help="'vggface' (released weights: cache, then download), a .h5 PATH, or 'random' (smoke tests only)")
    model.add_argument("--cache-dir", help="where released weights are cached (default ~/.cache/mpview/weights, or $MPVIEW_CACHE/weights)")
    model.add_argument("--batch-size", type=positive_int, default=32, help="frames per forward pass")
    model.add_argument("--pixel-size", type=positive_int, default=32, help="pixels backbone: side of the resized grayscale frame")
    model.add_argument("--pca", type=non_negative_int, default=0, metavar="K", help="pixels backbone: project to K PCA components fitted on the training split")
    output = parser.add_argument_group("output")
    output.add_argument("--format", choices=sorted(FORMAT_SUFFIX), default="hdf5", help="shard format (default hdf5)")
    output.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="stored embedding precision")
    output.add_argument("--name", help="features name, used by `train --features` (default: the backbone name)")
    add_execution_arguments(parser, shard_size=SHARD_SIZE)


def fit_pixel_pca(manifest: Manifest, work: Path, out: Path, size: int, components: int, max_frames: int = 20000) -> Path:
    """Fit the pixel PCA on training-split ROI frames only (reused when already fitted)."""
    from pipeline.backbones.pixels import PixelBackbone

    path = out / "pca.npz"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    frames = []
    for sample in manifest.split("train"):
        record = sample.stages.get("prepare", {})
        if record.get("status") != DONE:
            continue
        arrays = read_sample(work / record["shard"], sample.id, manifest.perspectives).arrays
        frames.extend(arrays.values())
        if sum(len(f) for f in frames) >= max_frames:
            break
    if not frames:
        raise ValueError("no prepared training samples to fit the PCA on")
    stack = np.concatenate(frames)
    stack = stack[rng.permutation(len(stack))[:max_frames]]
    PixelBackbone(size).fit_pca(stack, components).save(path)
    return path


def run(args: argparse.Namespace) -> int:
    """Embed every prepared sample's ROI clips; resumable, sharded, one backbone load per worker."""
    path = manifest_path(args.work)
    require_format(args.format)
    manifest = Manifest.load(path)
    name = args.name or args.backbone
    out = args.work / "features" / name
    made = {"backbone": args.backbone, "weights": args.weights or "vggface", "format": args.format, "dtype": args.dtype,
            "pca": args.pca, "pixel_size": args.pixel_size}  # what the embeddings depend on
    guard_outputs(manifest, path, f"extract:{name}", made, out, args.force, [args.work / "models"])
    settings = {**made, "batch_size": args.batch_size}
    out.mkdir(parents=True, exist_ok=True)
    samples = [s for s in manifest.samples if s.status("prepare") == DONE]
    if not samples:
        raise ValueError(f"{path}: no sample has finished `prepare`")
    pending = sum(1 for s in manifest.samples if s.status("prepare") is None)
    if pending:
        log.warning("%d of %d samples are not prepared yet (prepare was interrupted?): they are left out; re-run "
                    "`prepare` and then `extract` to add them", pending, len(manifest))
    pca = None
    if args.pca:
        if args.backbone != "pixels":
            raise ValueError("--pca applies to the pixels backbone only")
        pca = str(fit_pixel_pca(manifest, args.work, out, args.pixel_size, args.pca).resolve())
    from pipeline.backbones.resolve import RANDOM, VGGFACE

    # workers (Dask ones included) resolve no path of their own: every file they read is named absolutely here
    weights = args.weights if args.weights in (None, VGGFACE, RANDOM) else str(Path(args.weights).resolve())
    cache = str(Path(args.cache_dir).resolve()) if args.cache_dir else None
    spec = BackboneSpec(args.backbone, weights, cache, args.batch_size, args.pixel_size, pca)
    checked = load_backbone(spec)  # refuse missing or mismatched weights before planning anything (cached in-process)
    job = ExtractJob(str(args.work.resolve()), spec, tuple(manifest.perspectives), tuple(manifest.classes), args.dtype,
                     strict=args.strict, weights_label=checked.weights_label)
    with backend_for(args.jobs, args.scheduler, args.dask_local) as backend:
        summary = run_stage(
            manifest, path, f"extract:{name}", samples, out, "emb", job, shard_size=shard_size(args, len(samples), SHARD_SIZE), jobs=args.jobs,
            backend=backend, redo_failed=args.retry_failed, stall_timeout=args.dask_stall_timeout, config={**settings, "backend": backend or "local"}, suffix=FORMAT_SUFFIX[args.format],
        )
    weights = {s.stages.get(f"extract:{name}", {}).get("weights") for s in manifest.samples} - {None}
    if any("random" in str(w) for w in weights):
        log.warning("features %s come from RANDOM weights: smoke test only, not real VGGFace embeddings", name)
    log.info("features written to %s (train with: --features %s)", out, name)
    return finish(summary, args.allow_failures)
