"""``prepare``: dataset -> manifest with splits -> per-perspective ROI clips in HDF5 shards."""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.execution.logs import get_logger
from pipeline.execution.runner import RunSummary
from pipeline.execution.settings import SettingsChanged, check_options, option, plain
from pipeline.manifest import Manifest
from pipeline.media.roi import DEFAULT_SIZE, RoiConfig
from pipeline.storage.shards import COMPRESSIONS, DEFAULT_COMPRESSION
from pipeline.verbs.common import ExecutionConfig, guard_outputs
from pipeline.workspace import PREPARE, Workspace

log = get_logger(__name__)
SHARD_SIZE = 32  # samples per shard at most, by default
GENERATED = ("synthetic", "moving-digits")  # recipes that write their own data (under WORK/data unless a root is given)


@dataclass(frozen=True)
class PrepareConfig:
    """Which dataset, which perspectives, and how each clip's region of interest is cropped.

    ``roi.roi`` (the ROI mode) and ``roi.fixed_box`` left at ``None`` take what the dataset's recipe chose (OuluVS2's
    cropped release: the whole frame; LRW: its fixed box), else mouth and no box.
    """

    dataset: str | None = None  # recipe name; required on the first run
    root: Path | None = None  # dataset root; generated datasets: where to write them (default WORK/data)
    perspectives: tuple[str, ...] | None = None  # perspectives to keep, e.g. ("1", "3", "5") (default: all)
    options: Mapping[str, Any] = field(default_factory=dict)  # the recipe's own options, e.g. {"subset": "digits"}
    roi: RoiConfig = field(default_factory=lambda: RoiConfig(roi=None))  # roi=None: the recipe's ROI mode and box
    audio: bool = False  # also store 80-bin log-mel audio aligned to the frames
    contact_sheet: int = option(12, "samples in the contact-sheet PNG (0: none)", least=0)
    compression: str = option(
        DEFAULT_COMPRESSION, "ROI shard compression, checksummed either way", choices=tuple(COMPRESSIONS)
    )
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)

    def __post_init__(self) -> None:
        """Check every field's type and range, the perspectives and the recipe options (a mapping by name)."""
        check_options(self)
        if isinstance(self.perspectives, str) or not (
            self.perspectives is None or all(isinstance(p, (str, int)) for p in self.perspectives)
        ):
            raise ConfigError(f"perspectives must be a tuple of names, e.g. ('1', '3'), got {self.perspectives!r}")
        if self.perspectives is not None:
            object.__setattr__(self, "perspectives", tuple(str(p).strip() for p in self.perspectives))
        if not isinstance(self.options, Mapping) or not all(isinstance(k, str) for k in self.options):
            raise ConfigError(f"options must be a mapping of recipe option names to values, got {self.options!r}")
        object.__setattr__(self, "options", dict(self.options))
        if not isinstance(self.roi, RoiConfig):
            raise ConfigError(f"roi must be a RoiConfig, e.g. RoiConfig(roi='mouth'), got {self.roi!r}")


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` with a JSON value (``perspectives=[1,3]``, ``border=1``); plain text when not JSON."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--option expects KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def build_manifest(ws: Workspace, config: PrepareConfig) -> Manifest:
    """Run the dataset recipe with the config's options."""
    from pipeline.recipes import RECIPES

    if config.dataset not in RECIPES:
        raise ConfigError(f"unknown dataset {config.dataset!r}; choose from {sorted(RECIPES)}")
    recipe = RECIPES[config.dataset]
    params = inspect.signature(recipe).parameters
    options = dict(config.options)
    if config.perspectives:
        options["perspectives"] = [int(v) if v.isdigit() else v for v in config.perspectives]
    unknown = sorted(set(options) - set(params))
    if unknown == ["perspectives"] and config.perspectives:
        raise ConfigError(f"--perspectives does not apply to --dataset {config.dataset}")
    if unknown:
        raise ConfigError(f"--dataset {config.dataset} has no option(s) {unknown}; it takes {[p for p in params][1:]}")
    root = config.root or (ws.data if config.dataset in GENERATED else None)
    if root is None:
        raise ConfigError(f"--dataset {config.dataset} needs --root (the dataset folder)")
    if "jobs" in params and "jobs" not in options:
        options["jobs"] = config.execution.jobs
    return recipe(root, **options)


def recipe_options(config: PrepareConfig) -> dict[str, Any]:
    """The dataset selection as the manifest records it (``KEY=VALUE`` options and ``views``, the perspectives)."""
    options = sorted(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in config.options.items())
    return {"option": options, "views": ",".join(config.perspectives) if config.perspectives else None}


def check_same_dataset(ws: Workspace, config: PrepareConfig, manifest: Manifest) -> None:
    """On a resumed run, refuse a root, options or views other than those the manifest was built with."""
    asked = recipe_options(config)
    recorded = manifest.info.get("recipe_options", {})
    changed = [
        f"--{key} {recorded[key]!r} -> {asked[key]!r}"
        for key in asked  # given again, and not as before
        if asked[key] and key in recorded and asked[key] != recorded[key]
    ]
    if config.root and Path(config.root).resolve() != Path(manifest.root).resolve():
        changed.insert(0, f"--root {manifest.root} -> {config.root}")
    if changed:
        raise SettingsChanged(
            f"{ws.manifest_path} was built from other dataset options ({'; '.join(changed)}); "
            "the manifest fixes them: use another --work for another dataset selection"
        )


def roi_config(config: PrepareConfig, manifest: Manifest) -> RoiConfig:
    """The ROI settings.

    A dataset's own ROI mode (OuluVS2's cropped release) or fixed box (LRW) applies unless given.
    """
    asked = config.roi
    roi = asked.roi or manifest.info.get("roi", "mouth")
    if not asked.roi and "roi" in manifest.info:
        log.info(
            "--roi %s, as the %s recipe chose for this data (%s)",
            roi,
            manifest.dataset,
            manifest.info.get("roi_reason", ""),
        )
    fixed = asked.fixed_box or (manifest.info.get("fixed_box") if roi != "frame" else None)
    unknown = sorted({view for view, _, _ in asked.perspective_sizes} - set(manifest.perspectives))
    if unknown:
        raise ConfigError(
            f"--perspective-size names {unknown}, not perspectives of this manifest ({manifest.perspectives})"
        )
    size = asked.size
    if fixed and not asked.fixed_box and size == DEFAULT_SIZE.get(asked.roi):
        size = None  # the recipe's box and no size asked: the box's own
    return dataclasses.replace(asked, roi=roi, fixed_box=tuple(fixed) if fixed else None, size=size)


def open_manifest(ws: Workspace, config: PrepareConfig) -> Manifest:
    """The manifest on disk (checked against the config), or a new one built by the dataset's recipe."""
    path = ws.manifest_path
    if path.exists():
        manifest = Manifest.load(path)
        recipe = manifest.info.get("recipe", manifest.dataset)
        if config.dataset and config.dataset != recipe:
            raise SettingsChanged(
                f"{path} was prepared with --dataset {recipe}, not {config.dataset}; use another --work folder"
            )
        check_same_dataset(ws, config, manifest)
        log.info("resuming with %s (%d samples)", path, len(manifest))
        return manifest
    if not config.dataset:
        raise ConfigError(f"no manifest in {ws.root}: pass --dataset (and --root) for the first run")
    manifest = build_manifest(ws, config)
    manifest.info["recipe"] = config.dataset
    manifest.info["recipe_options"] = recipe_options(config)
    manifest.save(path)
    log.info(
        "wrote %s: %d samples, perspectives %s, %d problem(s)",
        path,
        len(manifest),
        manifest.perspectives,
        len(manifest.problems),
    )
    return manifest


def prepare(ws: Workspace, config: PrepareConfig) -> RunSummary:
    """Build or resume the manifest, crop every sample's ROIs into shards, draw a contact sheet; resumable."""
    from pipeline.execution.cluster import backend_for
    from pipeline.execution.prepare_job import PrepareJob, decode_ahead_for
    from pipeline.execution.runner import run_stage
    from pipeline.execution.worklock import work_lock
    from pipeline.media.roi_preview import write_roi_contact_sheet
    from pipeline.storage.readers import compression_for

    ws.create()
    with work_lock(ws.root, PREPARE):  # the manifest may not exist yet: this run makes it
        manifest = open_manifest(ws, config)
        roi = roi_config(config, manifest)
        run = config.execution
        made = {"roi": roi.to_dict(), "audio": config.audio, "compression": compression_for("hdf5", config.compression)}
        guard_outputs(manifest, ws.manifest_path, PREPARE, made, ws.roi, run.force, [ws.features_root, ws.models])
        # decoding ahead on a second thread pays only while a core is idle: not when local workers fill them
        job = PrepareJob(
            manifest.root,
            tuple(manifest.perspectives),
            roi,
            audio=config.audio,
            strict=run.strict,
            decode_ahead=decode_ahead_for(run.dask_local or run.jobs),
            compression=config.compression,
        )
        size = run.shard_size_for(len(manifest), SHARD_SIZE)
        with backend_for(run.jobs, run.scheduler, run.dask_local) as backend:
            settings = {
                **made,
                "shard_size": size,
                "jobs": run.jobs,
                "backend": backend or "local",
                "asked": plain(config),
            }
            summary = run_stage(
                manifest,
                ws.manifest_path,
                PREPARE,
                list(manifest.samples),
                ws.roi,
                "roi",
                job,
                shard_size=size,
                jobs=run.jobs,
                backend=backend,
                redo_failed=run.retry_failed,
                stall_timeout=run.dask_stall_timeout,
                config=settings,
            )
        if config.contact_sheet:
            sheet = write_roi_contact_sheet(ws.contact_sheet, manifest, ws.root, config.contact_sheet)
            if sheet:
                log.info("contact sheet: %s", sheet)
    if summary.reasons.get("no-face") and roi.roi != "frame":
        log.warning(
            "%d clip(s) failed for want of a face; clips already cropped to the mouth or face need --roi frame",
            summary.reasons["no-face"],
        )
    return summary
