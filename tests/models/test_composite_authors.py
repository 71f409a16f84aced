"""The composite model under the authors' options (emansim/unsupervised-videos), against plain numpy transcriptions of
their equations: the peephole step (lstm.py / lstm_fprop), the conditional decoders' inputs (lstm_combo.py Fprop, in
training and at test), the time-averaged classifier (lstm_classifier.py) and the 2048-unit model's size."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.models import registry
from pipeline.models.composite import (
    FUTURE_INPUT,
    PREDICTION,
    RECONSTRUCTION,
    FrameLoss,
    PeepholeLSTMCell,
    build_composite,
    classifier_from_encoder,
    composite_inputs,
    composite_targets,
    log_likelihood_loss,
    peephole_encoder,
)

UNITS, SIDE, SEEN, FUTURE = 6, 3, 4, 3
DIM = SIDE * SIDE


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def authors_step(x, h, c, w_input, w_dense, w_diag, b):
    """lstm_fprop: gates from the input and the previous h; i and f peep at c_{t-1}, o at the new c."""
    gates = h @ w_dense.T + (0.0 if x is None else x @ w_input.T)
    i, f, a, o = np.split(gates, 4, axis=1)
    b_i, b_f, b_a, b_o = np.split(b, 4)
    p_i, p_f, p_o = np.split(w_diag, 3)
    i = sigmoid(i + c * p_i + b_i)
    f = sigmoid(f + c * p_f + b_f)
    a = np.tanh(a + b_a)
    c = c * f + i * a
    o = sigmoid(o + c * p_o + b_o)
    return o * np.tanh(c), c


def authors_params(cell: PeepholeLSTMCell) -> tuple:
    """Our cell's weights in the authors' layout: (w_input [4u, d] or None, w_dense [4u, u], w_diag [3u], b [4u])."""
    w_input = keras.ops.convert_to_numpy(cell.kernel).T if cell.has_input else None
    return (
        w_input,
        keras.ops.convert_to_numpy(cell.recurrent_kernel).T,
        keras.ops.convert_to_numpy(cell.peephole),
        keras.ops.convert_to_numpy(cell.bias),
    )


def authors_combo(model: keras.Model, v: np.ndarray, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """lstm_combo.py Fprop on flattened clips ``v [B, SEEN + FUTURE, d]`` with binary data: (reconstruction, future)."""
    enc = authors_params(model.get_layer("encoder").get_layer("encoder_lstm").cell)
    h = c = np.zeros((len(v), UNITS))
    for t in range(SEEN):
        h, c = authors_step(v[:, t], h, c, *enc)
    outputs = []
    for key in (RECONSTRUCTION, PREDICTION):
        decoder = model.get_layer(f"{key}_decoder")
        params = authors_params(decoder.cell)
        w_out, b_out = (keras.ops.convert_to_numpy(w) for w in decoder.readout.weights)
        hd, cd, frames = h, c, []
        for t in range(SEEN if key == RECONSTRUCTION else FUTURE):
            if t == 0:
                x = None
            elif key == RECONSTRUCTION:
                x = v[:, SEEN - t]  # t2 = enc_seq_length - t, train or test
            else:
                x = v[:, SEEN + t - 1] if train else frames[t - 1]  # the generated frame at test
            hd, cd = authors_step(x, hd, cd, *params)
            frames.append(sigmoid(hd @ w_out + b_out))
        outputs.append(np.stack(frames, axis=1))
    return outputs[0], outputs[1]


def randomise(model: keras.Model, seed: int, scale: float = 0.5) -> None:
    """Every weight drawn anew (biases and peepholes included), so that no term of the equations is zero."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, scale, w.shape).astype(np.float32) for w in model.get_weights()])


def authors_model(conditional="teacher", future=FUTURE) -> keras.Model:
    return build_composite(
        SEEN,
        future,
        UNITS,
        frame_shape=(SIDE, SIDE),
        conditional=conditional,
        peepholes=True,
        init="authors",
        encoder=peephole_encoder,
        loss_reduction="sum",
        optimizer=keras.optimizers.SGD(1e-4, momentum=0.9),
    )


def clips(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, SEEN + FUTURE, SIDE, SIDE)).astype(np.float32)


def test_one_peephole_step_is_the_authors_equation():
    cell = PeepholeLSTMCell(UNITS, peepholes=True, init="authors")
    cell.build((None, 5))
    rng = np.random.default_rng(0)
    for w in cell.weights:
        w.assign(rng.normal(0, 0.7, w.shape).astype(np.float32))
    x, h, c = (rng.normal(0, 1, (4, d)).astype(np.float32) for d in (5, UNITS, UNITS))
    ours_h, ours_c = (keras.ops.convert_to_numpy(a) for a in cell.step(x, h, c))
    ref_h, ref_c = authors_step(x, h, c, *authors_params(cell))
    np.testing.assert_allclose(ours_c, ref_c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours_h, ref_h, rtol=1e-5, atol=1e-6)
    # without its peepholes the step differs: the test would see a gate that ignored them
    no_peep = authors_params(cell)[:2] + (np.zeros(3 * UNITS), authors_params(cell)[3])
    assert not np.allclose(ours_c, authors_step(x, h, c, *no_peep)[1], atol=1e-3)


def test_authors_initialisation_and_the_keras_one():
    cell = PeepholeLSTMCell(64, init="authors")
    cell.build((None, 32))
    kernel, recurrent, peephole, bias = (keras.ops.convert_to_numpy(w) for w in cell.weights)
    assert 0.005 < np.abs(kernel).max() <= 0.01 and 0.005 < np.abs(recurrent).max() <= 0.01
    assert 0.05 < np.abs(peephole).max() <= 0.1 and peephole.shape == (192,)
    assert not bias.any()
    plain = PeepholeLSTMCell(64, peepholes=False, init="keras")
    plain.build((None, 32))
    assert [w.name for w in plain.weights] == ["kernel", "recurrent_kernel", "bias"]
    assert keras.ops.convert_to_numpy(plain.bias)[64:128].tolist() == [1.0] * 64
    with pytest.raises(ValueError, match="init must be one of"):
        PeepholeLSTMCell(4, init="xavier")


