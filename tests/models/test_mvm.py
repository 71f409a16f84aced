"""Multi-head visual-audio memory: the authors' modules (parameter counts, padding, naming), the memory (addressing,
losses, gradients), training, and the LRW augmentation recipe.

The parameter counts are those of the authors' PyTorch modules as their train.py builds them for LRW (gray 112 px,
29 frames, 500 classes, slots 112, heads 8, radius 16), trainable parameters as ``parameters()`` counts them
(batch-norm running statistics excluded): visual front 15,388,800; audio front 4,102,528; front memory 2,740,736;
temporal classifier with its three memories and head 38,136,308; total 60,368,372; test-time network (no audio
front) 56,265,844. Each TCN memory (768 wide, with ``v_up``) alone: key 896 x 64 + value 112 x 512 + linear
4096 x 768 + 768 + three layer norms 3 x 1,536 + v_up 512 x 768 + 768 + q_embd 768 x 512 + 512 + v_embd
512 x 512 + 512 = 4,316,160.
"""

from __future__ import annotations

from dataclasses import asdict
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.models import registry
from pipeline.models.mvm import AUDIO, VISUAL, VisualAudioMemory, build_mvm, modules
from pipeline.models.registry import model_options
from pipeline.training import augment
from pipeline.training.fit import load_checkpoint

T, DIM, CLASSES = 5, 16, 3
LRW = {"frames": 29, "side": 112, "classes": 500}


def trainable(weights) -> int:
    """Trainable parameters of a list of weights (or a model's)."""
    return sum(int(np.prod(w.shape)) for w in getattr(weights, "trainable_weights", weights))


def memory(**kwargs) -> VisualAudioMemory:
    """A small built memory layer (query and audio DIM wide)."""
    layer = VisualAudioMemory(**{"slots": 12, "heads": 4, "units": DIM, "dropout": 0.0, **kwargs})
    layer.build((None, T, DIM))
    return layer


