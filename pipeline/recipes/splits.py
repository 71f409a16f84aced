"""Train/val/test splits: the shipped speaker-list definitions, and seeded, stratified, speaker-disjoint assignment."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from pipeline.errors import ConfigError
from pipeline.execution.logs import get_logger
from pipeline.manifest import SPLITS, Sample, natural_sorted

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

log = get_logger(__name__)

SPLIT_FILES = "pipeline.recipes.split_files"  # the installed copy of the checkout's manifests/ folder (setup.cfg)
CHECKOUT_SPLIT_FILES = Path(__file__).resolve().parents[2] / "manifests"  # a plain checkout, not installed


@dataclass(frozen=True)
class SplitDefinition:
    """A published split: which speakers go to train, val and test.

    Also which are excluded and why, and where it comes from.
    """

    name: str
    description: str
    source: str
    speakers: dict[str, tuple[str, ...]]  # split -> speaker ids
    excluded: dict[str, str]  # speaker id -> reason

    def split_of(self, speaker: str) -> str | None:
        """The split a speaker belongs to, or ``None`` when the definition does not list it."""
        for split, members in self.speakers.items():
            if speaker in members:
                return split
        return None

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str) -> "SplitDefinition":
        """Validate a definition read from JSON: known split names, no speaker listed twice."""
        speakers = {k: tuple(str(s) for s in v) for k, v in data.get("speakers", {}).items()}
        unknown = set(speakers) - set(SPLITS)
        if unknown:
            raise ConfigError(f"split definition {name!r}: unknown split(s) {sorted(unknown)}")
        excluded = {str(k): str(v) for k, v in data.get("excluded", {}).items()}
        seen = Counter([s for members in speakers.values() for s in members] + list(excluded))
        twice = natural_sorted(s for s, n in seen.items() if n > 1)
        if twice:
            raise ConfigError(f"split definition {name!r}: speaker(s) {twice} listed more than once")
        return cls(data.get("name", name), data.get("description", ""), data.get("source", ""), speakers, excluded)


def shipped_split_files() -> Traversable:
    """The folder of the split definitions shipped with mpview: package data when installed, else the checkout's."""
    try:
        return resources.files(SPLIT_FILES)
    except ModuleNotFoundError:
        return CHECKOUT_SPLIT_FILES


def load_split_definition(name: str | Path) -> SplitDefinition:
    """Load a shipped split definition by name (``ouluvs2_speaker_independent``) or a JSON file by path."""
    path = Path(name)
    candidate = path if path.suffix == ".json" else shipped_split_files() / f"{name}.json"
    if not candidate.is_file():
        raise FileNotFoundError(f"split definition {str(name)!r} not found (no file {candidate})")
    return SplitDefinition.from_dict(json.loads(candidate.read_text(encoding="utf-8")), str(name))


def assign_splits(
    samples: Sequence[Sample],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    by_speaker: bool = True,
    speaker_hint: str = "",
) -> list[Sample]:
    """Copies of ``samples`` with ``split`` set: seeded, stratified by label, speaker-disjoint when speakers are known.

    Asked for ``by_speaker`` with no speaker known, the split is by clip and says so with a warning (test clips may
    share speakers with training), ending with ``speaker_hint``: how this dataset's recipe could learn the speakers.

    Samples are grouped by speaker (``by_speaker`` and a speaker given) or each stands alone; groups are visited in a
    seeded order, largest first, and each goes to the split whose per-label counts lag their targets
    (``fraction * label count``) the most. Every split with a positive fraction gets at least one group when there
    are enough groups. The result depends only on the samples' ids, labels, speakers and on ``seed``.
    """
    fractions = _check_fractions(fractions)
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        key = f"speaker:{sample.speaker}" if by_speaker and sample.speaker is not None else f"sample:{sample.id}"
        groups[key].append(sample)
    order = natural_sorted(groups)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda k: -len(groups[k]))  # stable: ties keep the seeded order

    totals = Counter(s.label for s in samples)
    active = [i for i, f in enumerate(fractions) if f > 0]
    counts = [Counter() for _ in SPLITS]
    placed: dict[str, int] = {}
    for key in order:
        labels = Counter(s.label for s in groups[key])
        best = max(
            active,
            key=lambda i: (sum(n * (fractions[i] * totals[lab] - counts[i][lab]) for lab, n in labels.items()), -i),
        )
        counts[best].update(labels)
        placed[key] = best
    _fill_empty_splits(placed, groups, active)

    split_of = {s.id: SPLITS[placed[k]] for k, members in groups.items() for s in members}
    out = [dataclasses.replace(s, split=split_of[s.id]) for s in samples]
    sizes = Counter(s.split for s in out)
    unknown = sum(1 for s in samples if s.speaker is None)
    if by_speaker and samples and unknown == len(samples):
        log.warning(
            "assigned splits by clip, not by speaker: no sample has a speaker, so test clips may share "
            "speakers with training%s",
            f" ({speaker_hint})" if speaker_hint else "",
        )
    elif by_speaker and unknown:
        log.warning(
            "%d of %d samples have no speaker: each is split on its own and may share a speaker with training clips%s",
            unknown,
            len(samples),
            f" ({speaker_hint})" if speaker_hint else "",
        )
    how = "by speaker" if by_speaker and unknown < len(samples) else "by clip"
    log.info("assigned splits (seed %d, %s): %s", seed, how, dict(sizes))
    return out


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    """Validate train/val/test fractions (three, non-negative, summing to 1) and return them as a tuple."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != len(SPLITS) or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(
            f"fractions must be three non-negative numbers summing to 1 (train, val, test), got {fractions}"
        )
    return fractions


def _fill_empty_splits(placed: dict[str, int], groups: dict[str, list[Sample]], active: list[int]) -> None:
    """Move the smallest group of the most populated split into each empty active split, while groups allow."""
    for empty in active:
        members = Counter(placed.values())
        if members[empty]:
            continue
        donor = max(active, key=lambda i: (members[i], -i))
        if members[donor] < 2:
            return
        candidates = [
            k for k, i in placed.items() if i == donor
        ]  # in visiting order, so ties resolve deterministically
        placed[min(candidates, key=lambda k: len(groups[k]))] = empty


def carve_validation(samples: Sequence[Sample], fraction: float = 0.15, seed: int = 0) -> list[Sample]:
    """Copies of ``samples`` where a seeded, stratified, speaker-disjoint ``fraction`` of the training split becomes
    ``val``; for splits that define no validation set (OuluVS2's speaker-independent protocol). Others are unchanged.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"the validation fraction must be in (0, 1), got {fraction}")
    train = [s for s in samples if s.split == "train"]
    if len(train) < 2:
        raise ConfigError(f"cannot carve a validation set from {len(train)} training sample(s)")
    carved = {s.id: s for s in assign_splits(train, fractions=(1.0 - fraction, fraction, 0.0), seed=seed)}
    return [carved.get(s.id, s) for s in samples]
