"""MP-LSTM and MV-LSTM cells and layers, and temporal attention, against Keras and numpy transcriptions."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from pipeline.models import MPLSTM, MVLSTM, TemporalAttention
from pipeline.models.mvlstm import TOPOLOGIES, connectivity

RNG = np.random.default_rng(7)


def data(*shape: int) -> np.ndarray:
    """Standard-normal float32 test data."""
    return RNG.normal(size=shape).astype("float32")


def randomise(layer: keras.layers.Layer) -> None:
    """Give every weight random values (so zero biases hide nothing)."""
    layer.set_weights([0.5 * data(*w.shape) for w in layer.get_weights()])


def numpy_mplstm(xs: list[np.ndarray], cell: keras.layers.Layer, released: bool) -> np.ndarray:
    """The released cell's equations, gate by gate and perspective by perspective: outputs [B, T, u]."""
    kernels = [ops.convert_to_numpy(k) for k in cell.kernels]
    recurrent, bias = ops.convert_to_numpy(cell.recurrent_kernel), ops.convert_to_numpy(cell.bias)
    u = cell.units
    if released:
        gate = lambda v: np.clip(0.2 * v + 0.5, 0.0, 1.0)  # noqa: E731  Keras 2 hard sigmoid
    else:
        gate = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    u_i, u_f, u_c, u_o = np.split(recurrent, 4, axis=1)
    if released:
        u_c = u_f  # the released code's candidate reads U_f
    batch, steps = xs[0].shape[:2]
    h, c = np.zeros((batch, u)), np.zeros((batch, u))
    outputs = []
    for t in range(steps):
        o_gates = []
        for j, x in enumerate(xs):
            w_i, w_f, w_c, w_o = np.split(kernels[j], 4, axis=1)
            b_i, b_f, b_c, b_o = np.split(bias[4 * u * j : 4 * u * (j + 1)], 4)
            s = x[:, t]
            i = gate(s @ w_i + h @ u_i + b_i)
            f = gate(s @ w_f + h @ u_f + b_f)
            g = np.tanh(s @ w_c + h @ u_c + b_c)
            o_gates.append(gate(s @ w_o + h @ u_o + b_o))
            c = f * c + i * g
        h = sum(o * np.tanh(c) for o in o_gates)
        outputs.append(h)
    return np.stack(outputs, axis=1)


def numpy_mvlstm(xs: list[np.ndarray], cell: keras.layers.Layer, output_tanh: bool) -> np.ndarray:
    """The MV-LSTM paper's eqs. 7-17 with explicit A and B selection matrices: outputs [B, T, units]."""
    w_x = [ops.convert_to_numpy(k) for k in cell.kernels]
    recurrent, bias = ops.convert_to_numpy(cell.recurrent_kernel), ops.convert_to_numpy(cell.bias)
    m, units = len(xs), cell.units
    n = units // m
    a = np.diag((np.arange(n) < round(cell.alpha * n)).astype(float))
    b = np.diag((np.arange(n) >= n - round(cell.beta * n)).astype(float))
    gates = np.arange(4)[:, None] * units
    columns = [(gates + np.arange(v * n, (v + 1) * n)).ravel() for v in range(m)]  # view v's units in each gate block
    w_h = [[recurrent[k * n : (k + 1) * n][:, columns[v]] for k in range(m)] for v in range(m)]
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    batch, steps = xs[0].shape[:2]
    h = [np.zeros((batch, n)) for _ in range(m)]
    c = [np.zeros((batch, n)) for _ in range(m)]
    outputs = []
    for t in range(steps):
        new_h = []
        for v in range(m):
            pre = xs[v][:, t] @ w_x[v] + bias[4 * n * v : 4 * n * (v + 1)] + (h[v] @ a) @ w_h[v][v]
            pre = pre + sum((h[k] @ b) @ w_h[v][k] for k in range(m) if k != v)
            i, f, g, o = np.split(pre, 4, axis=1)
            c[v] = sig(f) * c[v] + sig(i) * np.tanh(g)
            new_h.append(sig(o) * (np.tanh(c[v]) if output_tanh else c[v]))
        h = new_h
        outputs.append(np.concatenate(h, axis=1))
    return np.stack(outputs, axis=1)


