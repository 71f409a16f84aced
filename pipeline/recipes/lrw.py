"""LRW (Lip Reading in the Wild, 500 words) as distributed.

Layout: ``<WORD>/{train,val,test}/<WORD>_<5 digits>.mp4`` (+ ``.txt``).

Clips are pre-aligned 256x256, 29 frames; each sample's meta carries the fixed mouth box ``[x0, y0, x1, y1]`` that
the common recipe crops (x 59..195, y 95..231) and the path of its ``.txt`` metadata file when present. ``prepare``
stores that box with a 5 px margin (146x146, the manifest's ``fixed_box``) so that ``train --augment lrw`` can shift
the 136 px box by up to 5 px inside the frame as Kim et al. do; evaluation takes the centred 136 px box.
"""

from __future__ import annotations

import re
from typing import Sequence

from pipeline.manifest import Manifest, natural_sorted
from pipeline.recipes.common import RecipeError, SampleCollector, StrPath, dataset_root, finish, safe_id, subfolders

FIXED_BOX = (59, 95, 195, 231)  # x0, y0, x1, y1 in the 256x256 frame: the authors' 136 px mouth box
SHIFT_MARGIN = 5  # the box is stored with this margin so that training can shift it by up to +-5 px inside the frame
STORED_BOX = (
    FIXED_BOX[0] - SHIFT_MARGIN,
    FIXED_BOX[1] - SHIFT_MARGIN,
    FIXED_BOX[2] + SHIFT_MARGIN,
    FIXED_BOX[3] + SHIFT_MARGIN,
)
FRAMES = 29
SPLIT_FOLDERS = ("train", "val", "test")


def prepare_lrw(
    root: StrPath,
    *,
    words: Sequence[str] | None = None,
    max_words: int | None = None,
    splits: Sequence[str] = SPLIT_FOLDERS,
) -> Manifest:
    """Manifest of LRW: one perspective ``v1``, label = word, classes sorted, split from the folder.

    ``words`` picks words by name; ``max_words`` keeps the first N (alphabetically) of those; ``splits`` limits
    which split folders are read.
    """
    base = dataset_root(root)
    unknown_splits = set(splits) - set(SPLIT_FOLDERS)
    if unknown_splits:
        raise RecipeError(f"LRW splits are {SPLIT_FOLDERS}, got {sorted(unknown_splits)}")
    available = {p.name: p for p in subfolders(base) if any((p / s).is_dir() for s in SPLIT_FOLDERS)}
    chosen = natural_sorted(available) if words is None else natural_sorted({w.strip().upper() for w in words})
    missing = [w for w in chosen if w not in available]
    if missing:
        raise RecipeError(f"LRW words not found under {base}: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if max_words is not None:
        chosen = chosen[:max_words]
    collector = SampleCollector(base, ["v1"])
    for word in chosen:
        name_pattern = re.compile(rf"{re.escape(word)}_\d{{5}}")
        for split in (s for s in SPLIT_FOLDERS if s in splits):
            folder = available[word] / split
            if not folder.is_dir():
                continue
            for video in natural_sorted(p.name for p in folder.glob("*.mp4")):
                path = folder / video
                sample_id = safe_id(split, path.stem)
                if not name_pattern.fullmatch(path.stem):
                    collector.reject(
                        sample_id,
                        f"unexpected file name (want {word}_<5 digits>.mp4)",
                        path.relative_to(base).as_posix(),
                    )
                    continue
                meta = {"fixed_box": list(FIXED_BOX), "frames": FRAMES}
                if path.with_suffix(".txt").is_file():
                    meta["metadata"] = path.with_suffix(".txt").relative_to(base).as_posix()
                collector.add(sample_id, "v1", path, label=word, split=split, meta=meta)
    info = {
        "fixed_box": list(STORED_BOX),
        "mouth_box": list(FIXED_BOX),
        "shift_margin": SHIFT_MARGIN,
        "frames": FRAMES,
        "words": len(chosen),
    }
    return finish(
        "lrw", base, collector, classes=chosen, info=info, layout="<WORD>/{train,val,test}/<WORD>_<5 digits>.mp4"
    )
