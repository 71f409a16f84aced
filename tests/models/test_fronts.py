"""The torchvision-style ResNet-18 fronts (parameter counts against the architectures' known sizes), the
activation-memory check, dB/CMVN audio and the per-term loss plot (the authors' memory-model modules: test_mvm.py).

What is tested, derived:
- ResNet-18 trunk without fc, 3-channel 2D input: 11,176,512 trainable parameters (torchvision's 11,689,512 less
  the 512 x 1000 + 1000 classifier); batch-norm moving statistics are not parameters.
- The lip-reading front (3D stem 5x7x7, 1 -> 64 channels, no bias, batch norm, PReLU per channel): the 2D stem's
  7x7x3x64 = 9,408 replaced by 5x7x7x1x64 = 15,680, plus 64 PReLU slopes: 11,176,512 - 9,408 + 15,680 + 64 = 11,182,848.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.evaluation.plots import loss_terms, plot_training_curves
from pipeline.media.audio import cmvn, db_cmvn, to_db
from pipeline.models.fronts import resnet18, resnet18_video_front
from pipeline.training.memory import check_fits, counted_elements, estimate_bytes


def trainable(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_resnet18_and_video_front_parameter_counts():
    trunk = resnet18((64, 64, 3))
    print("ResNet-18 trunk (3-channel, 2D):", trainable(trunk))
    assert trainable(trunk) == 11_176_512
    video = keras.Input((5, 32, 32, 1))
    front = keras.Model(video, resnet18_video_front(video))
    print("3D stem + ResNet-18 per frame:", trainable(front))
    assert trainable(front) == 11_176_512 - 7 * 7 * 3 * 64 + 5 * 7 * 7 * 64 + 64 == 11_182_848
    assert tuple(front.output.shape) == (None, 5, 512)


def test_activation_estimate_scales_with_batch_and_refuses_what_does_not_fit():
    x = keras.Input((4, 16, 16, 1))
    y = keras.layers.ConvLSTM2D(4, 3, padding="same", return_sequences=True)(
        keras.layers.TimeDistributed(keras.layers.Conv2D(4, 3, padding="same"))(x)
    )
    model = keras.Model(x, y)
    conv = 4 * 16 * 16 * 4
    assert counted_elements(model) == conv + 15 * conv  # the ConvLSTM keeps its gates per step
    assert estimate_bytes(model, 8) == 8 * estimate_bytes(model, 1)
    assert check_fits(model, 2, ["--batch-size"], available=1 << 40) == estimate_bytes(model, 2)
    with pytest.raises(MemoryError, match="lower --batch-size, --crop"):
        check_fits(model, 64, ["--batch-size", "--crop"], available=estimate_bytes(model, 8))


def test_audio_in_db_with_per_clip_mean_variance_normalisation():
    rng = np.random.default_rng(0)
    mel = rng.normal(size=(2, 6, 4, 5)).astype(np.float32) * 3 + 2
    assert np.allclose(to_db(np.log(np.array([10.0, 100.0]))), [10.0, 20.0], atol=1e-4)
    out = db_cmvn(mel, np.array([6, 3]))
    real = out[0].reshape(-1, 5)
    assert np.allclose(real.mean(0), 0, atol=1e-5) and np.allclose(real.std(0), 1, atol=1e-4)
    assert np.allclose(out[1, 3:], 0) and np.allclose(out[1, :3].reshape(-1, 5).mean(0), 0, atol=1e-5)
    assert np.allclose(cmvn(to_db(mel)), cmvn(mel), atol=1e-4)  # dB is a scale of the natural log: CMVN removes it


def test_loss_plot_has_one_panel_per_term(tmp_path):
    history = {
        "loss": [900.0, 800.0],
        "visual_loss": [2.0, 1.5],
        "audio_loss": [1.8, 1.2],
        "val_visual_loss": [2.1, 1.9],
        "visual_accuracy": [0.1, 0.3],
    }
    terms = loss_terms(history)
    assert set(terms) == {"loss", "visual_loss", "audio_loss", "other_loss"}
    assert set(terms["visual_loss"]) == {"visual_loss", "val_visual_loss"}
    assert terms["other_loss"]["other_loss"] == pytest.approx([896.2, 797.3])
    assert plot_training_curves(history, tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
