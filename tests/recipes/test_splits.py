"""Split definitions shipped for OuluVS2, and seeded, stratified, speaker-disjoint split assignment."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from pipeline.manifest import SPLITS, Sample, Source
from pipeline.recipes.splits import assign_splits, load_split_definition

OULU_TEST = {"6", "8", "9", "15", "26", "30", "34", "43", "44", "49", "51", "52"}
OULU_VAL = {"4", "5", "7", "14", "16", "17", "28", "31", "32", "40", "41", "42"}
OULU_ALL = {str(s) for s in range(1, 54)} - {"29"}


def make_samples(n_speakers: int, labels: int, per_label: int, with_speakers: bool = True) -> list[Sample]:
    """``n_speakers`` speakers each saying every label ``per_label`` times."""
    return [
        Sample(
            id=f"s{s}_l{lab}_r{r}",
            sources={"v1": Source(f"s{s}_l{lab}_r{r}.mp4")},
            label=f"c{lab}",
            speaker=f"s{s}" if with_speakers else None,
        )
        for s in range(n_speakers)
        for lab in range(labels)
        for r in range(per_label)
    ]


def test_speaker_independent_definition():
    d = load_split_definition("ouluvs2_speaker_independent")
    assert set(d.speakers["test"]) == OULU_TEST
    assert len(d.speakers["train"]) == 40 and not d.speakers["val"]
    assert set(d.speakers["train"]) | OULU_TEST == OULU_ALL
    assert "29" in d.excluded and d.split_of("29") is None
    assert d.split_of("6") == "test" and d.split_of("1") == "train"
    assert d.source and d.description


def test_28_12_12_definition():
    d = load_split_definition("ouluvs2_28_12_12")
    assert (len(d.speakers["train"]), len(d.speakers["val"]), len(d.speakers["test"])) == (28, 12, 12)
    assert set(d.speakers["val"]) == OULU_VAL and set(d.speakers["test"]) == OULU_TEST
    assert set().union(*map(set, d.speakers.values())) == OULU_ALL
    assert set(d.excluded) == {"29"}


def test_definition_from_path_and_validation(tmp_path):
    good = tmp_path / "mine.json"
    good.write_text(json.dumps({"speakers": {"train": ["a"], "test": ["b"]}}))
    assert load_split_definition(good).split_of("b") == "test"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"speakers": {"train": ["a"], "test": ["a"]}}))
    with pytest.raises(ValueError, match="more than once"):
        load_split_definition(bad)
    with pytest.raises(FileNotFoundError, match="no_such_split"):
        load_split_definition("no_such_split")


def test_assignment_is_deterministic_and_seeded():
    samples = make_samples(20, 4, 2)
    first = [s.split for s in assign_splits(samples, seed=3)]
    assert first == [s.split for s in assign_splits(list(reversed(samples)), seed=3)][::-1]
    assert first == [s.split for s in assign_splits(samples, seed=3)]
    assert first != [s.split for s in assign_splits(samples, seed=4)]
    assert all(s.split is None for s in samples)  # inputs untouched


def test_assignment_is_speaker_disjoint_stratified_and_sized():
    samples = make_samples(40, 5, 2)
    out = assign_splits(samples, fractions=(0.7, 0.15, 0.15), seed=0)
    by_speaker: dict[str, set] = {}
    for s in out:
        by_speaker.setdefault(s.speaker, set()).add(s.split)
    assert all(len(v) == 1 for v in by_speaker.values())
    speakers = Counter(next(iter(v)) for v in by_speaker.values())
    assert speakers == {"train": 28, "val": 6, "test": 6}
    for split in SPLITS:
        assert {s.label for s in out if s.split == split} == {f"c{lab}" for lab in range(5)}


def test_assignment_stratifies_samples_without_speakers():
    samples = make_samples(1, 4, 20, with_speakers=False)
    out = assign_splits(samples, fractions=(0.5, 0.25, 0.25), seed=1)
    counts = Counter((s.split, s.label) for s in out)
    for lab in range(4):
        assert (counts["train", f"c{lab}"], counts["val", f"c{lab}"], counts["test", f"c{lab}"]) == (10, 5, 5)


def test_every_split_non_empty_when_possible_and_zero_fraction_respected():
    out = assign_splits(make_samples(3, 2, 1), fractions=(0.9, 0.05, 0.05), seed=0)
    assert Counter(s.split for s in out).keys() == set(SPLITS)
    out = assign_splits(make_samples(10, 2, 1), fractions=(0.8, 0.0, 0.2), seed=0)
    assert "val" not in {s.split for s in out}


def test_bad_fractions_refused():
    with pytest.raises(ValueError, match="fractions"):
        assign_splits(make_samples(2, 1, 1), fractions=(0.5, 0.5, 0.5))
