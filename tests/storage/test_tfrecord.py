"""TFRecord shards: exact round trip, sidecar-gated completeness, corruption named, tf.data shapes."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pipeline.storage.readers import open_reader, open_writer, shard_format
from pipeline.storage.shards import ShardError, ShardReader, ShardWriter, shard_name
from pipeline.storage.tfrecord import (
    TFRecordShardReader,
    TFRecordShardWriter,
    read_tfrecord_samples,
    sidecar_path,
    tfrecord_dataset,
    tfrecord_shard_complete,
)

ATTRS = {"stage": "extract", "config": {"backbone": "vgg16"}}


def _samples(n=4, seed=0):
    """Samples with float16 and float32 perspectives of varying length, uint8 frames and extras."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        frames = 3 + 2 * i
        arrays = {
            "v1": rng.normal(size=(frames, 6)).astype(np.float16),
            "v2": rng.normal(size=(frames, 4)).astype(np.float32),
            "roi": rng.integers(0, 256, (frames, 5, 7), dtype=np.uint8),
        }
        attrs = {
            "label": f"w{i % 2}",
            "label_index": i % 2,
            "split": "train" if i < 3 else "val",
            "speaker": f"s{i}",
            "meta": {"k": i},
        }
        extras = {"audit/v1/landmarks": rng.normal(size=(frames, 68, 2)).astype(np.float32)}
        out[f"u/{i}"] = (arrays, attrs, extras)
    return out


def _write(writer, data):
    with writer:
        for sample_id, (arrays, attrs, extras) in data.items():
            writer.add(sample_id, arrays, attrs, extras, {"frames": len(arrays["v1"])})
        writer.add_failure("bad", "no face found", {"reason": "no-face"})


@pytest.mark.parametrize("suffix", [".tfrecord", ".h5"])
def test_round_trip_exact_in_both_formats(tmp_path, suffix):
    path = tmp_path / shard_name("emb", 3, 10, suffix)
    data = _samples()
    _write(open_writer(path, "embedding", ATTRS), data)
    with open_reader(path, kind="embedding") as reader:
        assert reader.attrs["config"] == {"backbone": "vgg16"}
        assert reader.records()["bad"] == {"status": "failed", "error": "no face found", "reason": "no-face"}
        assert reader.records()["u/1"] == {"status": "done", "frames": 5}
        assert sorted(reader.ids()) == sorted(data)
        read = {sample.id: sample for sample in reader}
    assert sorted(read) == sorted(data)
    for sample_id, (arrays, attrs, _) in data.items():
        sample = read[sample_id]
        assert sample.attrs["meta"] == {"k": attrs["meta"]["k"]} and sample.attrs["label"] == attrs["label"]
        for name, array in arrays.items():
            assert sample.arrays[name].dtype == array.dtype and sample.arrays[name].shape == array.shape
            np.testing.assert_array_equal(sample.arrays[name], array)


def test_tfrecord_layout_and_extras(tmp_path):
    path = tmp_path / "emb-00000-of-00001.tfrecord"
    data = _samples(2)
    _write(TFRecordShardWriter(path, "embedding", ATTRS), data)
    assert shard_format(path) == "tfrecord" and tfrecord_shard_complete(path)
    samples = {s.id: s for s in read_tfrecord_samples(path, ["v2"])}
    assert list(samples["u/0"].arrays) == ["v2"]
    np.testing.assert_array_equal(samples["u/1"].extras["audit/v1/landmarks"], data["u/1"][2]["audit/v1/landmarks"])
    assert samples["u/1"].attrs == {"id": "u/1", **data["u/1"][1]}
    with TFRecordShardReader(path) as reader:
        assert reader.dims == {"v1": 6, "v2": 4, "roi": 35}
        assert [s.id for s in reader.samples(ids=["u/1"])] == ["u/1"]
        with pytest.raises(ShardError, match="no perspective"):
            next(reader.samples(["v9"]))
        reader.verify()
    with pytest.raises(ShardError, match="expected 'roi'"):
        TFRecordShardReader(path, kind="roi")


def test_writer_refuses_lossy_and_inconsistent_arrays(tmp_path):
    writer = TFRecordShardWriter(tmp_path / "x.tfrecord", "embedding")
    with pytest.raises(ValueError, match="float64"):
        writer.add("a", {"v1": np.zeros((2, 3))})
    writer.add("a", {"v1": np.zeros((2, 3), np.float32)})
    with pytest.raises(ValueError, match="2 values per frame, earlier samples 3"):
        writer.add("b", {"v1": np.zeros((2, 2), np.float32)})
    with pytest.raises(ValueError, match="written twice"):
        writer.add("a", {"v1": np.zeros((2, 3), np.float32)})
    writer.discard()
    assert list(tmp_path.iterdir()) == []


