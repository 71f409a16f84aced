"""Prepare-stage memory benchmark: a worker's peak RSS while cropping 3 s and 12 s 1080p talking-face clips.

The clips are made from a real GRID clip (360x288, 25 fps) upscaled to 1920x1080 and looped back and forth to the
length asked for, written with ``pipeline.media.video.write_video`` into a temporary folder. Each clip is cropped in a
fresh process (peak RSS is a high-water mark per process), once the streamed way (``crop_video``: decode -> track ->
smooth -> warp in a bounded window of frames) and once decoded whole first (``read_frames`` then ``crop_clip``, how
``prepare`` worked before) for comparison. The baseline is the same process after imports and model loading.

Run from the repository root:  python bench/memory.py [--seconds 3 12] [--clip GRID_CLIP]
The last line printed is one JSON object with the figures (MiB).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.media.video import read_frames, write_video  # noqa: E402

DEFAULT_CLIP = REPO.parent / "shared" / "data" / "grid" / "lbax4n.mpg"
SIZE = (1920, 1080)
FPS = 25


def make_clip(source: Path, seconds: float, path: Path) -> Path:
    """A ``seconds``-long 1080p clip from ``source``'s frames, upscaled and played forwards and backwards in turn."""
    frames = read_frames(source)
    loop = np.concatenate([frames, frames[::-1]])
    count = int(round(seconds * FPS))
    picked = loop[np.arange(count) % len(loop)]
    big = np.stack([cv2.resize(frame, SIZE, interpolation=cv2.INTER_LINEAR) for frame in picked])
    return write_video(path, big, FPS, preset="ultrafast")


def _peak_mib() -> float:
    """This process's peak resident set size so far, MiB (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def child(path: Path, whole: bool) -> None:
    """Crop one clip in this process and print its baseline and peak RSS as JSON."""
    from pipeline.media.faces import frontal_detector, shape_predictor
    from pipeline.media.roi import RoiConfig, crop_clip, crop_video

    frontal_detector(), shape_predictor()
    baseline = _peak_mib()
    result = crop_clip(read_frames(path), RoiConfig(), str(path)) if whole else crop_video(path, RoiConfig())
    print(
        json.dumps(
            {
                "baseline_mib": round(baseline, 1),
                "peak_mib": round(_peak_mib(), 1),
                "frames": len(result.clip),
                "found": float(result.found.mean()),
            }
        )
    )


def measure(path: Path, whole: bool) -> dict:
    """Run ``child`` in a fresh interpreter; its figures."""
    command = [sys.executable, __file__, "--child", str(path)] + (["--whole"] if whole else [])
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    """Make the clips, measure each both ways, print a table and the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--seconds", type=float, nargs="+", default=[3.0, 12.0], help="clip lengths to measure")
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="real talking-face clip to build them from")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--whole", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.whole)
        return {}
    summary = {}
    with tempfile.TemporaryDirectory() as folder:
        for seconds in args.seconds:
            path = make_clip(args.clip, seconds, Path(folder) / f"clip_{seconds:g}s.mp4")
            streamed, whole = measure(path, whole=False), measure(path, whole=True)
            summary[f"{seconds:g}s_1080p"] = {
                "frames": streamed["frames"],
                "baseline_mib": streamed["baseline_mib"],
                "streamed_peak_mib": streamed["peak_mib"],
                "decoded_whole_peak_mib": whole["peak_mib"],
            }
    print(f"{'clip':<14}{'frames':>8}{'baseline MiB':>14}{'streamed MiB':>14}{'whole-clip MiB':>16}")
    for name, row in summary.items():
        print(
            f"{name:<14}{row['frames']:>8}{row['baseline_mib']:>14.0f}{row['streamed_peak_mib']:>14.0f}"
            f"{row['decoded_whole_peak_mib']:>16.0f}"
        )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