def padded(x: np.ndarray, lengths: list[int], total: int) -> np.ndarray:
    """x cut to per-sample lengths and zero-padded to ``total`` frames."""
    out = np.zeros((x.shape[0], total, x.shape[2]), dtype=x.dtype)
    for k, length in enumerate(lengths):
        out[k, :length] = x[k, :length]
    return out


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_one_perspective_equals_keras_lstm(masked, go_backwards):
    x = padded(data(3, 7, 5), [7, 4, 2], 7) if masked else data(3, 7, 5)
    layer_in = keras.layers.Masking() if masked else keras.layers.Identity()
    lstm = keras.layers.LSTM(6, return_sequences=True, go_backwards=go_backwards)
    ours = MPLSTM(6, 1, return_sequences=True, go_backwards=go_backwards)
    expected = lstm(layer_in(x))
    ours.build(x.shape)
    ours.set_weights(lstm.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(ours(layer_in(x))), ops.convert_to_numpy(expected), atol=1e-5)


@pytest.mark.parametrize("released", [False, True])
def test_matches_numpy_transcription_of_the_equations(released):
    xs = [data(2, 5, 3), data(2, 5, 4), data(2, 5, 3)]
    layer = MPLSTM(4, 3, released=released, return_sequences=True)
    layer(xs)
    randomise(layer)
    expected = numpy_mplstm(xs, layer.cell, released)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(xs)), expected, atol=1e-5)


def test_list_and_concatenated_inputs_agree_and_dims_are_checked():
    xs = [data(2, 4, 3), data(2, 4, 5)]
    from_list = MPLSTM(4, 2, return_sequences=True)
    from_list(xs)
    from_concat = MPLSTM(4, 2, input_dims=[3, 5], return_sequences=True)
    from_concat.build((2, 4, 8))
    from_concat.set_weights(from_list.get_weights())
    np.testing.assert_allclose(
        ops.convert_to_numpy(from_concat(np.concatenate(xs, -1))), ops.convert_to_numpy(from_list(xs)), atol=1e-6
    )
    with pytest.raises(ValueError, match="split"):
        MPLSTM(4, 3)(data(2, 4, 8))
    with pytest.raises(ValueError, match="input_dims"):
        MPLSTM(4, 2, input_dims=[3, 4])(data(2, 4, 8))


def test_masking_ignores_padding_in_both_directions():
    x = data(2, 5, 6)
    short = keras.layers.Bidirectional(MPLSTM(4, 2, return_sequences=True))
    expected = ops.convert_to_numpy(short([x[..., :4], x[..., 4:]]))
    longer = keras.layers.Bidirectional(MPLSTM(4, 2, return_sequences=True))
    longer.build([(2, 8, 4), (2, 8, 2)])
    longer.set_weights(short.get_weights())
    views = [keras.layers.Masking()(padded(v, [5, 5], 8)) for v in (x[..., :4], x[..., 4:])]  # one mask per view
    got = ops.convert_to_numpy(longer(views))
    np.testing.assert_allclose(got[:, :5], expected, atol=1e-5)
    assert not got[:, 5:].any()
    last = MPLSTM(4, 2)
    final = ops.convert_to_numpy(last(x))
    again = MPLSTM(4, 2)
    again.build((2, 8, 6))
    again.set_weights(last.get_weights())
    got = ops.convert_to_numpy(again(keras.layers.Masking()(padded(x, [5, 5], 8))))
    np.testing.assert_allclose(got, final, atol=1e-5)


def test_dropout_only_in_training_and_states_returned():
    x = [data(4, 6, 3), data(4, 6, 3)]
    layer = MPLSTM(5, 2, dropout=0.5, recurrent_dropout=0.5, return_state=True, seed=1)
    out, h, c = layer(x)
    assert out.shape == h.shape == c.shape == (4, 5)
    inference = ops.convert_to_numpy(layer(x)[0])
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x, training=False)[0]), inference)
    assert not np.allclose(ops.convert_to_numpy(layer(x, training=True)[0]), inference)
    assert layer.cell.recurrent_mask is None and layer.cell.loop_kernel is None


