"""Multi-head visual-audio memory (addressing, losses, gradients, training) and the LRW augmentation recipe."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.models.mvm import AUDIO, VISUAL, VisualAudioMemory, build_mvm
from pipeline.training import augment

T, DIM, CLASSES = 5, 16, 3


def memory(**kwargs) -> VisualAudioMemory:
    """A small built memory layer."""
    layer = VisualAudioMemory(**{"slots": 12, "heads": 4, "dropout": 0.0, **kwargs})
    layer.build((None, T, DIM))
    return layer


def paired_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embedding video [n, T, DIM] and mel audio [n, T, 4, 8] whose means depend on the class, one-hot labels."""
    labels = rng.integers(0, CLASSES, n)
    video = rng.normal(size=(n, T, DIM)).astype(np.float32) + 0.7 * labels[:, None, None]
    audio = rng.normal(size=(n, T, 4, 8)).astype(np.float32) + labels[:, None, None, None]
    return video, audio, np.eye(CLASSES, dtype=np.float32)[labels]


def test_addressing_sums_to_one_per_head_and_radius_sharpens():
    query = np.random.default_rng(0).normal(size=(2, T, DIM)).astype(np.float32)
    soft, sharp = memory(radius=1.0), memory(radius=64.0)
    sharp.set_weights(soft.get_weights())
    weights = keras.ops.convert_to_numpy(soft.address(query))
    assert weights.shape == (2, T, 4, 12)
    assert np.allclose(weights.sum(axis=-1), 1.0, atol=1e-5) and weights.min() >= 0.0
    peaked = keras.ops.convert_to_numpy(sharp.address(query))
    assert np.allclose(peaked.sum(axis=-1), 1.0, atol=1e-5)
    assert peaked.max(axis=-1).mean() > weights.max(axis=-1).mean()


def test_memory_losses_and_outputs():
    layer = memory(slots=8)
    value = np.zeros((8, DIM), np.float32)
    value[np.arange(8), np.arange(8)] = 3.0
    layer.value.assign(value)
    layer.audio_proj.set_weights([np.eye(DIM, dtype=np.float32), np.zeros(DIM, np.float32)])
    audio = np.repeat(value[None, :T], 2, axis=0)
    read = layer.read_by_audio(audio)
    reconstruction, decorrelation = layer.memory_losses(audio, read)
    assert float(decorrelation) == pytest.approx(0.0, abs=1e-5)
    assert 0.0 <= float(reconstruction) < 1e-3 * T
    query = np.zeros((2, T, DIM), np.float32)
    assert tuple(layer(query).shape) == (2, T, DIM)
    assert tuple(layer(query, audio).shape) == (2, T, DIM)
    assert len(layer.losses) == 1


@pytest.mark.parametrize("video_shape", [(T, DIM), (T, 24, 24, 1)])
def test_build_shapes_and_shared_weights(video_shape):
    models = build_mvm(video_shape, (T, 4, 8), CLASSES, dim=DIM, slots=12, heads=2, levels=2, filters=4)
    video = np.zeros((2,) + video_shape, np.float32)
    audio = np.zeros((2, T, 4, 8), np.float32)
    out = models.train({"video": video, "audio": audio})
    assert set(out) == {VISUAL, AUDIO} and tuple(out[VISUAL].shape) == (2, CLASSES)
    assert len(models.train.losses) == 2
    assert tuple(models.infer(video).shape) == (2, CLASSES)
    assert models.infer.get_layer("memory1") is models.train.get_layer("memory1")


