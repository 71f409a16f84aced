"""OuluVS2 (53 speakers, 5 synchronised views from frontal to profile) as distributed: cropped mouth or original videos.

Files are found anywhere under the root by their name ``s<speaker>_v<view>_u<utterance>.<ext>``, so both
``cropped_mouth_mp4_phrase/<spk>/<view>/s1_v1_u31.mp4`` (and ``cropped_mouth_mp4_digit``) and the uncropped
``orig_s<spk>/orig/s1_v1_u31.mp4`` work. Point the root at one of them: a second file for the same speaker, view and
utterance is reported as a duplicate.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from pipeline.execution.logs import get_logger
from pipeline.manifest import Manifest
from pipeline.recipes.common import RecipeError, SampleCollector, StrPath, dataset_root, finish, walk_matching
from pipeline.recipes.splits import load_split_definition

log = get_logger(__name__)

VIEW_ANGLES = {1: 0, 2: 30, 3: 45, 4: 60, 5: 90}  # view -> degrees from frontal
PHRASES = (
    "Excuse me",
    "Goodbye",
    "Hello",
    "How are you",
    "Nice to meet you",
    "See you",
    "I am sorry",
    "Thank you",
    "Have a good time",
    "You are welcome",
)
DIGITS = tuple(f"digits-{i}" for i in range(1, 11))  # the ten digit sequences, in utterance order
SUBSETS = {"digits": (range(1, 31), DIGITS), "phrases": (range(31, 61), PHRASES)}  # utterances and class names
SPLIT_DEFINITIONS = {"speaker-independent": "ouluvs2_speaker_independent", "28-12-12": "ouluvs2_28_12_12"}
FILE_PATTERN = re.compile(
    r"s(?P<speaker>\d+)_v(?P<view>\d+)_u(?P<utterance>\d+)\.(?:mp4|avi|mov|mkv|mpg)", re.IGNORECASE
)


def utterance_label(utterance: int) -> int:
    """Class index of an utterance, ``((u - 1) mod 30) // 3``.

    Each of the ten sequences is said three times in a row.
    """
    return ((utterance - 1) % 30) // 3


def prepare_ouluvs2(
    root: StrPath,
    *,
    subset: str = "phrases",
    perspectives: Sequence[int | str] = (1, 2, 3, 4, 5),
    split: str = "speaker-independent",
) -> Manifest:
    """Manifest of OuluVS2 phrases (u31-u60) or digit sequences (u1-u30), perspectives (views) ``v1``..``v5``, split
    by speaker list.

    ``split`` is ``"speaker-independent"`` (40 train / 12 test speakers), ``"28-12-12"`` (train / val / test) or a
    path to a JSON split definition; speaker 29 is excluded (its mouth is not visible) and listed in ``problems``.
    """
    if subset not in SUBSETS:
        raise RecipeError(f"subset must be one of {sorted(SUBSETS)}, got {subset!r}")
    wanted = _parse_views(perspectives)
    definition = load_split_definition(SPLIT_DEFINITIONS.get(split, split))
    utterances, classes = SUBSETS[subset]
    base = dataset_root(root)
    collector = SampleCollector(base, [f"v{v}" for v in wanted])
    unselected, cropped = 0, []
    for path, match in walk_matching(base, FILE_PATTERN):
        speaker, view, utterance = (int(match[k]) for k in ("speaker", "view", "utterance"))
        if view not in wanted or utterance not in utterances:
            unselected += 1
            continue
        sample_id = f"s{speaker}_u{utterance}"
        excluded = definition.excluded.get(str(speaker))
        sample_split = definition.split_of(str(speaker))
        if excluded is not None:
            collector.reject(sample_id, f"speaker {speaker} excluded: {excluded}", path.relative_to(base).as_posix())
        elif sample_split is None:
            collector.reject(
                sample_id,
                f"speaker {speaker} not in split definition {definition.name}",
                path.relative_to(base).as_posix(),
            )
        else:
            cropped.append(_in_cropped_release(path))
            collector.add(
                sample_id,
                f"v{view}",
                path,
                label=classes[utterance_label(utterance)],
                split=sample_split,
                speaker=f"s{speaker}",
                meta={"utterance": utterance, "repetition": (utterance - 1) % 3 + 1},
            )
    log.debug("ouluvs2: %d files outside the selected views and %s utterances", unselected, subset)
    info = {
        "subset": subset,
        "split": definition.name,
        "split_description": definition.description,
        "split_source": definition.source,
        "view_angles": {f"v{v}": VIEW_ANGLES[v] for v in wanted},
    }
    if cropped and all(cropped):
        info["roi"] = "frame"
        info["roi_reason"] = (
            "the cropped-mouth release holds mouth-only clips: whole frames are resized, no face detection"
        )
        log.info("ouluvs2: cropped-mouth release found: ROIs are the whole frames (--roi frame), no face detection")
    layout = "files named s<speaker>_v<view>_u<utterance>.mp4, e.g. cropped_mouth_mp4_phrase/1/1/s1_v1_u31.mp4"
    return finish("ouluvs2", base, collector, classes=classes, info=info, layout=layout)


def _in_cropped_release(path: Path) -> bool:
    """Whether a file lies in one of the cropped-mouth release folders (``cropped_mouth_mp4_phrase``, ``..._digit``)."""
    return any(part.lower().startswith("cropped_mouth") for part in path.parts)


def _parse_views(views: Sequence[int | str]) -> list[int]:
    """View numbers from ``[1, 3, 5]`` or ``["v1", "v3"]``, checked against 1..5, in ascending order."""
    parsed = set()
    for view in views:
        text = str(view).strip().lower().removeprefix("v")
        if not text.isdigit() or int(text) not in VIEW_ANGLES:
            raise RecipeError(f"OuluVS2 perspectives are its views 1..5 (or v1..v5), got {view!r}")
        parsed.add(int(text))
    if not parsed:
        raise RecipeError("select at least one OuluVS2 view")
    return sorted(parsed)
