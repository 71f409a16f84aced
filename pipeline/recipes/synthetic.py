"""The offline demo dataset: talking-face clips rendered from scikit-image's astronaut photograph.

The face is seen from several yaws.

Each class is a viseme sequence (``"a"``, ``"ao"``, ...) said once per clip with jittered timing and amplitude.
Each view has its mouth corrupted (occluded, blurred, shadowed or drowned in noise) in random stretches of
frames, never all views at once, so a single view is ambiguous while the views together are not. Speakers
differ in skin tone, background, face scale and position and speaking style; splits are speaker-disjoint.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed

from pipeline.execution.logs import get_logger
from pipeline.manifest import Manifest, Sample, Source
from pipeline.media import render_face as rf
from pipeline.media.faces import choose_face, detect_faces, landmarks
from pipeline.media.video import write_video
from pipeline.recipes.common import RecipeError
from pipeline.recipes.splits import assign_splits
from pipeline.storage.atomic import file_sha256, write_text_atomic

log = get_logger(__name__)

GENERATOR = "mpview-synthetic-2"  # bump when the rendering changes, so old files are regenerated
SOURCE_BOX = (21, 221, 120, 320)  # rows y0:y1, cols x0:x1 of the astronaut photograph around the face
MAX_YAW = 30.0
FPS = 25
PARAMS_FILE = "synthetic.json"


@functools.lru_cache(maxsize=1)
def still_face() -> rf.Face:
    """The astronaut's face cropped from ``skimage.data.astronaut()`` with its 68 dlib landmarks."""
    from skimage import data

    y0, y1, x0, x1 = SOURCE_BOX
    image = np.ascontiguousarray(data.astronaut()[y0:y1, x0:x1])
    box = choose_face(detect_faces(image, upsample=1), image.shape)
    if box is None:
        raise RuntimeError("dlib found no face in the astronaut photograph")
    return rf.Face(image, landmarks(image, box).astype(np.float64))


def view_yaws(perspectives: int) -> list[float]:
    """Nominal yaw of each view in degrees: evenly spaced from -30 to +30 (0 for a single view)."""
    if perspectives < 1:
        raise ValueError(f"perspectives must be at least 1, got {perspectives}")
    return [0.0] if perspectives == 1 else [float(y) for y in np.linspace(-MAX_YAW, MAX_YAW, perspectives)]


def base_zoom(size: int) -> float:
    """Output pixels per still-image pixel: 150 still pixels around the face fill the frame."""
    return size / 150


def speakers(n: int, seed: int) -> list[rf.Speaker]:
    """``n`` simulated speakers drawn from ``seed``."""
    return [rf.Speaker.random(np.random.default_rng([seed, 1, k])) for k in range(n)]


def detectable_yaws(face: rf.Face, people: list[rf.Speaker], yaws: list[float], size: int) -> list[float]:
    """Each yaw reduced in 5-degree steps until dlib's frontal detector finds every speaker's face.

    The face must be found closed and wide open.
    """
    out = []
    for yaw in yaws:
        while not _all_detected(face, people, yaw, size):
            if yaw == 0:
                log.warning(
                    "synthetic: dlib misses some frontal faces at %dx%d frames; use a larger size (160 or more)",
                    size,
                    size,
                )
                break
            step = min(5.0, abs(yaw))
            yaw = yaw - step if yaw > 0 else yaw + step
        out.append(yaw)
    return out


def _all_detected(face: rf.Face, people: list[rf.Speaker], yaw: float, size: int) -> bool:
    """Whether the face is detected at ``yaw`` for every speaker at the smallest zoom a clip may use."""
    rng = np.random.default_rng(0)
    plan = np.zeros((1, 2), np.int64)
    widest = (
        max(v[0] for v in rf.VISEMES.values()) * 1.2 * face.mouth_width
    )  # 1.2: viseme_track's largest amplitude jitter
    for person in people:
        opening = np.array([0.0, widest * person.amplitude])
        styled = rf.style_face(face, person)
        view = rf.ViewSetup(yaw, base_zoom(size) * person.scale * 0.96, 1.0, 0.0, 0.0)
        clip = rf.render_clip(styled, opening, np.ones(2), [view], plan, np.tile(person.offset, (2, 1)), size, rng)
        if any(len(detect_faces(frame)) == 0 for frame in clip[0]):
            return False
    return True


