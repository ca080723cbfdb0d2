"""FusedLSTM: the same maths and weights as keras.layers.LSTM, forward and backward."""

import numpy as np
import pytest

from textgen.backend import keras, tf
from textgen.fused_lstm import FusedLSTM, lstm_sequence


def twin_layers(units=6, features=5):
    stock = keras.layers.LSTM(units, return_sequences=True)
    fused = FusedLSTM(units, return_sequences=True)
    stock.build((None, None, features))
    fused.build((None, None, features))
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.4, w.shape).astype(np.float32) for w in stock.get_weights()]
    stock.set_weights(weights)
    fused.set_weights(weights)  # weight-compatible: the same list loads into both
    return stock, fused


def test_variables_have_the_stock_names_and_shapes():
    stock, fused = twin_layers()
    assert [(w.name, tuple(w.shape)) for w in fused.weights] == [(w.name, tuple(w.shape)) for w in stock.weights]


@pytest.mark.parametrize("steps", [9, 1])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
def test_forward_and_gradients_match_the_stock_layer(steps, compiled):
    stock, fused = twin_layers()
    x = tf.constant(np.random.default_rng(1).normal(size=(3, steps, 5)).astype(np.float32))
    upstream = tf.constant(np.random.default_rng(2).normal(size=(3, steps, 6)).astype(np.float32))

    def outputs_and_gradients(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x)
            loss = tf.reduce_sum(out * upstream)
        return out, tape.gradient(loss, [x, *layer.trainable_weights])

    results = []
    for layer in (stock, fused):
        run = tf.function(lambda layer=layer: outputs_and_gradients(layer), jit_compile=True) if compiled \
            else (lambda layer=layer: outputs_and_gradients(layer))
        out, grads = run()
        results.append((out.numpy(), [g.numpy() for g in grads]))
    (stock_out, stock_grads), (fused_out, fused_grads) = results
    np.testing.assert_allclose(fused_out, stock_out, atol=1e-5)
    for fused_grad, stock_grad in zip(fused_grads, stock_grads):
        np.testing.assert_allclose(fused_grad, stock_grad, atol=1e-4, rtol=1e-4)


def test_the_fast_path_is_taken_for_textgen_models_and_not_otherwise(monkeypatch):
    calls = []
    import textgen.fused_lstm as module

    real = module.lstm_sequence
    monkeypatch.setattr(module, "lstm_sequence", lambda *args: calls.append(1) or real(*args))
    _, fused = twin_layers()
    x = tf.zeros([2, 4, 5])
    fused(x)
    assert calls == [1]
    fused(x, initial_state=[tf.zeros([2, 6]), tf.zeros([2, 6])])  # the stock path handles this
    assert calls == [1]


@pytest.mark.parametrize("shape", [(1, 1, 3), (4, 13, 3)])
def test_lstm_sequence_matches_a_numpy_reference(shape):
    rng = np.random.default_rng(3)
    x = rng.normal(size=shape).astype(np.float32)
    kernel = rng.normal(0, 0.5, (3, 8)).astype(np.float32)
    recurrent = rng.normal(0, 0.5, (2, 8)).astype(np.float32)
    bias = rng.normal(0, 0.5, (8,)).astype(np.float32)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h = c = np.zeros((shape[0], 2), np.float32)
    expected = []
    for t in range(shape[1]):
        i, f, g, o = np.split(x[:, t] @ kernel + h @ recurrent + bias, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        expected.append(h)
    np.testing.assert_allclose(lstm_sequence(x, kernel, recurrent, bias).numpy(), np.stack(expected, 1), atol=1e-5)
