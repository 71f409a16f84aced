"""Streaming input: batches read from shards equal the in-memory arrays, follow a seeded per-epoch order that
survives a resume, augment like the in-memory path, and the run picks memory or streaming with a log line."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.manifest import Manifest, Sample, Source  # noqa: E402
from pipeline.storage.readers import open_reader, open_writer  # noqa: E402
from pipeline.storage.shards import ShardError  # noqa: E402
from pipeline.storage.tfrecord import sidecar_path  # noqa: E402
from pipeline.training.batches import EpochSync  # noqa: E402
from pipeline.training.experiment import RunSpec  # noqa: E402
from pipeline.training.feed import RunInputs  # noqa: E402
from pipeline.training.fit import FitConfig, fit  # noqa: E402
from pipeline.training.sequences import index_split, load_split  # noqa: E402
from pipeline.training.stream import ShardBatches  # noqa: E402

N = 23
STAGE = {False: "extract:f", True: "prepare"}  # embeddings, ROI pixels


def _work(tmp_path, suffix: str, n: int = N, pixels: bool = False) -> tuple[Manifest, object]:
    """``n`` train + 5 val samples of varying length over three shards of ``suffix``; one perspective of 3-d features
    (or 12x12 uint8 frames with audio when ``pixels``)."""
    work = tmp_path / suffix.strip(".")
    ids = [f"s{i:02d}" for i in range(n)] + [f"v{i}" for i in range(5)]
    samples = [
        Sample(
            id=i,
            sources={"v1": Source(f"{i}.mp4")},
            label="ab"[k % 2],
            split="train" if i[0] == "s" else "val",
            speaker=f"p{k % 3}",
        )
        for k, i in enumerate(ids)
    ]
    manifest = Manifest("toy", str(tmp_path), ["v1"], samples, classes=["a", "b"])
    rng = np.random.default_rng(0)
    for shard in range(3):
        location = f"prepare/roi-{shard:05d}-of-00003{suffix}"
        with open_writer(work / location, "roi") as writer:
            for sample in samples[shard::3]:
                frames = 3 + int(rng.integers(0, 6))
                if pixels:
                    arrays = {"v1": rng.integers(0, 256, (frames, 12, 12), dtype=np.uint8)}
                    extras = {"audio/mel": rng.normal(size=(frames, 4, 8)).astype(np.float32)}
                else:
                    arrays, extras = {"v1": rng.normal(size=(frames, 3)).astype(np.float16)}, {}
                writer.add(sample.id, arrays, {"label": sample.label}, extras)
        for sample_id, record in writer.records.items():
            manifest.by_id()[sample_id].stages[STAGE[pixels]] = {**record, "shard": location}
    return manifest, work


def _ids(batches, epoch: int) -> list[list[str]]:
    batches.set_epoch(epoch)
    return [list(batches[i][1]) for i in range(len(batches))]


@pytest.mark.parametrize("suffix", [".h5", ".tfrecord"])
def test_streamed_batches_equal_the_loaded_split_in_a_seeded_order(tmp_path, suffix):
    manifest, work = _work(tmp_path, suffix)
    whole = load_split(manifest, "extract:f", "train", ["v1"], 6, work)
    row = {sample_id: i for i, sample_id in enumerate(whole.ids)}
    index = index_split(manifest, "extract:f", "train", ["v1"], work)
    batches = ShardBatches(index, 6, 5, lambda data, rng: (data.inputs[0], data.ids, data.mask), seed=3)
    assert len(batches) == 5
    seen = []
    for i in range(len(batches)):
        x, ids, mask = batches[i]
        assert x.dtype == np.float32 and x.shape == (len(ids), 6, 3)
        rows = [row[sample_id] for sample_id in ids]
        np.testing.assert_array_equal(x, whole.inputs[0][rows])
        np.testing.assert_array_equal(mask, whole.mask[rows])
        seen += ids
    assert sorted(seen) == sorted(whole.ids) and seen != whole.ids  # every sample once, shuffled
    first, second = _ids(batches, 0), _ids(batches, 1)
    assert first != second and sorted(sum(second, [])) == sorted(whole.ids)  # a new order each epoch
    again = ShardBatches(index, 6, 5, lambda data, rng: (data.inputs[0], data.ids), seed=3)
    assert _ids(again, 1) == second  # a fresh reader told the epoch (a resumed run) sees the same batches
    assert _ids(ShardBatches(index, 6, 5, lambda data, rng: (data.inputs[0], data.ids), seed=4), 1) != second
    ordered = ShardBatches(index, 6, 5, lambda data, rng: (data.inputs[0], data.ids), shuffle=False)
    assert sum(_ids(ordered, 7), []) == whole.ids


def test_tfrecord_reads_one_sample_at_its_offset_also_without_recorded_offsets(tmp_path):
    manifest, work = _work(tmp_path, ".tfrecord")
    path = work / "prepare" / "roi-00001-of-00003.tfrecord"
    with open_reader(path) as reader:
        expected = {s.id: s.arrays["v1"] for s in reader.samples()}
        picked = reader.read(sorted(expected)[-1], ["v1"])
        np.testing.assert_array_equal(picked.arrays["v1"], expected[picked.id])
        with pytest.raises(ShardError, match="no sample 'nope'"):
            reader.read("nope")
    sidecar = sidecar_path(path)
    meta = json.loads(sidecar.read_text())
    assert sorted(meta.pop("offsets")) == sorted(expected)
    sidecar.write_text(json.dumps(meta))  # a shard written before offsets were recorded
    with open_reader(path) as reader:
        for sample_id in reversed(sorted(expected)):
            np.testing.assert_array_equal(reader.read(sample_id, ["v1"]).arrays["v1"], expected[sample_id])


def test_unknown_suffix_is_refused_by_the_registry(tmp_path):
    with pytest.raises(ShardError, match="not a shard file name"):
        open_reader(tmp_path / "x.npz")


def test_a_resumed_streamed_fit_continues_with_the_epochs_it_had_reached(tmp_path):
    manifest, work = _work(tmp_path, ".h5")
    index = index_split(manifest, "extract:f", "train", ["v1"], work)
    built: list[int] = []

    def make():
        batches = ShardBatches(
            index, 6, 8, lambda data, rng: (data.inputs[0], keras.utils.to_categorical(data.labels, 2)), seed=1
        )
        original = batches.batch
        batches.batch = lambda rows, rng: (built.append(batches.epoch), original(rows, rng))[1]
        return batches

    def model():
        m = keras.Sequential([keras.Input((6, 3)), keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
        m.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
        return m

    class StopAt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt("killed")

    config = FitConfig(epochs=4, batch_size=8, patience=10, tensorboard=False, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        fit(model(), (make(), None), None, tmp_path / "run", config, {}, callbacks=[StopAt()])
    built.clear()
    history = fit(model(), (make(), None), None, tmp_path / "run", config, {})
    assert len(history["loss"]) == 4
    assert {2, 3} <= set(built) and 0 not in set(built[-6:])  # epochs 2 and 3 read with their own orders, not epoch 0's
    assert isinstance(EpochSync(make()), keras.callbacks.Callback)


def _spec(model: str = "single", augment: bool = False) -> RunSpec:
    options = {"augment": augment, "crop": 8 if augment else None, "units": 4, "dropout": 0.0, "lr": 1e-3}
    return RunSpec("r", model, STAGE[model == "mvm"], ["v1"], 6, ["a", "b"], options=options)


def test_run_inputs_pick_memory_or_stream_and_give_the_same_validation(tmp_path, monkeypatch, caplog):
    manifest, work = _work(tmp_path, ".h5")
    with caplog.at_level(logging.INFO):
        memory = RunInputs(manifest, _spec(), work, ("train", "val"))
    assert (
        memory.mode == "memory"
        and "within the in-memory budget" in caplog.text
        and "reading them into memory" in caplog.text
    )
    monkeypatch.setattr("pipeline.training.feed.memory_budget", lambda: 1000)
    with caplog.at_level(logging.INFO):
        streamed = RunInputs(manifest, _spec(), work, ("train", "val"))
    assert streamed.mode == "stream" and "streaming batches from the shards" in caplog.text
    assert memory.model_shapes() == streamed.model_shapes() == [(6, 3)]
    whole = load_split(manifest, "extract:f", "val", ["v1"], 6, work)
    batches, none = streamed.validation("val", 2)
    assert none is None and len(batches) == 3
    got = [batches[i] for i in range(len(batches))]
    np.testing.assert_array_equal(np.concatenate([b[0][0] for b in got]), whole.inputs[0])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in got]).argmax(1), whole.labels)


def test_streamed_augmentation_crops_flips_and_mixes_clips_and_audio(tmp_path, monkeypatch):
    manifest, work = _work(tmp_path, ".h5", pixels=True)
    monkeypatch.setattr("pipeline.training.feed.memory_budget", lambda: 0)
    inputs = RunInputs(manifest, _spec("mvm", augment=True), work, ("train", "val"))
    assert inputs.mode == "stream" and inputs.model_shapes() == [(6, 8, 8, 1)] and inputs.audio_shape == (6, 4, 8)
    batches, _ = inputs.training("train", 8, seed=2)
    x, y = batches[0]
    assert x["video"].shape == (8, 6, 8, 8, 1) and x["audio"].shape == (8, 6, 4, 8)
    np.testing.assert_allclose(y["visual"].sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(y["visual"], y["audio"])
    assert not np.isclose(y["visual"], np.round(y["visual"])).all()  # mixup mixed the labels
    again, _ = inputs.training("train", 8, seed=2)
    np.testing.assert_array_equal(again[0][0]["video"], x["video"])  # the same draws for the same (seed, epoch, batch)
    val, _ = inputs.validation("val", 8)
    vx, vy = val[0]
    assert vx["video"].shape == (5, 6, 8, 8, 1) and set(np.unique(vy["visual"])) <= {0.0, 1.0}