def write_clip(path: Path, frames: np.ndarray) -> None:
    """Write ``[T, H, W, 3]`` RGB frames as a 25 fps MP4, byte-identical for identical frames."""
    write_video(path, frames, FPS, preset="veryfast")


def _sample_plan(
    pattern: str, seed: int, class_index: int, rep: int, person: rf.Speaker, yaws: list[float], frames: int, size: int
) -> dict[str, Any]:
    """Everything random about one clip except its pixel noise: mouth track, view looks, corruptions, head motion."""
    rng = np.random.default_rng([seed, 2, class_index, rep])
    opening, width = rf.viseme_track(pattern, frames, rng, person.amplitude, person.speed)
    views = [
        rf.ViewSetup(
            yaw,
            base_zoom(size) * person.scale * rng.uniform(0.96, 1.04),
            rng.uniform(0.85, 1.15),
            rng.uniform(-0.15, 0.15),
            rng.uniform(2, 5),
        )
        for yaw in yaws
    ]
    plan = rf.corruption_plan(frames, len(yaws), rng)
    motion = rf.head_motion(frames, rng) + np.array(person.offset)
    return {"opening": opening, "width": width, "views": views, "plan": plan, "motion": motion, "rng": rng}


def _make_sample(
    task: dict[str, Any],
    face: rf.Face,
    person: rf.Speaker,
    yaws: list[float],
    cfg: dict[str, Any],
    out_dir: str,
    reuse: bool,
) -> dict[str, Any]:
    """Render and write one clip's views (unless ``reuse`` and they exist); return its media info and metadata."""
    plan = _sample_plan(
        task["pattern"], cfg["seed"], task["class_index"], task["rep"], person, yaws, cfg["frames"], cfg["size"]
    )
    paths = {view: Path(out_dir) / rel for view, rel in task["paths"].items()}
    if not (reuse and all(p.is_file() for p in paths.values())):
        clip = rf.render_clip(
            rf.style_face(face, person),
            plan["opening"] * face.mouth_width,
            plan["width"],
            plan["views"],
            plan["plan"],
            plan["motion"],
            cfg["size"],
            plan["rng"],
        )
        for j, path in enumerate(paths.values()):
            write_clip(path, clip[j])
    media = {
        v: {
            "frames": cfg["frames"],
            "fps": float(FPS),
            "width": cfg["size"],
            "height": cfg["size"],
            "sha256": file_sha256(p),
        }
        for v, p in paths.items()
    }
    meta = {
        "pattern": task["pattern"],
        "opening": [round(float(x), 4) for x in plan["opening"]],
        "width": [round(float(x), 4) for x in plan["width"]],
        "corrupted": {v: "".join(str(int(k)) for k in plan["plan"][j]) for j, v in enumerate(paths)},
        "views": {
            v: {k: round(float(x), 4) for k, x in dataclasses.asdict(view).items()}
            for v, view in zip(paths, plan["views"])
        },
        "generator": GENERATOR,
        "seed": cfg["seed"],
    }
    return {"media": media, "meta": meta}


