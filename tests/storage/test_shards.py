"""HDF5 shards: exact round trip, atomic commit, corruption detected with a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.storage.shards import ShardError, ShardReader, ShardWriter, group_name


def _write(path, ids=("a", "b/c", "ü ..")):
    rng = np.random.default_rng(0)
    data = {}
    with ShardWriter(path, "roi", {"stage": "prepare", "config": {"size": 96}}) as writer:
        for sample_id in ids:
            arrays = {
                "v1": rng.integers(0, 255, (5, 8, 8), dtype=np.uint8),
                "v2": rng.normal(size=(5, 16)).astype(np.float16),
            }
            extras = {"audit/v1/landmarks": rng.normal(size=(5, 68, 2)).astype(np.float32)}
            writer.add(sample_id, arrays, {"label": "x", "split": "train", "meta": {"k": 1}}, extras)
            data[sample_id] = (arrays, extras)
        writer.add_failure("bad", "no face found in 80% of frames", {"reason": "no-face"})
    return data


def test_round_trip_exact(tmp_path):
    path = tmp_path / "s.h5"
    data = _write(path)
    with ShardReader(path, kind="roi") as reader:
        assert sorted(reader.ids()) == sorted(data)
        assert reader.attrs["config"] == {"size": 96}
        records = reader.records()
        assert records["bad"] == {"status": "failed", "error": "no face found in 80% of frames", "reason": "no-face"}
        for sample_id, (arrays, extras) in data.items():
            sample = reader.read(sample_id, extras=True)
            assert sample.attrs["meta"] == {"k": 1} and sample.attrs["id"] == sample_id
            for key, value in arrays.items():
                assert sample.arrays[key].dtype == value.dtype
                np.testing.assert_array_equal(sample.arrays[key], value)
            np.testing.assert_array_equal(sample.extras["audit/v1/landmarks"], extras["audit/v1/landmarks"])
        assert list(reader.read("a", ["v2"]).arrays) == ["v2"]
        with pytest.raises(ShardError, match="no perspective"):
            reader.read("a", ["v3"])


def test_same_content_same_bytes(tmp_path):
    _write(tmp_path / "1.h5")
    _write(tmp_path / "2.h5")
    assert (tmp_path / "1.h5").read_bytes() == (tmp_path / "2.h5").read_bytes()


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "s.h5"
    with pytest.raises(RuntimeError):
        with ShardWriter(path, "roi") as writer:
            writer.add("a", {"v1": np.zeros((2, 2), np.uint8)})
            raise RuntimeError("disk on fire")
    assert list(tmp_path.iterdir()) == []


def test_corruption_is_detected(tmp_path):
    path = tmp_path / "s.h5"
    _write(path)
    raw = bytearray(path.read_bytes())
    truncated = tmp_path / "t.h5"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ShardError, match="t.h5: not a readable HDF5 shard"):
        ShardReader(truncated)
    # flip bytes inside a compressed chunk: the fletcher32 checksum catches it
    with ShardReader(path) as reader:
        dataset = reader._file[group_name("a")]["v1"]
        offset = dataset.id.get_chunk_info(0).byte_offset
    raw[offset + 4] ^= 0xFF
    flipped = tmp_path / "f.h5"
    flipped.write_bytes(raw)
    with ShardReader(flipped) as reader, pytest.raises(ShardError, match="f.h5: sample 'a' is corrupted"):
        reader.verify()
    (tmp_path / "x.h5").write_text("not hdf5")
    with pytest.raises(ShardError, match="x.h5"):
        ShardReader(tmp_path / "x.h5")
    with pytest.raises(ShardError, match="expected 'embedding'"):
        ShardReader(path, kind="embedding")


def test_failed_commit_leaves_nothing(tmp_path, monkeypatch):
    import os

    def no_space(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(OSError, match="No space"):
        with ShardWriter(tmp_path / "s.h5", "roi") as writer:
            writer.add("a", {"v1": np.zeros((2, 2), np.uint8)})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("compression", ["gzip", "lzf", "none"])
def test_each_compression_round_trips_records_itself_and_keeps_checksums(tmp_path, compression):
    path = tmp_path / "s.h5"
    clip = np.random.default_rng(1).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    with ShardWriter(path, "roi", compression=compression) as writer:
        writer.add("a", {"v1": clip})
    with ShardReader(path, "roi") as reader:
        assert reader.attrs["compression"] == compression
        dataset = reader._file[group_name("a")]["v1"]
        assert dataset.compression == (None if compression == "none" else compression) and dataset.fletcher32
        np.testing.assert_array_equal(reader.read("a").arrays["v1"], clip)
        offset = dataset.id.get_chunk_info(0).byte_offset
    raw = bytearray(path.read_bytes())
    raw[offset + 4] ^= 0xFF
    path.write_bytes(raw)
    with ShardReader(path) as reader, pytest.raises(ShardError, match="sample 'a' is corrupted"):
        reader.verify()
    with pytest.raises(ValueError, match="compression must be one of gzip, lzf, none"):
        ShardWriter(tmp_path / "t.h5", "roi", compression="zstd")
    assert not (tmp_path / "t.h5").exists()
