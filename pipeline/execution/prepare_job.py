"""The per-shard work of ``prepare``: decode each perspective, crop its ROI, write the shard."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from pipeline.execution.logs import get_logger
from pipeline.execution.runner import SampleError, ShardTask, write_shard
from pipeline.manifest import ManifestError, Sample, resolve_inside
from pipeline.media.roi import DECODE_AHEAD, NoFaceError, RoiConfig, RoiResult, crop_clip, crop_frames
from pipeline.media.video import VideoError, frame_rate, iter_frames, probe, read_image_sequence
from pipeline.storage.atomic import file_sha256
from pipeline.training.sequences import AUDIO_KEY
from pipeline.workspace import PREPARE

log = get_logger(__name__)

ROI_KIND = "roi"


def decode_ahead_for(jobs: int) -> int:
    """``PrepareJob.decode_ahead`` for a run of ``jobs`` local worker processes.

    It is 0 (decode inline) once they fill the CPUs.

    The decode thread only pays off while a core is idle; with every core busy it costs a few percent (README,
    prepare throughput). The crops are the same either way.
    """
    return 0 if jobs >= (os.cpu_count() or 1) else DECODE_AHEAD


@dataclasses.dataclass(frozen=True)
class PrepareJob:
    """Picklable shard job: everything a worker needs, nothing it must look up elsewhere."""

    root: str
    perspectives: tuple[str, ...]
    roi: RoiConfig
    audio: bool = False
    strict: bool = False
    decode_ahead: int = DECODE_AHEAD  # see ``decode_ahead_for``
    compression: str | None = None  # ROI shard compression (None: the default)

    def __call__(self, task: ShardTask) -> dict[str, dict[str, Any]]:
        attrs = {"stage": PREPARE, "roi": self.roi.to_dict(), "perspectives": list(self.perspectives)}
        return write_shard(task, ROI_KIND, attrs, self._outcomes(task), self.strict, self.compression)

    def _outcomes(self, task: ShardTask) -> Iterator[tuple[str, Any]]:
        for data in task.samples:
            sample = Sample.from_dict(data)
            try:
                yield sample.id, self.process(sample)
            except SampleError as exc:
                yield sample.id, exc

    def process(self, sample: Sample) -> dict[str, Any]:
        """Crop every perspective of one sample; raise ``SampleError`` with a reason on bad input or any other error."""
        arrays: dict[str, np.ndarray] = {}
        extras: dict[str, np.ndarray] = {}
        media: dict[str, dict[str, Any]] = {}
        for perspective in self.perspectives:
            if perspective not in sample.sources:
                raise SampleError(f"perspective {perspective} has no source", "missing-perspective")
            with _unexpected_errors(Path(self.root) / sample.sources[perspective].path):
                result, info, times = self._crop(sample, perspective)
            arrays[perspective] = result.clip
            for key, value in result.arrays().items():
                extras[f"audit/{perspective}/{key}"] = value
            if times is not None:
                extras[f"audit/{perspective}/timestamps"] = times
            media[perspective] = {**info, "found_fraction": round(1.0 - result.missing_fraction, 4)}
        if self.audio:
            with _unexpected_errors(Path(self.root) / sample.sources[self.perspectives[0]].path):
                extras[AUDIO_KEY] = self._audio(sample, media)
        attrs = {
            "label": sample.label,
            "split": sample.split,
            "speaker": sample.speaker,
            "sha256": {v: m["sha256"] for v, m in media.items()},
        }
        return {"arrays": arrays, "extras": extras, "attrs": attrs, "record": {"media": media}}

    def _crop(self, sample: Sample, perspective: str) -> tuple[RoiResult, dict[str, Any], np.ndarray | None]:
        """Read one perspective (a video frame by frame, or an image sequence) and crop it: the crops, media facts and
        per-frame times (videos only)."""
        source = sample.sources[perspective]
        config = self.roi.for_perspective(perspective)
        try:
            if source.kind == "images":
                paths = [resolve_inside(self.root, f, what=f"sample {sample.id!r}") for f in (source.frames or [])]
                if not paths:
                    raise SampleError(f"{source.path}: image sequence lists no frames", "zero-frames")
                missing = [p for p in paths if not p.exists()]
                if missing:
                    raise SampleError(f"{missing[0]}: image file is missing", "missing-file")
                frames = read_image_sequence(paths)
                result = crop_clip(frames, config, source=str(paths[0]))
                info = {
                    "frames": len(frames),
                    "fps": None,
                    "height": frames.shape[1],
                    "width": frames.shape[2],
                    "sha256": _hash_many(paths),
                }
                return result, info, None
            path = resolve_inside(self.root, source.path, what=f"sample {sample.id!r}")
            if not path.exists():
                raise SampleError(f"{path}: video file is missing", "missing-file")
            times: list[float] = []
            size: dict[str, int] = {}
            passes = [
                _sized(iter_frames(path, times), size)
            ]  # the first pass notes frame times and size, a re-read not
            result = crop_frames(
                lambda: passes.pop() if passes else iter_frames(path),
                config,
                source=str(path),
                frame_count=lambda: probe(path)["frames"],
                decode_ahead=self.decode_ahead,
            )
            info = {
                "frames": len(result.clip),
                "fps": frame_rate(path),
                **size,
                "variable_frame_rate": _variable_rate(times),
                "sha256": file_sha256(path),
            }
            return result, info, np.asarray(times, np.float64)
        except ManifestError as exc:
            raise SampleError(str(exc), "outside-root") from None
        except NoFaceError as exc:
            raise SampleError(str(exc) + _frame_mode_hint(exc), "no-face") from None
        except VideoError as exc:
            raise SampleError(str(exc), exc.code) from None
        except OSError as exc:
            raise SampleError(
                f"{exc.filename or source.path}: cannot read ({exc.strerror or exc})", "unreadable"
            ) from None

    def _audio(self, sample: Sample, media: dict[str, dict[str, Any]]) -> np.ndarray:
        from pipeline.media.audio import audio_for_clip

        perspective = self.perspectives[0]
        path = resolve_inside(self.root, sample.sources[perspective].path)
        try:
            return audio_for_clip(path, media[perspective]["frames"], media[perspective]["fps"] or 25.0)
        except VideoError as exc:
            raise SampleError(f"{path}: no usable audio ({exc})", "no-audio") from None


def _sized(frames: Iterable[np.ndarray], size: dict[str, int]) -> Iterator[np.ndarray]:
    """Pass frames through, noting their height and width in ``size``."""
    for frame in frames:
        size["height"], size["width"] = frame.shape[:2]
        yield frame


@contextlib.contextmanager
def _unexpected_errors(path: Path) -> Iterator[None]:
    """Turn an unforeseen exception while working on ``path`` into that sample's failure, naming file and exception."""
    try:
        yield
    except SampleError:
        raise
    except Exception as exc:
        log.debug("unexpected error on %s", path, exc_info=True)
        raise SampleError(f"{path}: internal error ({type(exc).__name__}: {exc})", "internal-error") from None


def _frame_mode_hint(exc: NoFaceError) -> str:
    """When no frame at all shows a face, the clip is likely pre-cropped: say which mode serves it."""
    if exc.fraction < 1.0:
        return ""
    return "; no frame shows a face: if the clips are already cropped to the mouth or face, use --roi frame"


def _variable_rate(times: list[float]) -> bool:
    """Whether frame intervals differ by more than 10% of their median (a variable-frame-rate recording)."""
    steps = np.diff(times)
    return bool(
        len(steps) > 1 and np.median(steps) > 0 and np.abs(steps - np.median(steps)).max() > 0.1 * np.median(steps)
    )


def _hash_many(paths: list[Path]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()