def prepare_synthetic(
    out_dir: str | Path,
    n_per_class: int = 20,
    n_classes: int = 10,
    n_speakers: int = 5,
    perspectives: int = 3,
    frames: int = 30,
    seed: int = 0,
    jobs: int = 1,
    size: int = 160,
) -> Manifest:
    """Render the synthetic multi-view talking-face dataset and return its manifest.

    Videos go under ``out_dir/videos/<view>/<id>.mp4``.

    Re-running with the same parameters keeps the videos already written; other parameters regenerate them.
    """
    if not isinstance(perspectives, int) or isinstance(perspectives, bool) or perspectives < 1:
        raise RecipeError(f"synthetic: perspectives is how many to render (e.g. 3), got {perspectives!r}")
    if n_per_class < 1 or n_speakers < 1 or frames < 4 or size < 64 or size % 2:
        raise RecipeError("synthetic: need n_per_class >= 1, n_speakers >= 1, frames >= 4 and an even size >= 64")
    started = time.time()
    out = Path(out_dir).absolute()
    patterns = rf.class_patterns(n_classes)
    cfg = {
        "generator": GENERATOR,
        "n_per_class": n_per_class,
        "n_classes": n_classes,
        "n_speakers": n_speakers,
        "perspectives": perspectives,
        "frames": frames,
        "size": size,
        "fps": FPS,
        "seed": seed,
    }
    reuse = reuse_outputs(out / PARAMS_FILE, cfg)

    face = still_face()
    people = speakers(n_speakers, seed)
    names = [f"v{j + 1}" for j in range(perspectives)]
    yaws = detectable_yaws(face, people, view_yaws(perspectives), size)
    for name, nominal, used in zip(names, view_yaws(perspectives), yaws):
        if used != nominal:
            log.warning(
                "synthetic: view %s turned %.0f instead of %.0f degrees so that dlib still finds the face",
                name,
                used,
                nominal,
            )

    tasks = []
    for class_index, pattern in enumerate(patterns):
        for rep in range(n_per_class):
            speaker = (rep + class_index) % n_speakers  # rotates, so every speaker says every class about equally
            sample_id = f"spk{speaker + 1}-{pattern}-{rep:03d}"
            paths = {v: f"videos/{v}/{sample_id}.mp4" for v in names}
            tasks.append(
                {
                    "id": sample_id,
                    "pattern": pattern,
                    "class_index": class_index,
                    "rep": rep,
                    "speaker": speaker,
                    "paths": paths,
                }
            )
    results = Parallel(n_jobs=jobs)(
        delayed(_make_sample)(t, face, people[t["speaker"]], yaws, cfg, str(out), reuse) for t in tasks
    )

    samples = [
        Sample(
            t["id"],
            {v: Source(p) for v, p in t["paths"].items()},
            label=t["pattern"],
            speaker=f"spk{t['speaker'] + 1}",
            media=r["media"],
            meta=r["meta"],
        )
        for t, r in zip(tasks, results)
    ]
    if n_speakers < 3:
        log.warning(
            "synthetic: %d speaker(s) cannot give speaker-disjoint train/val/test splits; splitting by sample",
            n_speakers,
        )
    samples = assign_splits(samples, fractions=(0.6, 0.2, 0.2), seed=seed, by_speaker=n_speakers >= 3)
    info = {
        "generator": GENERATOR,
        "params": cfg,
        "source_image": "skimage.data.astronaut()",
        "yaw_degrees": dict(zip(names, yaws)),
        "speakers": {f"spk{k + 1}": dataclasses.asdict(p) for k, p in enumerate(people)},
        "visemes": {k: {"opening": h, "width": w} for k, (h, w) in rf.VISEMES.items()},
        "corruption_codes": {"0": "clean", **{str(k): v for k, v in rf.CORRUPTIONS.items()}},
    }
    log.info(
        "synthetic: %d clips x %d views in %s (%.1f s%s)",
        len(samples),
        perspectives,
        out,
        time.time() - started,
        ", reused existing files" if reuse else "",
    )
    return Manifest(
        dataset="synthetic", root=str(out), perspectives=names, samples=samples, classes=patterns, info=info
    )


def reuse_outputs(record: Path, cfg: dict[str, Any]) -> bool:
    """Whether files already written beside ``record`` were made with ``cfg``; then record ``cfg`` there.

    Files made with ``cfg`` may be kept.

    The record is written before any file, so a run interrupted under other parameters never passes for this one.
    """
    try:
        same = json.loads(record.read_text(encoding="utf-8")) == cfg
    except (OSError, ValueError):
        same = False
    write_text_atomic(record, json.dumps(cfg, indent=1, sort_keys=True) + "\n")
    return same
