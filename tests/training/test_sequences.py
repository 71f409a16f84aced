"""load_split: the same padded arrays from HDF5 and TFRecord shards; failures skipped; masks right."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from pipeline.manifest import Manifest, Sample, Source
from pipeline.storage.readers import open_writer
from pipeline.storage.shards import ShardError
from pipeline.training.sequences import load_split

FRAMES = {"s0": 3, "s1": 8, "s2": 5, "s3": 4, "s4": 6, "s5": 2}


def _arrays(sample_id: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(int(sample_id[1:]))
    n = FRAMES[sample_id]
    return {
        "v1": rng.normal(size=(n, 4)).astype(np.float16),
        "v2": rng.normal(size=(n, 3)).astype(np.float32),
        "roi": rng.integers(0, 256, (n, 6, 5), dtype=np.uint8),
        "rgb": rng.integers(0, 256, (n, 6, 5, 3), dtype=np.uint8),
    }


def _stage(tmp_path, suffix: str) -> Manifest:
    """A manifest whose stage 'extract' wrote two shards: s3 failed, s4 never ran, s5 has no label."""
    work = tmp_path / suffix.strip(".")
    samples = [
        Sample(
            id=i,
            sources={"v1": Source(f"{i}.mp4")},
            label=None if i == "s5" else ("bin" if i in ("s0", "s2") else "lay"),
            split="train",
            speaker=f"p{i[1]}",
        )
        for i in FRAMES
    ]
    samples.append(Sample(id="t0", sources={"v1": Source("t0.mp4")}, label="bin", split="test"))
    manifest = Manifest("toy", str(tmp_path), ["v1", "v2"], samples, classes=["bin", "lay"])
    by_id = manifest.by_id()
    for index, group in enumerate((["s0", "s1", "s5"], ["s2", "s3"])):
        location = f"extract/emb-{index:05d}-of-00002{suffix}"
        with open_writer(work / location, "embedding") as writer:
            for sample_id in group:
                if sample_id == "s3":
                    writer.add_failure(sample_id, "no face")
                else:
                    writer.add(sample_id, _arrays(sample_id), {"label": by_id[sample_id].label})
        for sample_id, record in writer.records.items():
            by_id[sample_id].stages["extract"] = {**record, "shard": location}
    return manifest


@pytest.mark.parametrize("suffix", [".h5", ".tfrecord"])
def test_load_split_pads_truncates_and_skips(tmp_path, suffix, caplog):
    manifest = _stage(tmp_path, suffix)
    with caplog.at_level(logging.WARNING):
        data = load_split(manifest, "extract", "train", ["v2", "v1"], 6, tmp_path / suffix.strip("."))
    assert "skipping 1 failed, 1 not processed, 1 without a known label" in caplog.text
    assert data.ids == ["s0", "s1", "s2"] and data.speakers == ["p0", "p1", "p2"] and len(data) == 3
    assert data.labels.tolist() == [0, 1, 0] and data.perspectives == ["v2", "v1"]
    assert data.inputs[0].shape == (3, 6, 3) and data.inputs[1].shape == (3, 6, 4)
    assert all(x.dtype == np.float32 for x in data.inputs)
    assert data.lengths.tolist() == [3, 6, 5]
    assert data.mask.tolist()[0] == [True] * 3 + [False] * 3 and data.mask[1].all()
    np.testing.assert_array_equal(data.inputs[1][0, :3], _arrays("s0")["v1"].astype(np.float32))
    assert not data.inputs[1][0, 3:].any()
    np.testing.assert_array_equal(data.inputs[0][1], _arrays("s1")["v2"][:6])


def test_both_formats_load_identically(tmp_path):
    loaded = [
        load_split(_stage(tmp_path, s), "extract", "train", ["v1", "roi"], 5, tmp_path / s.strip("."))
        for s in (".h5", ".tfrecord")
    ]
    h5, tfr = loaded
    assert h5.ids == tfr.ids and h5.speakers == tfr.speakers
    for a, b in zip(h5.inputs + [h5.mask, h5.labels, h5.lengths], tfr.inputs + [tfr.mask, tfr.labels, tfr.lengths]):
        np.testing.assert_array_equal(a, b)
    assert h5.inputs[1].shape == (3, 5, 30) and h5.inputs[1].max() <= 1.0  # uint8 flattened and scaled


@pytest.mark.parametrize("suffix", [".h5", ".tfrecord"])
def test_pixel_clips_keep_image_shape(tmp_path, suffix):
    manifest = _stage(tmp_path, suffix)
    data = load_split(manifest, "extract", "train", ["roi", "rgb"], 4, tmp_path / suffix.strip("."), flatten=False)
    assert data.inputs[0].shape == (3, 4, 6, 5, 1) and data.inputs[1].shape == (3, 4, 6, 5, 3)
    np.testing.assert_allclose(data.inputs[1][0, :3], _arrays("s0")["rgb"] / 255.0, rtol=1e-6)
    assert not data.inputs[0][0, 3:].any()
    with pytest.raises(ShardError, match="perspective 'v1'.* not images"):
        load_split(manifest, "extract", "train", ["v1"], 4, tmp_path / suffix.strip("."), flatten=False)


@pytest.mark.parametrize("suffix", [".h5", ".tfrecord"])
def test_inconsistent_manifest_and_missing_shards_are_named(tmp_path, suffix):
    manifest = _stage(tmp_path, suffix)
    work = tmp_path / suffix.strip(".")
    manifest.by_id()["s2"].stages["extract"]["shard"] = f"extract/emb-00000-of-00002{suffix}"
    with pytest.raises(ShardError, match=rf"emb-00000-of-00002\{suffix}.*'s2'"):
        load_split(manifest, "extract", "train", ["v1"], 4, work)
    manifest.by_id()["s2"].stages["extract"]["shard"] = f"extract/gone{suffix}"
    with pytest.raises(ShardError, match=rf"gone\{suffix}: shard is missing"):
        load_split(manifest, "extract", "train", ["v1"], 4, work)
    with pytest.raises(ValueError, match="no usable samples in split 'val'"):
        load_split(manifest, "extract", "val", ["v1"], 4, work)
