"""Manifest records: round trip, validation errors naming the line, path containment."""

from __future__ import annotations

import json

import pytest

from pipeline.manifest import Manifest, ManifestError, Sample, Source, resolve_inside


def _manifest(root) -> Manifest:
    samples = [
        Sample(
            id=f"s{i}",
            sources={"v1": Source(f"v1/{i}.mp4"), "v2": Source(f"v2/{i}.mp4")},
            label=str(i % 2),
            split="train",
            speaker="a",
        )
        for i in range(3)
    ]
    return Manifest(dataset="toy", root=str(root), perspectives=["v1", "v2"], samples=samples, classes=["0", "1"])


def test_round_trip_preserves_records(tmp_path):
    manifest = _manifest(tmp_path)
    manifest.samples[0].stages["prepare"] = {"status": "done", "shard": "roi/x.h5"}
    manifest.add_run("prepare", {"size": 96}, {"done": 3}, 1.0, 2.0)
    path = tmp_path / "manifest.jsonl"
    manifest.save(path)
    loaded = Manifest.load(path)
    assert loaded.dumps() == manifest.dumps()
    assert loaded.samples[0].status("prepare") == "done"
    assert loaded.samples[1].status("prepare") is None
    assert loaded.runs[0]["environment"]["packages"]["mpview"]


def test_corrupt_line_is_named(tmp_path):
    path = tmp_path / "manifest.jsonl"
    _manifest(tmp_path).save(path)
    lines = path.read_text().splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=r"manifest.jsonl:3: invalid JSON"):
        Manifest.load(path)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("sources"), "lacks field"),
        (lambda r: r.update(split="training"), "'split' must be one of"),
        (lambda r: r.update(sources={"v9": "x.mp4"}), "not in header"),
        (lambda r: r.update(id=""), "non-empty"),
    ],
)
def test_invalid_records_are_refused(tmp_path, mutate, message):
    path = tmp_path / "manifest.jsonl"
    _manifest(tmp_path).save(path)
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    mutate(record)
    lines[1] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=message) as info:
        Manifest.load(path)
    assert ":2:" in str(info.value)


def test_duplicate_ids_and_bad_header(tmp_path):
    path = tmp_path / "manifest.jsonl"
    _manifest(tmp_path).save(path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(ManifestError, match="duplicate sample id"):
        Manifest.load(path)
    path.write_text('{"schema": "other"}\n')
    with pytest.raises(ManifestError, match="not an mpview-manifest header"):
        Manifest.load(path)
    with pytest.raises(ManifestError, match="no manifest here"):
        Manifest.load(tmp_path / "absent.jsonl")


def test_sources_outside_root_are_refused(tmp_path):
    (tmp_path / "data").mkdir()
    assert resolve_inside(tmp_path / "data", "a b/ü.mp4").name == "ü.mp4"
    for bad in ("../secret.mp4", "/etc/passwd", "x/../../y.mp4"):
        with pytest.raises(ManifestError, match="outside the dataset root"):
            resolve_inside(tmp_path / "data", bad)
    (tmp_path / "data" / "link").symlink_to(tmp_path)
    with pytest.raises(ManifestError, match="outside"):
        resolve_inside(tmp_path / "data", "link/x.mp4")


def test_save_is_atomic_on_failure(tmp_path):
    path = tmp_path / "manifest.jsonl"
    manifest = _manifest(tmp_path)
    manifest.save(path)
    before = path.read_bytes()
    manifest.samples.append(manifest.samples[0])
    with pytest.raises(ManifestError, match="duplicate"):
        manifest.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.jsonl"]
