"""Video and image-sequence I/O with PyAV and OpenCV; every failure is a VideoError naming the file and the reason."""

from __future__ import annotations

import queue
import threading
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence, TypeVar

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from pipeline.errors import MpviewError
from pipeline.execution.logs import get_logger
from pipeline.storage.atomic import atomic_path

log = get_logger(__name__)


VFR_TIME_BASE = Fraction(1, 1000)  # millisecond clock for clips written with their own frame times
Item = TypeVar("Item")


class VideoError(MpviewError):
    """A video or image sequence that cannot be used: unreadable, empty, truncated, wrong format, or no face.

    ``code`` names the kind (``truncated``, ``empty-file``, ``pixel-format``, ...): what a per-sample failure is
    counted as in the run summary.
    """

    def __init__(self, path: Path | str, reason: str, code: str = "unreadable") -> None:
        self.path = str(path)
        self.reason = reason
        self.code = code
        super().__init__(f"{self.path}: {reason}")


def _check_file(path: Path | str) -> Path:
    """Fail early, with a plain reason, on a missing, non-regular or zero-byte file."""
    path = Path(path)
    if not path.exists():
        raise VideoError(path, "file not found", "missing-file")
    if not path.is_file():
        raise VideoError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise VideoError(path, "empty file (0 bytes)", "empty-file")
    return path


def _open(path: Path) -> av.container.InputContainer:
    """Open a container for reading, mapping FFmpeg's errors to VideoError."""
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        raise VideoError(path, f"not a readable video container ({exc})") from exc
    if container.format.name.endswith("_pipe") or container.format.name == "image2":  # FFmpeg's still-image readers
        kind = container.format.name.removesuffix("_pipe").upper()
        container.close()
        raise VideoError(path, f"not a video: a {kind} image (give images as a folder of frames)", "not-a-video")
    return container


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """The first video stream, or VideoError when there is none."""
    if not container.streams.video:
        raise VideoError(path, "no video stream", "no-video-stream")
    return container.streams.video[0]


