"""Any multi-perspective dataset, from a folder tree or from a CSV / JSON Lines listing.

Folder tree: ``<root>/[<split>/]<view>/<class>/<clip>``. The split level is optional (``train``/``val``/``test`` or
``Train``/``Validation``/``Test``); a clip is a video file or a folder of images, matched across views by split,
class and name.

Listing (``listing=`` a ``.csv`` or ``.jsonl`` file; paths in it are relative to the root). Columns / keys:

* ``id`` and ``label`` (required: a listing without them is refused, a row with an empty one is a per-row problem),
  ``speaker``, ``split`` (optional; split values as for folders);
* the sources in one of three forms: wide, one column ``path:<view>`` per perspective; long, columns ``view`` and
  ``path`` with one row per perspective and rows sharing an ``id``; or a single ``path`` column (perspective ``v1``).
  A JSON Lines record may instead carry ``"paths": {"<view>": "<path>", ...}``.

When no sample has a split, splits are assigned (seeded, stratified by label, speaker-disjoint when speakers are known).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

from pipeline.manifest import Manifest, natural_sorted, parse_json_object
from pipeline.recipes.common import (
    RecipeError,
    SampleCollector,
    StrPath,
    complete_splits,
    dataset_root,
    finish,
    safe_id,
    sequence_entries,
    sequence_name,
    split_of_folder,
    subfolders,
)

SINGLE_VIEW = "v1"
LAYOUT = "<root>/[<split>/]<view>/<class>/<clip>, or a CSV/JSONL listing"


def prepare_generic(
    root: StrPath,
    *,
    listing: StrPath | None = None,
    perspectives: Sequence[str] | None = None,
    speaker_pattern: str | None = None,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> Manifest:
    """Manifest of a generic folder tree, or of a CSV/JSONL ``listing``; ``perspectives`` picks some (default all).

    ``speaker_pattern`` (folder tree only) is a regular expression with a group ``speaker`` searched in each clip name,
    so that assigned splits keep speakers apart; ``fractions`` and ``seed`` control assigned splits.
    """
    base = dataset_root(root)
    rows = _folder_rows(base, speaker_pattern) if listing is None else _listing_rows(base, Path(listing))
    available = natural_sorted({view for row in rows for view in row["paths"]})
    if not available:
        raise RecipeError(f"generic: no clips under {base} (expected {LAYOUT})")
    asked = perspectives
    perspectives = available if asked is None else [str(v) for v in asked]
    unknown = [v for v in perspectives if v not in available]
    if unknown or not perspectives:
        raise RecipeError(f"perspectives (views) {unknown or list(asked or [])} not found; the dataset has {available}")
    collector = SampleCollector(base, perspectives)
    for row in rows:
        if row.get("error"):
            collector.reject(row["id"], row["error"], row.get("where"))
            continue
        for view, path in row["paths"].items():
            if view in perspectives:
                fields = {k: row.get(k) for k in ("label", "split", "speaker")}
                collector.add(row["id"], view, base / path, **fields)
    hint = (
        "give the listing a speaker column"
        if listing is not None
        else "pass --option speaker_pattern=REGEX, a regular expression with a group (?P<speaker>...) found in clip "
        "names"
    )
    samples = complete_splits(collector, fractions=fractions, seed=seed, by_speaker=True, speaker_hint=hint)
    info = {"layout": "folders" if listing is None else f"listing {Path(listing).as_posix()}"}
    return finish("generic", base, collector, info=info, samples=samples, layout=LAYOUT)


def _folder_rows(base: Path, speaker_pattern: str | None) -> list[dict[str, Any]]:
    """One row per clip of a ``[<split>/]<view>/<class>/<clip>`` tree."""
    speaker_regex = re.compile(speaker_pattern) if speaker_pattern else None
    if speaker_regex is not None and "speaker" not in speaker_regex.groupindex:
        raise RecipeError(f"speaker_pattern {speaker_pattern!r} needs a named group 'speaker'")
    top = subfolders(base)
    split_names = [split_of_folder(f.name) for f in top]
    if any(split_names) and not all(split_names):
        raise RecipeError(f"{base}: mixes split folders and other folders: {[f.name for f in top]}")
    levels = list(zip(split_names, top)) if any(split_names) else [(None, base)]
    rows = []
    for split, split_folder in levels:
        for view in subfolders(split_folder):
            for label in subfolders(view):
                for clip in sequence_entries(label):
                    name = sequence_name(clip)
                    match = speaker_regex.search(name) if speaker_regex else None
                    rows.append(
                        {
                            "id": safe_id(*([split] if split else []), label.name, name),
                            "label": label.name,
                            "split": split,
                            "speaker": match["speaker"] if match else None,
                            "paths": {view.name: clip.relative_to(base).as_posix()},
                        }
                    )
    return rows


def _listing_rows(base: Path, listing: Path) -> list[dict[str, Any]]:
    """Rows of a CSV or JSONL listing in a common shape: id, label, split, speaker, paths (view -> path), error."""
    path = listing if listing.is_absolute() else base / listing
    if not path.is_file():
        raise RecipeError(f"listing {path} not found")
    records = _read_jsonl(path) if path.suffix.lower() in (".jsonl", ".json") else _read_csv(path)
    rows = []
    for number, record in records:
        record = {str(k).strip(): v for k, v in record.items()}
        where = f"{path.name}:{number}"
        sample_id = _text(record.get("id"))
        if sample_id is None:
            rows.append({"id": f"{path.name}:{number}", "error": "row without an id", "where": where, "paths": {}})
            continue
        if _text(record.get("label")) is None:
            rows.append({"id": sample_id, "error": "row without a label", "where": where, "paths": {}})
            continue
        split_text = _text(record.get("split"))
        row = {
            "id": sample_id,
            "label": _text(record.get("label")),
            "speaker": _text(record.get("speaker")),
            "split": split_of_folder(split_text) if split_text else None,
            "paths": _record_paths(record),
            "where": where,
        }
        if split_text and row["split"] is None:
            row["error"] = f"unknown split {split_text!r}"
        elif not row["paths"]:
            row["error"] = "no path given (want path:<view> columns, view + path, or path)"
        rows.append(row)
    return rows


def _record_paths(record: dict[str, Any]) -> dict[str, str]:
    """view -> path of one listing record, from ``path:<view>`` keys, ``view`` + ``path``, ``path`` or ``paths``."""
    paths = {k.split(":", 1)[1].strip(): _text(v) for k, v in record.items() if k.startswith("path:")}
    if isinstance(record.get("paths"), dict):
        paths.update({str(k): _text(v) for k, v in record["paths"].items()})
    if _text(record.get("path")):
        paths[_text(record.get("view")) or SINGLE_VIEW] = _text(record["path"])
    return {view: p for view, p in paths.items() if p}


def _text(value: Any) -> str | None:
    """A stripped string, or ``None`` for missing and empty values."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of a CSV file with a header line that has the ``id`` and ``label`` columns."""
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    columns = [str(name).strip() for name in reader.fieldnames or []]
    missing = [name for name in ("id", "label") if name not in columns]
    if missing:
        raise RecipeError(
            f"{path}:1: listing has no {' or '.join(repr(m) for m in missing)} column (its header: "
            f"{', '.join(columns) or 'none'}); see the generic recipe's listing columns"
        )
    for row in reader:
        yield reader.line_num, row


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of a JSON Lines file, blank lines skipped."""
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        yield number, parse_json_object(path, number, line, RecipeError)


def _read_text(path: Path) -> str:
    """A listing's text; bytes that are not UTF-8 are refused naming the line and column."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise RecipeError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {column}); save the listing as UTF-8"
        ) from None
