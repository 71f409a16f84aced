"""``convert``: a released checkpoint of another framework -> a run folder under WORK/models that ``evaluate`` scores.

One source so far: ``mvm``, the PyTorch checkpoint Kim, Yeo and Ro released for their multi-head visual-audio memory
model (88.5% on LRW), loaded tensor by tensor into our ``mvm`` model built as the authors' ``train.py`` builds it.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from pipeline.errors import ConfigError, DataError
from pipeline.execution.logs import get_logger
from pipeline.execution.settings import check_options, option, plain
from pipeline.manifest import Manifest
from pipeline.storage.atomic import file_sha256
from pipeline.workspace import PREPARE, TRAIN_BEST, Workspace

log = get_logger(__name__)
SOURCES = ("mvm",)
LRW_BOX = 136  # the authors' mouth box, px, in the 256 px LRW frame
LRW_FRAMES = 29
AUTHORS_LR = 1e-3  # their AdamW's, recorded for a fine-tune; conversion trains nothing


@dataclass(frozen=True)
class ConvertConfig:
    """Which released checkpoint, of which model, into which run folder."""

    checkpoint: Path
    model: str = option("mvm", "the model the checkpoint is of", choices=SOURCES)
    name: str | None = None  # run name (default: <model>-authors)
    radius: float = option(16.0, "the memories' addressing radius the checkpoint was trained with", above=0.0)
    perspective: str | None = None  # the manifest's perspective to score (default: its only one)
    force: bool = False  # replace a run folder of that name

    def __post_init__(self) -> None:
        """Check every field's type and range, and that the checkpoint is given as a path."""
        check_options(self)
        if not isinstance(self.checkpoint, (str, Path)) or not str(self.checkpoint):
            raise ConfigError(f"checkpoint must be a file path, got {self.checkpoint!r}")
        object.__setattr__(self, "checkpoint", Path(self.checkpoint))

    @property
    def run_name(self) -> str:
        """The run folder's name."""
        return self.name or f"{self.model}-authors"


@dataclass(frozen=True)
class ConvertResult:
    """Where the converted run is, and how many tensors it took from the checkpoint."""

    name: str
    run_dir: Path
    tensors: int


def convert(ws: Workspace, config: ConvertConfig) -> ConvertResult:
    """Load the checkpoint into our model and write the run folder ``evaluate`` scores (refused on any mismatch)."""
    from pipeline.execution.worklock import work_lock

    manifest = ws.load_manifest()
    perspective = pick_perspective(manifest, config.perspective)
    side, channels, frames = prepared_frames(manifest, ws, perspective)
    check_frames(side, channels, perspective)
    out = ws.run(config.run_name)
    if out.exists() and any(out.iterdir()) and not config.force:
        raise ConfigError(f"{out} already holds a run: pass --force to replace it, or another --name")
    from pipeline.models.mvm import convert as mapping

    tensors = mapping.read_checkpoint(config.checkpoint)
    with _naming(config.checkpoint):
        arch = mapping.architecture(mapping.shapes_of(tensors))
    if arch.classes != len(manifest.classes):
        raise ConfigError(
            f"{config.checkpoint}: its classifier has {arch.classes} classes, the manifest in {ws.root} has "
            f"{len(manifest.classes)}: prepare every LRW word (no --words or --max-words)"
        )
    if mapping.reorder_head(tensors, list(manifest.classes)):
        log.info("the classifier's rows are put in the manifest's class order (the authors' is the names sorted)")
    spec = converted_spec(config, list(manifest.classes), perspective, arch, frames, file_sha256(config.checkpoint))

    from pipeline.execution.device import start_tensorflow_quietly

    start_tensorflow_quietly()
    from pipeline.training.checkpoints import save_atomically

    built = networks(spec)
    with _naming(config.checkpoint):
        count = mapping.load_into(built.train, tensors)
    if config.force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    with work_lock(out, f"convert {spec.name}", "convert into another run with --name"):
        save_atomically(built.train.save, out / TRAIN_BEST, built.train)
        save_atomically(built.infer.save, ws.checkpoint(out), built.infer)
        spec.save(out)
    log.info(
        "%s: %d tensors of %s -> %s (score it with `evaluate --models %s`)",
        spec.name,
        count,
        config.checkpoint,
        ws.checkpoint(out),
        spec.name,
    )
    return ConvertResult(spec.name, out, count)


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """A mapping refusal as ``PATH: reason``."""
    try:
        yield
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def pick_perspective(manifest: Manifest, wanted: str | None) -> str:
    """The one perspective the converted model reads: the one asked for, or the manifest's only one."""
    if wanted is not None:
        if wanted not in manifest.perspectives:
            raise ConfigError(f"unknown perspective {wanted!r}; the manifest has {manifest.perspectives}")
        return wanted
    if len(manifest.perspectives) != 1:
        raise ConfigError(f"the manifest has perspectives {manifest.perspectives}: pick one with --perspective")
    return manifest.perspectives[0]


