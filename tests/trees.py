"""Dataset trees laid out like the real releases, built from the real GRID clips, for tests that run the CLI as a user.

Each builder writes small real video files (short clips, the layouts and file names of the release) and returns the
root to pass as ``--root``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

from pipeline.media.roi import RoiConfig, crop_clip
from pipeline.media.video import read_frames, write_video

GRID_CLIPS = ("lbax4n.mpg", "pwij3p.mpg", "sbwe5n.mpg")
# The view sizes (height x width, even for yuv420p) of OuluVS2's cropped-mouth release differ per view; these are
# the multi-view baseline's sizes of Petridis et al. rounded up to even numbers.
OULU_VIEW_SIZES = {1: (30, 50), 2: (30, 44), 3: (30, 44), 4: (36, 44), 5: (44, 30)}
# Speakers of the shipped split lists: train in both protocols (1-3), val in 28-12-12 and train in the
# speaker-independent one (4, 5), test in both (6, 8).
OULU_SPEAKERS = (1, 2, 3, 4, 5, 6, 8)
OULU_UTTERANCES = (31, 34, 37)  # phrases 1, 2 and 3 (label ((u - 1) mod 30) // 3)


@functools.lru_cache(maxsize=None)
def _grid_frames(path: str) -> np.ndarray:
    """Decoded GRID frames, once per test session."""
    return read_frames(path)


@functools.lru_cache(maxsize=None)
def _grid_mouths(path: str) -> np.ndarray:
    """Real 96x96 mouth crops of a GRID clip (found by dlib, tracked and aligned), once per test session."""
    return crop_clip(_grid_frames(path), RoiConfig(), source=path).clip


def _segment(frames: np.ndarray, start: int, length: int) -> np.ndarray:
    """``length`` frames from ``start`` (wrapping around the clip end)."""
    return frames[(start + np.arange(length)) % len(frames)]


def ouluvs2_cropped_tree(
    root: Path,
    grid_dir: Path,
    frames: int = 24,
    speakers=OULU_SPEAKERS,
    utterances=OULU_UTTERANCES,
    views=(1, 2, 3, 4, 5),
    subset: str = "phrase",
) -> Path:
    """``cropped_mouth_mp4_<subset>/<spk>/<view>/s<spk>_v<view>_u<utt>.mp4``: mouth-only clips, a size per view.

    The phrase decides which GRID clip's mouth is shown (so the label is learnable), the speaker where in the clip the
    segment starts and its brightness, and each view resizes the crop to its own size.
    """
    base = root / f"cropped_mouth_mp4_{subset}"
    for s_index, speaker in enumerate(speakers):
        for u_index, utterance in enumerate(utterances):
            mouths = _grid_mouths(str(grid_dir / GRID_CLIPS[u_index % len(GRID_CLIPS)]))
            clip = _segment(mouths, 7 * s_index, frames).astype(np.float32) * (0.85 + 0.05 * s_index)
            clip = np.clip(clip, 0, 255).astype(np.uint8)
            for view in views:
                height, width = OULU_VIEW_SIZES[view]
                resized = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in clip])
                folder = base / str(speaker) / str(view)
                folder.mkdir(parents=True, exist_ok=True)
                write_video(folder / f"s{speaker}_v{view}_u{utterance}.mp4", resized, fps=30)
    return root


def mplstm_tree(root: Path, grid_dir: Path, frames: int = 20, per_split=None, cameras: int = 2) -> Path:
    """``{Train,Validation,Test}/CAM<k>/<class>/<video>.mp4``: full-face GRID segments, one class per GRID clip.

    Camera k sees the clip zoomed by a different amount, as cameras at different distances would.
    """
    per_split = per_split or {"Train": 3, "Validation": 1, "Test": 1}
    index = 0
    for split, count in per_split.items():
        for _ in range(count):
            for c_index, name in enumerate(GRID_CLIPS):
                clip = _segment(_grid_frames(str(grid_dir / name)), 11 * index, frames)
                for camera in range(1, cameras + 1):
                    zoom = 1.0 + 0.1 * (camera - 1)
                    height, width = clip.shape[1:3]
                    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), 0.0, zoom)
                    view = np.stack(
                        [cv2.warpAffine(f, matrix, (width, height), borderMode=cv2.BORDER_REFLECT) for f in clip]
                    )
                    folder = root / split / f"CAM{camera}" / f"speaker{c_index + 1}"
                    folder.mkdir(parents=True, exist_ok=True)
                    write_video(folder / f"video{index:03d}.mp4", view, fps=25)
            index += 1
    return root


LRW_WORDS = ("ABOUT", "BECAUSE", "LITTLE")
LRW_BOX = (59, 95, 195, 231)  # the authors' mouth box in the 256x256 frame


def _write_with_audio(path: Path, frames: np.ndarray, fps: int, audio: np.ndarray, sample_rate: int = 16000) -> None:
    """An MP4 with H.264 video and AAC mono audio (PyAV), as LRW's clips have both."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        video.options = {"threads": "1"}
        sound = container.add_stream("aac", rate=sample_rate)
        sound.layout = "mono"
        for image in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        container.mux(video.encode(None))
        samples = np.asarray(audio, np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate = sample_rate
        for chunk in av.AudioResampler(format="fltp", layout="mono", rate=sample_rate).resample(frame):
            container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))


def lrw_tree(root: Path, grid_dir: Path, words=LRW_WORDS, per_split=None, frames: int = 29) -> Path:
    """``<WORD>/{train,val,test}/<WORD>_<5 digits>.mp4``: 256x256, 25 fps, ``frames`` frames with sound.

    Each word is one GRID clip; a sample is a segment of it (start varied per sample), its tracked mouth crop resized
    into LRW's fixed box (x 59..195, y 95..231) over the downscaled face frame, with the segment's own audio.
    """
    from pipeline.media.video import read_audio

    per_split = per_split or {"train": 4, "val": 1, "test": 1}
    x0, y0, x1, y1 = LRW_BOX
    index = 0
    for w_index, word in enumerate(words):
        name = str(grid_dir / GRID_CLIPS[w_index % len(GRID_CLIPS)])
        faces, mouths, sound = _grid_frames(name), _grid_mouths(name), read_audio(name, 16000)
        for split, count in per_split.items():
            for n in range(count):
                start = (5 * n + 3 * index) % max(1, len(faces) - frames)
                clip = np.stack(
                    [cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA) for f in faces[start : start + frames]]
                )
                for t, mouth in enumerate(mouths[start : start + frames]):
                    clip[t, y0:y1, x0:x1] = cv2.resize(mouth, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
                audio = sound[int(start / 25 * 16000) : int((start + frames) / 25 * 16000)]
                _write_with_audio(root / word / split / f"{word}_{n + 1:05d}.mp4", clip, 25, audio)
                index += 1
    return root