def paired_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embedding video [n, T, DIM] and mel audio [n, T, 4, 8] whose means depend on the class, one-hot labels."""
    labels = rng.integers(0, CLASSES, n)
    video = rng.normal(size=(n, T, DIM)).astype(np.float32) + 0.7 * labels[:, None, None]
    audio = rng.normal(size=(n, T, 4, 8)).astype(np.float32) + labels[:, None, None, None]
    return video, audio, np.eye(CLASSES, dtype=np.float32)[labels]


def test_the_authors_visual_front_counts_their_parameters_and_flattens_4x4x512():
    video = keras.Input((LRW["frames"], LRW["side"], LRW["side"], 1))
    front = keras.Model(video, modules.visual_front(video))
    assert trainable(front) == 15_388_800
    assert tuple(front.output.shape) == (None, LRW["frames"], 512)
    assert tuple(front.get_layer("v_front_resnet_out_layer_3").kernel.shape) == (512 * 4 * 4, 512)
    assert front.get_layer("v_front_resnet_layer1_0_res_layer_1").layer.kernel.shape == (3, 3, 64, 64)
    assert front.get_layer("v_front_resnet_layer4_0_shortcut_layer_0").layer.kernel.shape == (1, 1, 256, 512)
    with pytest.raises(ValueError):
        front.get_layer("v_front_resnet_layer4_1_shortcut_layer_0")  # dim-match blocks keep the identity


def test_the_authors_audio_front_counts_their_parameters():
    audio = keras.Input((LRW["frames"], 4, 80))
    front = keras.Model(audio, modules.audio_front(audio))
    assert trainable(front) == 4_102_528
    assert tuple(front.output.shape) == (None, LRW["frames"], 512)
    assert tuple(front.get_layer("a_front_Linear_0").kernel.shape) == (256 * 20, 512)
    with pytest.raises(ValueError, match="4 mel frames per video frame"):
        modules.audio_front(keras.Input((LRW["frames"], 3, 80)))


def test_the_authors_front_memory_counts_their_parameters():
    layer = VisualAudioMemory(112, 8, 16.0, name="mem")
    layer.build((None, LRW["frames"], 512))
    assert trainable(layer) == 2_740_736 and layer.v_up is None
    assert tuple(layer.key.shape) == (8 * 112, 64) and tuple(layer.value.shape) == (112, 512)
    assert {w.path for w in layer.weights} >= {"mem/key", "mem/value", "mem/q_embd/kernel", "mem/norm3/gamma"}


def test_the_authors_temporal_classifier_with_its_memories_counts_their_parameters():
    x = keras.Input((LRW["frames"], 512))
    blocks = modules.mstcn_blocks(512)
    assert all(block.downsample is not None for block in blocks)  # n_inputs // 3 != 768 in every block
    memories = []
    y = x
    for i, block in enumerate(blocks):
        y = block(y)
        if i < 3:
            memories.append(VisualAudioMemory(112, 8, 16.0, name=f"tcn_tcn_mb_ms_tcn_mem{i + 1}"))
            y = memories[-1](y)
    logits = modules.torch_dense(LRW["classes"], 768, "tcn_tcn_tcn_output")(keras.layers.GlobalAveragePooling1D()(y))
    classifier = keras.Model(x, logits)
    assert [trainable(m) for m in memories] == [4_316_160] * 3 and all(m.v_up is not None for m in memories)
    assert trainable(classifier) == 38_136_308
    conv = classifier.get_layer("tcn_tcn_mb_ms_tcn_layer1_cbcr0_0_conv")
    assert conv.kernel.shape == (3, 512, 256) and conv.use_bias


@pytest.mark.filterwarnings("ignore:Gradients do not exist")
def test_the_authors_system_counts_their_parameters_grouped_by_checkpoint_name():
    models = build_mvm((LRW["frames"], LRW["side"], LRW["side"], 1), (LRW["frames"], 4, 80), LRW["classes"])
    assert trainable(models.train) == 60_368_372 and trainable(models.infer) == 56_265_844
    groups: dict[str, int] = {}
    for layer in models.train.layers:
        group = next((g for g in ("v_front", "a_front", "mem", "tcn") if layer.name.startswith(g)), layer.name)
        groups[group] = groups.get(group, 0) + trainable(layer)
    assert {g: n for g, n in groups.items() if n} == {
        "v_front": 15_388_800,
        "a_front": 4_102_528,
        "mem": 2_740_736,
        "tcn": 38_136_308,
    }
    assert not any(layer.name.startswith("a_front") for layer in models.infer.layers)


def test_strided_convolutions_and_the_max_pool_pad_symmetrically_as_pytorch():
    x = np.arange(2 * 1 * 6 * 6 * 1, dtype=np.float32).reshape(2, 1, 6, 6, 1) - 100.0  # all negative
    pool = keras.layers.TimeDistributed(keras.layers.MaxPooling2D(3, strides=2))
    pooled = pool(modules.MaxPoolPadding((1, 1))(x))
    pooled = keras.ops.convert_to_numpy(pooled)[0, 0, :, :, 0]
    grid = x[0, 0, :, :, 0]
    # PyTorch: window rows/cols [2i - 1, 2i + 1] clipped to the image; padding never wins, even below zero
    assert np.array_equal(
        pooled, np.array([[grid[: 2 * i + 2, : 2 * j + 2][-3:, -3:].max() for j in range(3)] for i in range(3)])
    )
    clip = keras.Input((1, 6, 6, 1))
    conv = keras.Model(clip, modules._conv2d(clip, 1, 3, 2, "probe", xavier=True))
    delta = np.zeros((3, 3, 1, 1), np.float32)
    delta[0, 0] = 1.0  # picks the top-left input of each window
    conv.get_layer("probe").layer.kernel.assign(delta)
    out = keras.ops.convert_to_numpy(conv(x))[0, 0, :, :, 0]
    assert out.shape == (3, 3) and out[0, 0] == 0.0  # the window starts one pixel above and left (the padding)
    assert out[1, 1] == grid[1, 1] and out[2, 2] == grid[3, 3]


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
    layer.v_embd.set_weights([np.eye(DIM, dtype=np.float32), np.zeros(DIM, np.float32)])
    audio = np.repeat(value[None, :T], 2, axis=0)
    read = layer.read_by_audio(audio)
    reconstruction, contrastive = layer.memory_losses(audio, read)
    assert float(contrastive) == pytest.approx(0.0, abs=1e-5)
    assert 0.0 <= float(reconstruction) < 1e-3 * T
    layer.value.assign(np.ones((8, DIM), np.float32))  # every slot alike: |I - 1| sums to 8 x 7, halved
    assert float(layer.memory_losses(audio, read)[1]) == pytest.approx(28.0, abs=1e-4)
    opposite = -np.asarray(audio)
    assert float(layer.memory_losses(audio, opposite)[0]) == pytest.approx(2.0 * T, abs=1e-4)  # per sample, over T
    query = np.zeros((2, T, DIM), np.float32)
    assert tuple(layer(query).shape) == (2, T, DIM)
    assert tuple(layer(query, audio).shape) == (2, T, DIM)
    assert len(layer.losses) == 1


def test_a_memory_wider_than_the_audio_projects_its_read_up():
    layer = VisualAudioMemory(6, 2, 16.0, units=DIM, dropout=0.0)
    layer.build((None, T, 24))
    assert layer.diff_aud_vid and tuple(layer.v_up.kernel.shape) == (DIM, 24)
    assert tuple(layer.linear.kernel.shape) == (2 * DIM, 24) and tuple(layer.q_embd.kernel.shape) == (24, DIM)
    out = layer(np.zeros((2, T, 24), np.float32), np.ones((2, T, DIM), np.float32))
    assert tuple(out.shape) == (2, T, 24)
    with pytest.raises(ValueError, match="must divide by the 3 heads"):
        VisualAudioMemory(6, 3, units=DIM)


def test_the_authors_build_refuses_audio_not_in_four_mel_frames_and_a_fifth_tcn_memory():
    spec = SimpleNamespace(options={**asdict(model_options("mvm", {})), "lr": 1e-3}, classes=["a", "b"])
    with pytest.raises(ConfigError, match="--audio-front ir takes 4 mel frames per video frame.*has 3"):
        registry.get("mvm").build(spec, [(T, 16, 16, 1)], (T, 3, 80))
    spec.options["levels"] = 5
    with pytest.raises(ConfigError, match="--back mstcn has 4 blocks: --levels at most 4"):
        registry.get("mvm").build(spec, [(T, 16, 16, 1)], (T, 4, 80))


@pytest.mark.parametrize("video_shape", [(T, DIM), (T, 24, 24, 1)])
def test_build_shapes_shared_weights_and_loss_weights(video_shape):
    models = build_mvm(
        video_shape,
        (T, 4, 8),
        CLASSES,
        units=DIM,
        slots=12,
        heads=2,
        levels=3,
        filters=4,
        back="tcn",
        audio_front="small",
    )
    video = np.zeros((2,) + video_shape, np.float32)
    audio = np.zeros((2, T, 4, 8), np.float32)
    out = models.train({"video": video, "audio": audio})
    assert set(out) == {VISUAL, AUDIO} and tuple(out[VISUAL].shape) == (2, CLASSES)
    assert len(models.train.losses) == 3  # one per memory: the front's and after blocks 1 and 2
    assert tuple(models.infer(video).shape) == (2, CLASSES)
    assert models.infer.get_layer("temporal1_mem") is models.train.get_layer("temporal1_mem")
    weights = [models.train.get_layer(n).reconstruction_weight for n in ("mem", "temporal0_mem", "temporal1_mem")]
    assert weights == pytest.approx([1 / 3, 1 / 3, 1 / 3])  # 2 / (3 x 2) for each of the two block memories
    with pytest.raises(ValueError, match="at most 4 memory levels"):
        build_mvm(video_shape, (T, 4, 8), CLASSES, units=DIM, slots=4, heads=2, levels=5, front="small")


@pytest.mark.filterwarnings("ignore:Gradients do not exist")
def test_the_audio_front_gets_no_gradient_nor_weight_decay_while_its_batch_norm_tracks_the_batch():
    keras.utils.set_random_seed(0)
    video, audio, labels = paired_data(8, np.random.default_rng(0))
    models = build_mvm(
        (T, DIM),
        (T, 4, 8),
        CLASSES,
        units=DIM,
        slots=6,
        heads=2,
        levels=1,
        back="tcn",
        optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.5),
    )
    fronts = [w for w in models.train.weights if w.path.startswith("a_front")]
    weights = {w.path: keras.ops.convert_to_numpy(w).copy() for w in fronts}
    models.train.train_on_batch({"video": video, "audio": audio}, {VISUAL: labels, AUDIO: labels})
    moved = {w.path for w in fronts if not np.array_equal(keras.ops.convert_to_numpy(w), weights[w.path])}
    assert moved and all("moving_" in path for path in moved)
    assert {p for p in weights if "moving_" in p} == moved
    assert not np.allclose(models.train.get_layer("mem").v_embd.kernel.numpy(), 0.0)


@pytest.mark.filterwarnings("ignore:Gradients do not exist")
def test_training_lowers_loss_and_routes_gradients():
    keras.utils.set_random_seed(0)
    video, audio, labels = paired_data(60, np.random.default_rng(0))
    models = build_mvm(
        (T, DIM),
        (T, 4, 8),
        CLASSES,
        units=DIM,
        slots=12,
        heads=2,
        levels=1,
        back="tcn",
        audio_front="small",
        memory_dropout=0.0,
        optimizer=keras.optimizers.Adam(1e-2),
    )
    layer = models.train.get_layer("mem")
    key, value = layer.key.numpy().copy(), layer.value.numpy().copy()
    models.infer.fit(video, labels, epochs=1, batch_size=20, verbose=0)
    assert not np.allclose(layer.key.numpy(), key)
    assert np.array_equal(layer.value.numpy(), value)  # the test path reads the value memory detached
    history = models.train.fit(
        {"video": video, "audio": audio}, {VISUAL: labels, AUDIO: labels}, epochs=8, batch_size=20, verbose=0
    ).history
    assert history["loss"][-1] < history["loss"][0]
    assert history["visual_loss"][-1] < 0.8 * history["visual_loss"][0]
    assert not np.allclose(layer.value.numpy(), value)
    logits = keras.ops.convert_to_numpy(models.infer(video, training=False))
    assert (logits.argmax(axis=1) == labels.argmax(axis=1)).mean() > 0.6


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Gradients do not exist")
def test_the_authors_system_takes_a_training_step_on_small_clips_and_loads_back(tmp_path):
    models = build_mvm((4, 24, 24, 1), (4, 4, 8), 3, slots=8, heads=4)
    models.train.run_eagerly = True  # tracing this graph takes TensorFlow minutes on a CPU; the step is the same
    assert models.train.get_layer("tcn_tcn_mb_ms_tcn_mem1").value.shape == (8, 512)  # the audio width, then v_up
    video = np.random.default_rng(0).random((2, 4, 24, 24, 1), dtype=np.float32)
    audio = np.random.default_rng(1).normal(size=(2, 4, 4, 8)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[[0, 2]]
    logs = models.train.train_on_batch(
        {"video": video, "audio": audio}, {"visual": labels, "audio": labels}, return_dict=True
    )
    assert np.isfinite(logs["loss"])
    if keras.backend.backend() != "jax":  # JAX's stateless train step keeps no add_loss terms on the model after it
        assert len(models.train.losses) == 4  # one per memory
    expected = models.infer.predict(video, verbose=0)
    assert expected.shape == (2, 3)
    models.infer.save(tmp_path / "best.keras")
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "best.keras").predict(video, verbose=0), expected)


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