def prepared_frames(manifest: Manifest, ws: Workspace, perspective: str) -> tuple[int, int, int]:
    """(side, channels, frames per clip) of the ROI clips ``prepare`` stored, from the first usable sample."""
    from pipeline.training.sequences import frame_shapes, index_split
    from pipeline.verbs.train import clip_length

    for split in ("test", "val", "train"):
        index = index_split(manifest, PREPARE, split, [perspective], ws.root)
        if len(index):
            (shape,), _ = frame_shapes(index, flatten=False, audio=False)
            height, width = shape[:2]
            channels = shape[2] if len(shape) == 3 else 1
            return min(height, width), channels, clip_length(manifest, [perspective]) or LRW_FRAMES
    raise DataError(f"{ws.root}: `prepare` stored no ROI clips to score: run it (LRW: --dataset lrw --gray)")


def check_frames(side: int, channels: int, perspective: str) -> None:
    """The authors' model reads gray frames of the 136 px LRW box (stored with its 5 px shift margin, 146 px)."""
    from pipeline.training.augment import MAX_SHIFT

    problems = []
    if channels != 1:
        problems.append(f"{channels} channels, where it reads gray frames (prepare with --gray)")
    if side - 2 * MAX_SHIFT != LRW_BOX:
        problems.append(
            f"{side} px frames, where it reads LRW's {LRW_BOX} px mouth box (stored as {LRW_BOX + 2 * MAX_SHIFT} px "
            "by `prepare --dataset lrw`)"
        )
    if problems:
        raise ConfigError(f"perspective {perspective}'s ROI clips have {' and '.join(problems)}")


def converted_spec(config: ConvertConfig, classes: list[str], perspective: str, arch, frames: int, sha256: str):
    """The run spec: our mvm with the authors' architecture, the LRW evaluation view, and what it was converted from."""
    from pipeline.models import registry
    from pipeline.models.mvm import convert as mapping
    from pipeline.training.batches import make_recipe
    from pipeline.training.experiment import RunSpec

    options = registry.model_options(config.model, mapping.run_options(arch, config.radius))
    recorded = asdict(options)
    recorded["recipe"] = make_recipe("lrw", LRW_BOX + 10).to_dict()
    recorded["lr"] = AUTHORS_LR
    recorded["converted"] = {
        "from": str(config.checkpoint.resolve()),
        "sha256": sha256,
        "format": "PyTorch state_dicts " + ", ".join(mapping.GROUPS),
        "classes": arch.classes,
        "slots": arch.slots,
        "heads": arch.heads,
        "radius": config.radius,
        "preprocessing": mapping.PREPROCESSING,
        "ours": mapping.OUR_PREPROCESSING,
    }
    return RunSpec(
        config.run_name,
        config.model,
        PREPARE,
        [perspective],
        frames,
        list(classes),
        f"converted from {config.checkpoint.name}",
        "",
        recorded,
        plain(config),
    )


def networks(spec):
    """The spec's (training, inference) networks: video [T, 112, 112, 1], aligned mel [T, 4, 80] for the audio front."""
    from pipeline.models.mvm import convert as mapping
    from pipeline.training.experiment import build_model

    side = mapping.INPUT_SIDE
    return build_model(spec, [(spec.timesteps, side, side, 1)], mapping.audio_shape(spec.timesteps))
