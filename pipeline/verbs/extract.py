"""``extract``: ROI clips -> per-frame embeddings in HDF5 or TFRecord shards."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, DataError
from pipeline.execution.logs import get_logger
from pipeline.execution.runner import RunSummary
from pipeline.execution.settings import check_options, option, plain
from pipeline.manifest import DONE, Manifest
from pipeline.storage.shards import COMPRESSIONS
from pipeline.verbs.common import ExecutionConfig, guard_outputs
from pipeline.workspace import PREPARE, Workspace, features_stage

log = get_logger(__name__)
SHARD_SIZE = 64  # samples per shard at most, by default
PCA_FRAMES = 20000  # training frames the pixel PCA is fitted on, at most


@dataclass(frozen=True)
class ExtractConfig:
    """Which backbone and weights embed the ROI frames, and how the embeddings are stored."""

    backbone: str = "resnet50"
    weights: str | None = None  # "vggface" (released: cache, then download), a .h5 path, or "random" (smoke tests)
    cache_dir: Path | None = None  # where released weights are cached
    batch_size: int = option(32, "frames per forward pass", least=1)
    pixel_size: int = option(32, "pixels backbone: side of the resized grayscale frame", least=1)
    pca: int = option(0, "pixels backbone: PCA components fitted on the training split (0: none)", least=0)
    format: str = "hdf5"  # hdf5 or tfrecord
    dtype: str = option("float16", "stored embedding precision", choices=("float16", "float32"))
    compression: str | None = option(
        None,
        "HDF5 feature shards: gzip, lzf or none (None: the default, none); TFRecords: none",
        choices=tuple(COMPRESSIONS),
    )
    preprocess: str = option(
        "auto",
        "VGGFace backbones: v1, v2 (keras-vggface), released (MP-LSTM's code), auto: the backbone's",
        choices=("auto", "v1", "v2", "released"),
    )
    name: str | None = None  # features name (default: the backbone's)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)

    def __post_init__(self) -> None:
        """Check every field's type and range."""
        check_options(self)

    @property
    def features(self) -> str:
        """The name ``train`` reads these features by."""
        return self.name or self.backbone


def fit_pixel_pca(manifest: Manifest, ws: Workspace, name: str, size: int, components: int) -> Path:
    """Fit the pixel PCA on training-split ROI frames only (reused when already fitted)."""
    from pipeline.backbones.pixels import PixelBackbone
    from pipeline.storage.readers import read_sample

    path = ws.pca(name)
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    frames = []
    for sample in manifest.split("train"):
        stage = sample.stages.get(PREPARE, {})
        if stage.get("status") != DONE:
            continue
        frames.extend(read_sample(ws.shard(stage), sample.id, manifest.perspectives).arrays.values())
        if sum(len(f) for f in frames) >= PCA_FRAMES:
            break
    if not frames:
        raise DataError("no prepared training samples to fit the PCA on")
    stack = np.concatenate(frames)
    stack = stack[rng.permutation(len(stack))[:PCA_FRAMES]]
    if components > len(stack):
        raise ConfigError(
            f"--pca {components}: the training split has {len(stack)} prepared frames to fit it on; "
            f"use at most {len(stack)} components"
        )
    PixelBackbone(size).fit_pca(stack, components).save(path)
    return path


def extract(ws: Workspace, config: ExtractConfig) -> RunSummary:
    """Embed every prepared sample's ROI clips; resumable, sharded, one backbone load per worker."""
    from pipeline.backbones.registry import preprocessing_for
    from pipeline.backbones.resolve import RANDOM, VGGFACE
    from pipeline.execution.cluster import backend_for
    from pipeline.execution.device import start_tensorflow_quietly
    from pipeline.execution.extract_job import BackboneSpec, ExtractJob, load_backbone
    from pipeline.execution.runner import run_stage
    from pipeline.storage.readers import FORMAT_SUFFIX, compression_for, require_format

    require_format(config.format)
    if config.pca and config.backbone != "pixels":
        raise ConfigError("--pca applies to the pixels backbone only")
    if config.pca < 0 or config.pca > config.pixel_size**2:
        raise ConfigError(
            f"--pca {config.pca}: the pixels backbone has {config.pixel_size**2} values per frame "
            f"(--pixel-size {config.pixel_size}), so at most that many components (and at least 1)"
        )
    compression = compression_for(config.format, config.compression)
    preprocess = preprocessing_for(config.backbone, config.preprocess)
    with ws.lock("extract"):
        manifest = ws.load_manifest()
        name, run = config.features, config.execution
        stage, out = features_stage(name), ws.features(name)
        made = {
            "backbone": config.backbone,
            "weights": config.weights or VGGFACE,
            "format": config.format,
            "dtype": config.dtype,
            "pca": config.pca,
            "pixel_size": config.pixel_size,
            "compression": compression,
            "preprocess": preprocess,
        }  # what the embeddings depend on
        guard_outputs(
            manifest,
            ws.manifest_path,
            stage,
            made,
            out,
            run.force,
            [ws.models],
            "keep them and extract beside them with --name",
        )
        samples = [s for s in manifest.samples if s.status(PREPARE) == DONE]
        if not samples:
            raise DataError(f"{ws.manifest_path}: no sample has finished `prepare`")
        pending = sum(1 for s in manifest.samples if s.status(PREPARE) is None)
        if pending:
            log.warning(
                "%d of %d samples are not prepared yet (prepare was interrupted?): they are left out; re-run "
                "`prepare` and then `extract` to add them",
                pending,
                len(manifest),
            )
        pca = str(fit_pixel_pca(manifest, ws, name, config.pixel_size, config.pca).resolve()) if config.pca else None
        out.mkdir(parents=True, exist_ok=True)  # only now: a refused PCA leaves no empty features folder behind
        # workers (Dask ones included) resolve no path of their own: every file they read is named absolutely here
        weights = config.weights if config.weights in (None, VGGFACE, RANDOM) else str(Path(config.weights).resolve())
        cache = str(Path(config.cache_dir).resolve()) if config.cache_dir else None
        spec = BackboneSpec(
            config.backbone, weights, cache, config.batch_size, config.pixel_size, pca, config.preprocess
        )
        start_tensorflow_quietly()
        checked = load_backbone(
            spec
        )  # refuse missing or mismatched weights before planning anything (cached in-process)
        job = ExtractJob(
            str(ws.root.resolve()),
            spec,
            tuple(manifest.perspectives),
            tuple(manifest.classes),
            config.dtype,
            strict=run.strict,
            weights_label=checked.weights_label,
            compression=compression,
        )
        with backend_for(run.jobs, run.scheduler, run.dask_local) as backend:
            settings = {**made, "batch_size": config.batch_size, "backend": backend or "local", "asked": plain(config)}
            summary = run_stage(
                manifest,
                ws.manifest_path,
                stage,
                samples,
                out,
                "emb",
                job,
                shard_size=run.shard_size_for(len(samples), SHARD_SIZE),
                jobs=run.jobs,
                backend=backend,
                redo_failed=run.retry_failed,
                stall_timeout=run.dask_stall_timeout,
                config=settings,
                suffix=FORMAT_SUFFIX[config.format],
            )
    labels = {s.stages.get(stage, {}).get("weights") for s in manifest.samples} - {None}
    if any("random" in str(w) for w in labels):
        log.warning("features %s come from RANDOM weights: smoke test only, not real VGGFace embeddings", name)
    log.info("features written to %s (train with: --features %s)", out, name)
    return summary