def test_incomplete_shard_is_refused(tmp_path):
    path = tmp_path / "emb-00000-of-00001.tfrecord"
    with pytest.raises(RuntimeError):
        with TFRecordShardWriter(path, "embedding") as writer:
            writer.add("a", {"v1": np.zeros((2, 3), np.float32)})
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    _write(TFRecordShardWriter(path, "embedding"), _samples(1))
    sidecar_path(path).unlink()  # as if killed between the rename and the sidecar
    assert not tfrecord_shard_complete(path)
    for call in (
        lambda: TFRecordShardReader(path),
        lambda: read_tfrecord_samples(path),
        lambda: tfrecord_dataset([path], ["v1"], 4, 2),
    ):
        with pytest.raises(ShardError, match="emb-00000-of-00001.tfrecord: shard was not completed"):
            call()


def test_rewrite_replaces_the_sidecar(tmp_path):
    path = tmp_path / "emb.tfrecord"
    _write(TFRecordShardWriter(path, "embedding"), _samples(2))
    with TFRecordShardWriter(path, "embedding") as writer:
        writer.add("only", {"v1": np.ones((1, 6), np.float16)})
    with TFRecordShardReader(path) as reader:
        assert reader.ids() == ["only"] and [s.id for s in reader] == ["only"]


def test_corruption_is_detected_and_named(tmp_path):
    path = tmp_path / "emb.tfrecord"
    _write(TFRecordShardWriter(path, "embedding"), _samples())
    raw = bytearray(path.read_bytes())
    path.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(ShardError, match="emb.tfrecord: .* bytes on disk"):
        TFRecordShardReader(path)
    raw[len(raw) // 2] ^= 0x5A
    path.write_bytes(raw)
    assert tfrecord_shard_complete(path)  # same size: only the CRCs can tell
    with pytest.raises(ShardError, match="emb.tfrecord: corrupted TFRecord"):
        list(read_tfrecord_samples(path))
    with pytest.raises(ShardError, match="emb.tfrecord: corrupted TFRecord"):
        tfrecord_dataset([path], ["v1"], 4, 2, verify=True)
    (tmp_path / "x.tfrecord").write_text("junk")
    with pytest.raises(ShardError, match="x.tfrecord: shard was not completed"):
        TFRecordShardReader(tmp_path / "x.tfrecord")
    with pytest.raises(ShardError, match="x.tfrecord: shard is missing"):
        TFRecordShardReader(tmp_path / "missing" / "x.tfrecord")


def test_tf_data_shapes_padding_and_one_hot(tmp_path):
    data = _samples(4)
    paths = [tmp_path / shard_name("emb", i, 2, ".tfrecord") for i in range(2)]
    items = list(data.items())
    for path, part in zip(paths, (items[:2], items[2:])):
        _write(TFRecordShardWriter(path, "embedding"), dict(part))
    dataset = tfrecord_dataset(paths, ["v2", "v1"], 6, 3, split="train")
    got = list(dataset.as_numpy_iterator())
    assert len(got) == 3  # u/3 is in val
    for (x2, x1), _label in got:
        assert x2.shape == (6, 4) and x1.shape == (6, 6) and x1.dtype == np.float32
    # u/0: 3 frames padded; u/2: 7 frames truncated
    (x2, x1), label = got[0]
    np.testing.assert_array_equal(x2[:3], data["u/0"][0]["v2"])
    assert not x2[3:].any() and label.tolist() == [1.0, 0.0, 0.0]
    (x2, x1), label = got[2]
    np.testing.assert_array_equal(x1, data["u/2"][0]["v1"][:6].astype(np.float32))
    assert label.tolist() == [1.0, 0.0, 0.0] and got[1][1].tolist() == [0.0, 1.0, 0.0]
    (bx2, bx1), blabels = next(iter(tfrecord_dataset(paths, ["v2", "v1"], 6, 3, batch_size=4)))
    assert bx2.shape == (4, 6, 4) and bx1.shape == (4, 6, 6) and blabels.shape == (4, 3)
    with pytest.raises(ShardError, match=r"perspective\(s\) \['v9'\]"):
        tfrecord_dataset(paths, ["v9"], 6, 3)


def test_hdf5_and_tfrecord_agree(tmp_path):
    data = _samples(3)
    _write(ShardWriter(tmp_path / "a.h5", "embedding"), data)
    _write(TFRecordShardWriter(tmp_path / "a.tfrecord", "embedding"), data)
    with ShardReader(tmp_path / "a.h5") as reader:
        h5 = {s.id: s for s in reader}
    for sample in read_tfrecord_samples(tmp_path / "a.tfrecord"):
        assert sorted(sample.arrays) == sorted(h5[sample.id].arrays)
        for name, array in sample.arrays.items():
            np.testing.assert_array_equal(array, h5[sample.id].arrays[name])


def test_label_index_out_of_range_fails_loudly(tmp_path):
    path = tmp_path / "emb.tfrecord"
    _write(TFRecordShardWriter(path, "embedding"), _samples(2))
    with pytest.raises(tf.errors.InvalidArgumentError, match="label_index out of range"):
        list(tfrecord_dataset([path], ["v1"], 4, 1).as_numpy_iterator())
