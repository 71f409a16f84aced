"""The papers' front- and back-ends: parameter counts against the architectures' known sizes, the memory model built
with them, the activation-memory check, dB/CMVN audio and the per-term loss plot.

What is tested, derived:
- ResNet-18 trunk without fc, 3-channel 2D input: 11,176,512 trainable parameters (torchvision's 11,689,512 less
  the 512 x 1000 + 1000 classifier); batch-norm moving statistics are not parameters.
- The lip-reading front (3D stem 5x7x7, 1 -> 64 channels, no bias, batch norm, PReLU per channel): the 2D stem's
  7x7x3x64 = 9,408 replaced by 5x7x7x1x64 = 15,680, plus 64 PReLU slopes: 11,176,512 - 9,408 + 15,680 + 64 = 11,182,848.
- One MS-TCN block (kernels 3, 5, 7; 3 x 256 = 768 wide): per branch b = 256 and set, conv c*b*k + b, batch norm 2b,
  PReLU b, a 1x1 shortcut when the width changes and a final PReLU (768): 768 -> 768 is 2 x (768 x 256 x 15 + 3 x 1,024)
  + 768 = 5,905,152; 512 -> 768 is (512 x 256 x 15 + 3,072) + 2,952,192 + (512 x 768 + 768) + 768 = 5,316,096.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.evaluation.plots import loss_terms, plot_training_curves
from pipeline.media.audio import cmvn, db_cmvn, to_db
from pipeline.models.fronts import resnet18, resnet18_video_front, tcn_block, tcn_block_parameters
from pipeline.models.mvm import build_mvm
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


def test_mstcn_block_parameter_counts():
    assert tcn_block_parameters(512, 768) == 5_316_096 and tcn_block_parameters(768, 768) == 5_905_152
    for c_in in (512, 768):
        x = keras.Input((29, c_in))
        block = keras.Model(x, tcn_block(x, 768, 2, 0.2, f"b{c_in}"))
        print(f"MS-TCN block {c_in} -> 768:", trainable(block))
        assert trainable(block) == tcn_block_parameters(c_in, 768)
    with pytest.raises(ValueError):
        tcn_block(keras.Input((4, 8)), 512, 1, 0.2, "odd")  # 512 does not divide by 3 kernels


@pytest.mark.slow
def test_memory_model_with_the_papers_front_and_back_trains_and_averages_memory_losses():
    models = build_mvm(
        (4, 24, 24, 1), (4, 4, 8), 3, dim=512, slots=8, heads=4, levels=2, front="resnet18", back="mstcn", dropout=0.0
    )
    assert [models.train.get_layer(f"memory{i}").reconstruction_weight for i in range(2)] == [0.5, 0.5]
    assert models.train.get_layer("memory1").value.shape == (8, 768)  # the second level sits inside the 768-wide MS-TCN
    video = np.random.default_rng(0).random((2, 4, 24, 24, 1), dtype=np.float32)
    audio = np.random.default_rng(1).normal(size=(2, 4, 4, 8)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[[0, 2]]
    logs = models.train.train_on_batch(
        {"video": video, "audio": audio}, {"visual": labels, "audio": labels}, return_dict=True
    )
    assert np.isfinite(logs["loss"])
    assert tuple(models.infer(video).shape) == (2, 3)


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