@pytest.mark.filterwarnings("ignore:Gradients do not exist")
def test_training_lowers_loss_and_routes_gradients():
    keras.utils.set_random_seed(0)
    video, audio, labels = paired_data(60, np.random.default_rng(0))
    models = build_mvm(
        (T, DIM),
        (T, 4, 8),
        CLASSES,
        dim=DIM,
        slots=12,
        heads=2,
        levels=1,
        dropout=0.0,
        optimizer=keras.optimizers.Adam(1e-2),
    )
    layer = models.train.get_layer("memory0")
    key, value = layer.key.numpy().copy(), layer.value.numpy().copy()
    models.infer.fit(video, labels, epochs=1, batch_size=20, verbose=0)
    assert not np.allclose(layer.key.numpy(), key)
    assert np.array_equal(layer.value.numpy(), value)
    history = models.train.fit(
        {"video": video, "audio": audio}, {VISUAL: labels, AUDIO: labels}, epochs=8, batch_size=20, verbose=0
    ).history
    assert history["loss"][-1] < history["loss"][0]
    assert history["visual_loss"][-1] < 0.8 * history["visual_loss"][0]
    assert not np.allclose(layer.value.numpy(), value)
    logits = keras.ops.convert_to_numpy(models.infer(video, training=False))
    assert (logits.argmax(axis=1) == labels.argmax(axis=1)).mean() > 0.6


def test_flip_twice_is_identity_and_tta_on_symmetric_input():
    clip = np.random.default_rng(0).integers(0, 256, size=(3, 8, 6, 3), dtype=np.uint8)
    assert np.array_equal(augment.hflip(augment.hflip(clip)), clip)
    assert np.array_equal(augment.hflip(clip)[:, :, 0], clip[:, :, -1])
    half = np.random.default_rng(1).normal(size=(2, 3, 8, 3)).astype(np.float32)
    symmetric = np.concatenate([half, half[:, :, :, ::-1]], axis=3)
    weights = np.random.default_rng(2).normal(size=(3 * 8 * 6, 4)).astype(np.float32)

    def model_fn(x):
        return x.reshape(len(x), -1) @ weights

    assert np.allclose(augment.tta_logits(model_fn, symmetric), 2.0 * model_fn(symmetric), atol=1e-5)
    asymmetric = np.random.default_rng(3).normal(size=(2, 3, 8, 6)).astype(np.float32)
    assert not np.allclose(augment.tta_logits(model_fn, asymmetric), 2.0 * model_fn(asymmetric))


def test_mixup_labels_sum_to_one_and_mix_convexly():
    rng = np.random.default_rng(0)
    clips = rng.normal(size=(16, 2, 4, 4)).astype(np.float32)
    onehot = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 16)]
    mixed, labels = augment.mixup(clips, onehot, rng)
    assert mixed.shape == clips.shape and labels.shape == onehot.shape
    assert np.allclose(labels.sum(axis=1), 1.0)
    assert labels.min() >= 0.0
    assert mixed.min() >= clips.min() - 1e-6 and mixed.max() <= clips.max() + 1e-6


def test_crop_resize_gray_normalise_recipe():
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, size=(4, 40, 50, 3), dtype=np.uint8)
    box = augment.centre_box(clip, 24)
    assert box == (8, 13, 24, 24)
    assert np.array_equal(augment.shift_crop(clip, box, None), clip[:, 8:32, 13:37])
    for _ in range(20):
        crop = augment.shift_crop(clip, box, rng)
        assert crop.shape == (4, 24, 24, 3)
    corner = augment.shift_crop(clip, (0, 0, 24, 24), np.random.default_rng(5))
    assert corner.shape == (4, 24, 24, 3)
    with pytest.raises(ValueError):
        augment.shift_crop(clip, (30, 0, 24, 24), None)
    gray = augment.grayscale(clip)
    assert gray.shape == (4, 40, 50) and gray.dtype == np.uint8
    assert augment.grayscale(np.full((1, 2, 2, 3), 200, np.uint8)).max() == 200
    assert augment.resize(gray, 112).shape == (4, 112, 112)
    assert augment.resize(clip, 16).shape == (4, 16, 16, 3)
    assert np.allclose(augment.normalise(np.full((1, 1, 1), 255, np.uint8)), (1.0 - 0.4136) / 0.17)
    out = augment.train_clip(clip, box, rng)
    assert out.shape == (4, 112, 112) and out.dtype == np.float32
    assert np.array_equal(augment.eval_clip(clip, box), augment.eval_clip(clip, box))