def test_teacher_forcing_in_training_and_own_outputs_at_inference():
    keras.utils.set_random_seed(3)
    model = authors_model()
    randomise(model, 3)
    assert [t.name for t in model.inputs] == ["frames", FUTURE_INPUT]
    v = clips(5, 4)
    x = composite_inputs(model, v[:, :SEEN], v[:, SEEN:])
    for train in (True, False):
        out = model(x, training=train)
        recon, pred = authors_combo(model, v.reshape(5, SEEN + FUTURE, DIM), train)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(out[RECONSTRUCTION]).reshape(recon.shape), recon, atol=2e-5
        )
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out[PREDICTION]).reshape(pred.shape), pred, atol=2e-5)
    # training output depends on the true future frames; inference only on the model's own outputs
    other = [x[0], clips(5, 5)[:, SEEN:]]
    trained = [keras.ops.convert_to_numpy(model(inp, training=True)[PREDICTION]) for inp in (x, other)]
    inferred = [keras.ops.convert_to_numpy(model(inp, training=False)[PREDICTION]) for inp in (x, other)]
    assert np.allclose(trained[0][:, 0], trained[1][:, 0]) and not np.allclose(trained[0][:, 1:], trained[1][:, 1:])
    np.testing.assert_array_equal(inferred[0], inferred[1])
    assert np.array_equal(composite_inputs(model, x[0])[1], np.zeros_like(x[1]))


def test_free_running_decoders_never_see_true_frames():
    keras.utils.set_random_seed(5)
    model = authors_model("free")
    randomise(model, 5)
    assert len(model.inputs) == 1
    seen = clips(3, 6)[:, :SEEN]
    train, infer = (keras.ops.convert_to_numpy(model(seen, training=t)[PREDICTION]) for t in (True, False))
    np.testing.assert_allclose(train, infer, atol=1e-6)
    teacher = authors_model()
    teacher.set_weights(model.get_weights())
    forced = teacher(composite_inputs(teacher, seen, clips(3, 7)[:, SEEN:]), training=True)[PREDICTION]
    assert not np.allclose(keras.ops.convert_to_numpy(forced)[:, 1:], train[:, 1:], atol=1e-4)


def test_summed_loss_and_one_training_step_under_sgd():
    keras.utils.set_random_seed(8)
    model = authors_model()
    v = clips(4, 8)
    targets = composite_targets(v[:, :SEEN], v[:, SEEN:])
    pred = np.clip(np.random.default_rng(9).random(targets[PREDICTION].shape), 0.05, 0.95).astype(np.float32)
    expected = -(targets[PREDICTION] * np.log(pred) + (1 - targets[PREDICTION]) * np.log(1 - pred)).sum()
    loss = FrameLoss(bernoulli=True, reduction="sum")(targets[PREDICTION], pred)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    before = [w.copy() for w in model.get_weights()]
    model.fit(composite_inputs(model, v[:, :SEEN], v[:, SEEN:]), targets, batch_size=4, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_time_averaged_classifier_is_the_mean_of_per_step_softmaxes(tmp_path):
    keras.utils.set_random_seed(10)
    model = authors_model(future=0)
    randomise(model, 10)
    classifier = classifier_from_encoder(model, n_classes=4, dropout=0.0, head="time-average")
    randomise(classifier, 11, scale=2.0)
    x = clips(6, 12)[:, :SEEN]
    cell = classifier.get_layer("encoder").get_layer("encoder_lstm").cell
    w, b = (keras.ops.convert_to_numpy(t) for t in classifier.get_layer("classifier").weights)
    h = c = np.zeros((6, UNITS))
    steps = []
    for t in range(SEEN):
        h, c = authors_step(x[:, t].reshape(6, DIM), h, c, *authors_params(cell))
        logits = h @ w + b
        steps.append(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
    p = np.stack(steps, axis=1)  # [B, T, C]
    inferred = keras.ops.convert_to_numpy(classifier([x], training=False))
    np.testing.assert_allclose(inferred, p.mean(axis=1), atol=1e-5)
    labels = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1]]
    trained = classifier([x], training=True)
    per_step = -(labels[:, None] * np.log(p)).sum(axis=-1).mean(axis=1)  # each step's cross-entropy, averaged
    np.testing.assert_allclose(keras.ops.convert_to_numpy(log_likelihood_loss(labels, trained)), per_step, rtol=1e-4)
    assert not np.allclose(per_step, -(labels * np.log(p.mean(axis=1))).sum(axis=-1), rtol=1e-3)
    history = classifier.fit([x], labels, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    path = tmp_path / "classifier.keras"
    classifier.save(path)
    restored = keras.models.load_model(path, custom_objects=registry.custom_objects())
    np.testing.assert_allclose(restored([x]), classifier([x]), atol=1e-6)


def test_authors_size_counts_167823360_parameters():
    model = build_composite(
        10,
        10,
        2048,
        frame_shape=(64, 64),
        conditional="teacher",
        peepholes=True,
        init="authors",
        encoder=peephole_encoder,
        compile=False,
    )
    assert model.count_params() == 167_823_360
    assert model.get_layer("encoder").count_params() == 50_345_984  # w_input, w_dense, w_diag, b
    assert model.get_layer("prediction_decoder").count_params() == 58_738_688  # ... plus w_output, b_output
