"""FusedLSTM: the same maths and weights as keras.layers.LSTM, forward and backward."""

import numpy as np
import pytest

from textgen.backend import keras, tf
from textgen.model.fused_lstm import FusedLSTM, lstm_sequence


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
    import textgen.model.fused_lstm as module

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


def embedded_twins(vocab_size, units=6, features=5):
    """A stock Embedding + LSTM and an Embedding + FusedLSTM that reads token ids, with equal weights."""
    stock_embedding = keras.layers.Embedding(vocab_size, features)
    fused_embedding = keras.layers.Embedding(vocab_size, features)
    stock, fused = twin_layers(units, features)
    fused.read_tokens_from(fused_embedding)
    for embedding in (stock_embedding, fused_embedding):
        embedding.build((None, None))
        embedding.set_weights([np.random.default_rng(4).normal(size=(vocab_size, features)).astype(np.float32)])
    return (stock_embedding, stock), (fused_embedding, fused)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
def test_the_token_path_matches_embedding_then_the_stock_layer(compiled, monkeypatch):
    import textgen.model.fused_lstm as module

    folded = []
    real = module.lstm_sequence_from_tokens
    monkeypatch.setattr(module, "lstm_sequence_from_tokens", lambda *args: folded.append(1) or real(*args))
    # 7 token ids over 3 x 9 positions, so ids repeat and their gradients must sum.
    tokens = tf.constant(np.random.default_rng(5).integers(0, 7, (3, 9)).astype(np.int32))
    upstream = tf.constant(np.random.default_rng(6).normal(size=(3, 9, 6)).astype(np.float32))

    def outputs_and_gradients(embedding, layer):
        with tf.GradientTape() as tape:
            x = embedding(tokens)
            out = layer(x, token_ids=tokens) if isinstance(layer, FusedLSTM) else layer(x)
            loss = tf.reduce_sum(out * upstream)
        variables = [*embedding.trainable_weights, *layer.trainable_weights]
        return out, [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]

    results = []
    for pair in embedded_twins(vocab_size=7):
        run = tf.function(lambda pair=pair: outputs_and_gradients(*pair), jit_compile=True) if compiled \
            else (lambda pair=pair: outputs_and_gradients(*pair))
        out, grads = run()
        results.append((out.numpy(), [g.numpy() for g in grads]))
    assert folded, "the fused layer did not take the token path"
    (stock_out, stock_grads), (fused_out, fused_grads) = results
    np.testing.assert_allclose(fused_out, stock_out, atol=1e-5)
    assert len(fused_grads) == len(stock_grads) == 4  # embeddings, kernel, recurrent kernel, bias
    for fused_grad, stock_grad in zip(fused_grads, stock_grads):
        np.testing.assert_allclose(fused_grad, stock_grad, atol=1e-4, rtol=1e-4)


def test_the_token_path_is_skipped_when_the_vocabulary_outnumbers_the_batch(monkeypatch):
    import textgen.model.fused_lstm as module

    calls = []
    for name in ("lstm_sequence", "lstm_sequence_from_tokens"):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *args, name=name, real=real: calls.append(name) or real(*args))
    _, (embedding, fused) = embedded_twins(vocab_size=50)
    small_batch = tf.zeros([2, 4], tf.int32)  # 8 positions < 50 ids: three (V, E) x (E, 4U) matmuls would cost more
    fused(embedding(small_batch), token_ids=small_batch)
    large_batch = tf.zeros([5, 10], tf.int32)
    fused(embedding(large_batch), token_ids=large_batch)
    assert calls == ["lstm_sequence", "lstm_sequence_from_tokens"]


def test_without_the_fast_path_token_ids_are_ignored_and_the_stock_layer_runs(monkeypatch):
    import textgen.model.fused_lstm as module

    # As on a GPU, where the stock layer (cuDNN) runs on the embedding's output.
    (stock_embedding, stock), (fused_embedding, fused) = embedded_twins(vocab_size=7)
    monkeypatch.setattr(FusedLSTM, "_fast_path_applies", lambda self, initial_state, mask: False)
    calls = []
    for name in ("lstm_sequence", "lstm_sequence_from_tokens"):
        monkeypatch.setattr(module, name, lambda *args, name=name: calls.append(name))
    tokens = tf.constant(np.random.default_rng(7).integers(0, 7, (3, 9)).astype(np.int32))
    np.testing.assert_allclose(fused(fused_embedding(tokens), token_ids=tokens).numpy(),
                               stock(stock_embedding(tokens)).numpy(), atol=1e-5)
    assert calls == []
