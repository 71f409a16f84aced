"""Light-field faces (LFFW / LFFC): horizontal and vertical viewpoint sequences.

They come as folders or from raw sub-aperture grids.

Two layouts:

* :func:`prepare_lightfield`: ``{Train,Validation,Test}/{Hor,Ver}/<subject>/<sequence>``, a sequence being a video file
  or a folder of images; a sample is a subject and sequence name present under both ``Hor`` and ``Ver``.
* :func:`prepare_lightfield_grid`: one folder per capture holding its grid of sub-aperture images, named with a row
  and a column number (``07_03.png``, ``r07_c03.png``, ``img_07_03.png``). Row numbers grow downwards and column
  numbers rightwards; the horizontal sequence is one row read left to right, the vertical one column read top to
  bottom.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Sequence

from pipeline.execution.logs import get_logger
from pipeline.manifest import Manifest, Source
from pipeline.recipes.common import (
    IMAGE_EXTENSIONS,
    RecipeError,
    SampleCollector,
    StrPath,
    complete_splits,
    dataset_root,
    finish,
    relative_path,
    safe_id,
    sequence_entries,
    sequence_name,
    split_of_folder,
    subfolders,
)

log = get_logger(__name__)

SEQUENCES = ("hor", "ver")
DIRECTIONS = {
    "hor": "hor",
    "horizontal": "hor",
    "ver": "ver",
    "vertical": "ver",
}  # folder or option name -> perspective
GRID_PATTERN = r"\D*(?P<row>\d+)\D+(?P<col>\d+)"  # matched against the whole file stem
_DIRECTION_TOKEN = re.compile(r"(?:^|[_\-. ])(?:hor|ver|horizontal|vertical)(?=$|[_\-. ])", re.IGNORECASE)


def prepare_lightfield(root: StrPath, *, perspectives: Sequence[str] = SEQUENCES) -> Manifest:
    """Manifest of a ``{Train,Validation,Test}/{Hor,Ver}/<subject>/<sequence>`` tree; label = subject folder.

    Sequences are matched across ``Hor`` and ``Ver`` by split, subject and name; a ``hor``/``ver`` token in the name
    (``01_hor.mp4`` / ``01_ver.mp4``) is ignored for matching.
    """
    base = dataset_root(root)
    perspectives = _parse_sequences(perspectives)
    collector = SampleCollector(base, perspectives)
    for split_folder in subfolders(base):
        split = split_of_folder(split_folder.name)
        if split is None:
            log.warning("lightfield: ignoring %s (not a Train/Validation/Test folder)", split_folder)
            continue
        for direction in subfolders(split_folder):
            perspective = DIRECTIONS.get(direction.name.lower())
            if perspective is None:
                log.warning("lightfield: ignoring %s (not a Hor/Ver folder)", direction)
                continue
            if perspective not in perspectives:
                continue
            for subject in subfolders(direction):
                for entry in sequence_entries(subject):
                    key = _DIRECTION_TOKEN.sub("", sequence_name(entry)) or sequence_name(entry)
                    collector.add(
                        safe_id(split, subject.name, key), perspective, entry, label=subject.name, split=split
                    )
    layout = "{Train,Validation,Test}/{Hor,Ver}/<subject>/<sequence>"
    return finish("lightfield", base, collector, info={"layout": "folders"}, layout=layout)


def prepare_lightfield_grid(
    root: StrPath,
    *,
    perspectives: Sequence[str] = SEQUENCES,
    row: int | None = None,
    column: int | None = None,
    n_views: int | None = None,
    border: int = 0,
    pattern: str = GRID_PATTERN,
    labels: StrPath | None = None,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> Manifest:
    """Manifest of raw sub-aperture grids.

    Per capture, the chosen row (``hor``) and column (``ver``) as image sequences.

    ``row`` / ``column`` are numbers as written in the file names (default: the central ones); ``border`` drops that
    many outer rings of (vignetted) views; ``n_views`` keeps that many views centred on the middle. ``pattern`` is a
    regular expression with groups ``row`` and ``col`` that must match a file's whole stem. The label is the capture
    folder's parent folder, or comes from ``labels``: a CSV (path relative to the root or absolute) with columns
    ``capture`` (folder name or path relative to the root), ``label`` and optionally ``split``. Splits come from
    Train/Validation/Test folders or the CSV; when no capture has one they are assigned (seeded, stratified by label)
    with ``fractions`` and ``seed``.
    """
    base = dataset_root(root)
    perspectives = _parse_sequences(perspectives)
    regex = re.compile(pattern)
    if not {"row", "col"} <= set(regex.groupindex):
        raise RecipeError(f"grid pattern {pattern!r} must have named groups 'row' and 'col'")
    if border < 0 or (n_views is not None and n_views < 1):
        raise RecipeError("border must be >= 0 and n_views >= 1")
    table = _read_labels(base, labels) if labels is not None else {}
    collector = SampleCollector(base, perspectives)
    for capture, grid in _find_grids(base, regex):
        rel = relative_path(collector.root_real, capture)
        sample_id = safe_id(*rel.split("/"))
        label, split = _capture_label(capture, rel, table)
        if label is None:
            collector.reject(sample_id, "no label (no labels CSV entry and no parent folder)", rel)
            continue
        rows, cols = sorted({r for r, _ in grid}), sorted({c for _, c in grid})
        try:
            chosen = select_views(rows, cols, row=row, column=column, n_views=n_views, border=border)
        except ValueError as exc:
            collector.reject(sample_id, str(exc), rel)
            continue
        missing = [rc for p in perspectives for rc in chosen[p] if rc not in grid]
        if missing:
            collector.reject(
                sample_id, f"missing grid view(s) {', '.join(f'row {r} col {c}' for r, c in missing)}", rel
            )
            continue
        meta = {"row": chosen["row"], "column": chosen["column"], "grid": [len(rows), len(cols)]}
        for perspective in perspectives:
            frames = [relative_path(collector.root_real, grid[rc]) for rc in chosen[perspective]]
            collector.add(
                sample_id, perspective, Source(rel, kind="images", frames=frames), label=label, split=split, meta=meta
            )
    samples = complete_splits(collector, fractions=fractions, seed=seed, by_speaker=False)
    info = {"layout": "grid", "row": row, "column": column, "n_views": n_views, "border": border, "pattern": pattern}
    return finish("lightfield", base, collector, info=info, samples=samples, layout="<capture>/<row>_<col>.png grids")


def select_views(
    rows: list[int],
    cols: list[int],
    *,
    row: int | None = None,
    column: int | None = None,
    n_views: int | None = None,
    border: int = 0,
) -> dict[str, Any]:
    """Grid positions of the horizontal (``hor``) and vertical (``ver``) sequences.

    Also the ``row`` and ``column`` used.

    ``rows`` and ``cols`` are the grid's row and column numbers in ascending order; ``ValueError`` explains a selection
    the grid cannot give.
    """
    inner_rows, inner_cols = rows[border : len(rows) - border], cols[border : len(cols) - border]
    if not inner_rows or not inner_cols:
        raise ValueError(f"border {border} leaves no views of a {len(rows)}x{len(cols)} grid")
    row = inner_rows[(len(inner_rows) - 1) // 2] if row is None else row
    column = inner_cols[(len(inner_cols) - 1) // 2] if column is None else column
    if row not in inner_rows or column not in inner_cols:
        raise ValueError(
            f"row {row} / column {column} not among rows {inner_rows} / columns {inner_cols} (border {border})"
        )
    hor = [(row, c) for c in _centred(inner_cols, n_views)]
    ver = [(r, column) for r in _centred(inner_rows, n_views)]
    return {"hor": hor, "ver": ver, "row": row, "column": column}


def _centred(values: list[int], n: int | None) -> list[int]:
    """``n`` consecutive values centred in ``values`` (all of them when ``n`` is ``None``)."""
    if n is None:
        return values
    if n > len(values):
        raise ValueError(f"{n} views requested but only {len(values)} available")
    start = (len(values) - n) // 2
    return values[start : start + n]


def _find_grids(base: Path, regex: re.Pattern[str]) -> list[tuple[Path, dict[tuple[int, int], Path]]]:
    """Every folder under ``base`` holding images whose stems match ``regex``, with its (row, col) -> file map."""
    grids = []
    folders = [
        p for p in base.rglob("*") if p.is_dir() and not any(part.startswith(".") for part in p.relative_to(base).parts)
    ]
    for folder in [base, *sorted(folders)]:
        grid: dict[tuple[int, int], Path] = {}
        for path in folder.iterdir():
            match = regex.fullmatch(path.stem) if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file() else None
            if match:
                grid[(int(match["row"]), int(match["col"]))] = path
        if grid:
            grids.append((folder, grid))
    return grids


def _capture_label(capture: Path, rel: str, table: dict[str, tuple[str, str | None]]) -> tuple[str | None, str | None]:
    """(label, split) of a capture: the labels table's, else its parent folder and any split folder above it."""
    parents = rel.split("/")[:-1]
    folder_split = next((split_of_folder(p) for p in parents if split_of_folder(p)), None)
    if table:
        label, split = table.get(rel) or table.get(capture.name) or (None, None)
        return label, split or folder_split
    label = parents[-1] if parents and split_of_folder(parents[-1]) is None else None
    return label, folder_split


def _read_labels(base: Path, labels: StrPath) -> dict[str, tuple[str, str | None]]:
    """capture -> (label, split) from a CSV with columns capture, label and optionally split."""
    path = Path(labels) if Path(labels).is_absolute() else base / labels
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"capture", "label"} <= set(rows[0]):
        raise RecipeError(f"{path}: a labels CSV needs columns 'capture' and 'label' (has {list(rows[0])})")
    return {r["capture"].strip().strip("/"): (r["label"].strip(), split_of_folder(r.get("split") or "")) for r in rows}


def _parse_sequences(sequences: Sequence[str]) -> list[str]:
    """Perspective names from ``("hor", "ver")`` or a subset, refusing anything else."""
    names = [DIRECTIONS.get(str(s).strip().lower()) for s in sequences]
    if not names or None in names:
        raise RecipeError(
            f"perspectives (viewpoint sequences) must be a non-empty subset of {SEQUENCES}, got {list(sequences)}"
        )
    return [s for s in SEQUENCES if s in names]