def test_training_step_gradients_are_finite_and_save_load_round_trips(tmp_path):
    inputs = [keras.Input((6, 3)), keras.Input((6, 2))]
    hidden = keras.layers.Bidirectional(MPLSTM(4, 2, released=True, dropout=0.2, return_sequences=True))(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(TemporalAttention()(hidden)))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
    xs, y = [data(8, 6, 3), data(8, 6, 2)], np.eye(2)[RNG.integers(0, 2, 8)]
    cell = model.layers[2].forward_layer.cell
    before = [w.copy() for w in model.get_weights()]
    unused = ops.convert_to_numpy(cell.recurrent_kernel)[:, 8:12].copy()  # U_c: allocated, never read when released
    assert np.isfinite(model.train_on_batch(xs, y))
    after = model.get_weights()
    assert all(np.isfinite(w).all() for w in after)
    assert all(not np.allclose(a, b) for a, b in zip(before, after))
    np.testing.assert_array_equal(ops.convert_to_numpy(cell.recurrent_kernel)[:, 8:12], unused)
    path = tmp_path / "mplstm.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(xs, verbose=0), model.predict(xs, verbose=0), atol=1e-6)
    assert loaded.layers[2].forward_layer.cell.released


def test_config_round_trip():
    layer = MPLSTM(3, 2, released=True, dropout=0.1, go_backwards=True, return_sequences=True, name="mp")
    layer(data(1, 2, 4))
    clone = MPLSTM.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.cell.recurrent_activation is layer.cell.recurrent_activation


def test_mvlstm_one_view_equals_keras_lstm():
    x = data(3, 5, 4)
    lstm = keras.layers.LSTM(6, return_sequences=True)
    expected = lstm(x)
    ours = MVLSTM(6, 1, alpha=1.0, beta=0.0, output_activation="tanh", return_sequences=True)
    ours.build(x.shape)
    ours.set_weights(lstm.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(ours(x)), ops.convert_to_numpy(expected), atol=1e-5)


@pytest.mark.parametrize("alpha,beta,output_tanh", [(1 / 3, 1 / 3, False), (*TOPOLOGIES["hybrid"], True)])
def test_mvlstm_matches_the_paper_equations(alpha, beta, output_tanh):
    xs = [data(2, 4, 3), data(2, 4, 5), data(2, 4, 2)]
    output = "tanh" if output_tanh else None
    layer = MVLSTM(30, 3, alpha=alpha, beta=beta, output_activation=output, return_sequences=True)
    layer(xs)
    randomise(layer)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(xs)), numpy_mvlstm(xs, layer.cell, output_tanh), atol=1e-4)


def test_mvlstm_topologies_and_round_trip():
    views, n = 3, 4
    specific = connectivity(views * n, views, *TOPOLOGIES["view_specific"]).reshape(views, n, 4, views, n)
    coupled = connectivity(views * n, views, *TOPOLOGIES["coupled"]).reshape(views, n, 4, views, n)
    for v in range(views):
        for k in range(views):
            assert specific[v, :, :, k].all() if v == k else not specific[v, :, :, k].any()
            assert not coupled[v, :, :, k].any() if v == k else coupled[v, :, :, k].all()
    with pytest.raises(ValueError, match="multiple"):
        MVLSTM(10, 3)
    layer = MVLSTM(6, 3, alpha=0.5, beta=0.5, dropout=0.1)
    layer(data(1, 2, 6))
    assert MVLSTM.from_config(layer.get_config()).get_config() == layer.get_config()


def test_temporal_attention_as_released_and_mask_aware():
    x = data(2, 4, 3)
    layer = TemporalAttention()
    layer(x)
    randomise(layer)
    kernel, bias = layer.get_weights()
    scores = np.einsum("btf,ts->bsf", x, kernel) + bias[None, :, None]
    weights = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), x * weights, atol=1e-5)
    mask = np.array([[True, True, True, False], [True, True, False, False]])
    attention = ops.convert_to_numpy(layer.attention(x, mask))
    np.testing.assert_allclose(attention.sum(axis=1), 1.0, atol=1e-5)
    assert not attention[~mask].any()
    assert not ops.convert_to_numpy(layer(x, mask=mask))[~mask].any()