def probe(path: Path | str) -> dict:
    """Frame count, frame rate and size from the container (frames counted from packets when the header omits them)."""
    path = _check_file(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        frames = stream.frames
        if not frames:
            try:
                frames = sum(1 for packet in container.demux(stream) if packet.size)
            except av.FFmpegError as exc:
                raise VideoError(path, f"truncated or corrupt while counting packets ({exc})", "truncated") from exc
        return {
            "frames": int(frames),
            "fps": _rate(stream),
            "width": int(stream.codec_context.width),
            "height": int(stream.codec_context.height),
        }


def _rate(stream: av.video.stream.VideoStream) -> float:
    return float(stream.average_rate or stream.guessed_rate or 0)


def frame_rate(path: Path | str) -> float:
    """The video's frame rate from the container header alone (no demuxing, unlike ``probe``)."""
    path = _check_file(path)
    with _open(path) as container:
        return _rate(_video_stream(container, path))


def _upright(image: np.ndarray, rotation: float) -> np.ndarray:
    """Undo a display rotation (counter-clockwise degrees, as phones record it), as players do; nearest quarter turn."""
    turns = int(round(rotation / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(image, k=turns)) if turns else image


def iter_frames(path: Path | str, timestamps: list[float] | None = None) -> Iterator[np.ndarray]:
    """Decode a video frame by frame into upright ``[H, W, 3]`` uint8 RGB arrays, checking for truncation at the end.

    A display rotation in the container (phone clips) is applied, so frames come out as a player shows them. When
    ``timestamps`` is given, each frame's presentation time in seconds is appended to it (variable-frame-rate clips
    keep their real timing). One colour converter serves the whole clip on this thread (PyAV's ``to_ndarray`` builds
    a new one per frame); it adapts when the size or pixel format changes mid-stream, and the pixels are the same.
    """
    path = _check_file(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        claimed = stream.frames
        count = 0
        frames = container.decode(stream)
        converter = VideoReformatter()  # threads=1 below: swscale threads were slower here; workers fill the cores
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except av.FFmpegError as exc:
                raise VideoError(
                    path, f"truncated or corrupt: decoding failed after {count} frames ({exc})", "truncated"
                ) from exc
            try:
                image = converter.reformat(frame, format="rgb24", threads=1).to_ndarray()
            except (ValueError, NotImplementedError, av.FFmpegError) as exc:
                raise VideoError(
                    path, f"unsupported pixel format {frame.format.name!r} ({exc})", "pixel-format"
                ) from exc
            if timestamps is not None:
                timestamps.append(float(frame.time) if frame.time is not None else count / (_rate(stream) or 25.0))
            count += 1
            yield _upright(image, frame.rotation)
    if count == 0:
        raise VideoError(path, "no frames decoded (zero-frame or unreadable video)", "zero-frames")
    if claimed and count < claimed:
        raise VideoError(
            path, f"truncated: decoded {count} of the {claimed} frames the container declares", "truncated"
        )


def read_ahead(items: Iterable[Item], depth: int = 4) -> Iterator[Item]:
    """``items`` produced on a background thread, at most ``depth`` ahead of the caller: frames decode meanwhile.

    FFmpeg's decoding and colour conversion release the GIL, so they overlap with what the caller does between
    frames (detection, warping). An error raised while producing is raised here, in its place in the sequence; when
    the caller stops early the thread stops too and closes ``items`` (a generator's cleanup runs on that thread).
    """
    handoff: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    worker = threading.Thread(target=_produce, args=(iter(items), handoff, stop), name="read_ahead", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while worker.is_alive():  # make room for a producer waiting to put, until it sees the stop
            try:
                handoff.get_nowait()
            except queue.Empty:
                worker.join(0.01)


def _produce(items: Iterator[Item], handoff: queue.Queue, stop: threading.Event) -> None:
    """The ``read_ahead`` thread: hand over each item, then the end or the error, unless told to stop."""
    try:
        for item in items:
            handoff.put(("item", item))
            if stop.is_set():
                return
        handoff.put(("end", None))
    except BaseException as exc:  # raised again in the caller's thread, which would otherwise wait for ever
        handoff.put(("error", exc))
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def read_frames(path: Path | str, timestamps: list[float] | None = None) -> np.ndarray:
    """Decode a whole video into upright ``[T, H, W, 3]`` uint8 RGB (see ``iter_frames``)."""
    return np.stack(list(iter_frames(path, timestamps)))


def read_image_sequence(paths: Sequence[Path | str]) -> np.ndarray:
    """Read same-sized still images (e.g. light-field sub-aperture views) into ``[T, H, W, 3]`` uint8 RGB."""
    if not paths:
        raise VideoError("<image sequence>", "no images given", "zero-frames")
    images = []
    for path in paths:
        path = _check_file(path)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise VideoError(path, "not a readable image")
        if images and image.shape != images[0].shape:
            raise VideoError(
                path,
                f"size {image.shape[1]}x{image.shape[0]} differs from the first image's "
                f"{images[0].shape[1]}x{images[0].shape[0]}",
            )
        images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return np.stack(images)


def _video_codec() -> str:
    """H.264 through libx264 when this PyAV build has it, else MPEG-4 part 2."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_video(
    path: Path | str,
    frames: np.ndarray,
    fps: float,
    crf: int = 18,
    preset: str = "medium",
    times: Sequence[float] | None = None,
) -> Path:
    """Write ``[T, H, W, 3]`` RGB (or ``[T, H, W]`` gray) uint8 frames as an MP4 atomically; H and W must be even.

    Encoding runs on one thread with x264's macroblock tree off, so identical frames give identical bytes. ``times``
    (seconds, increasing) gives each frame its own presentation time: a variable-frame-rate clip.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or len(frames) == 0:
        raise ValueError(f"expected non-empty uint8 [T,H,W] or [T,H,W,3] frames, got {frames.dtype} {frames.shape}")
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"width and height must be even for yuv420p video, got {width}x{height}")
    if times is not None and (len(times) != len(frames) or np.any(np.diff(times) <= 0)):
        raise ValueError(f"times must give one increasing time per frame, got {len(times)} for {len(frames)} frames")
    codec = _video_codec()
    path = Path(path)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": str(crf), "preset": preset, "threads": "1", "x264-params": "mbtree=0"}
            else:
                stream.options = {"threads": "1"}
                stream.bit_rate = 2_000_000
            if times is not None:
                stream.codec_context.time_base = VFR_TIME_BASE
            for index, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(
                    format="yuv420p", threads=1
                )
                if times is not None:
                    frame.pts, frame.time_base = int(round(times[index] / VFR_TIME_BASE)), VFR_TIME_BASE
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    log.debug("wrote %s (%d frames, %dx%d, %s)", path, len(frames), width, height, codec)
    return path


def read_audio(path: Path | str, sample_rate: int = 16000) -> np.ndarray:
    """Decode the first audio stream, downmixed to mono and resampled, as float32 samples (full scale 1.0)."""
    path = _check_file(path)
    with _open(path) as container:
        if not container.streams.audio:
            raise VideoError(path, "no audio stream", "no-audio")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks = []
        try:
            for frame in container.decode(stream):
                chunks.extend(resampler.resample(frame))
            chunks.extend(resampler.resample(None))
        except av.FFmpegError as exc:
            raise VideoError(path, f"truncated or corrupt audio ({exc})", "truncated") from exc
    if not chunks:
        raise VideoError(path, "audio stream has no samples", "no-audio")
    return np.concatenate([chunk.to_ndarray().reshape(-1) for chunk in chunks]).astype(np.float32, copy=False)
