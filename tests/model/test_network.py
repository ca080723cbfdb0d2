import numpy as np
import pytest

from textgen.backend import keras, tf
from textgen.model.settings import ModelConfig
from textgen.model.cells import CELL_TYPES, get_cell
from textgen.model.network import ModelStep, build_model, expected_shapes, named_weights

CONFIG = ModelConfig(vocab_size=13, layers=3, units=6, embedding_dim=5, dropout=0.2)


def randomized(model):
    """Give every weight (biases and peepholes too) non-trivial values."""
    rng = np.random.default_rng(0)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(0, 0.5, variable.shape).astype(np.float32))
    return model


def test_model_maps_tokens_to_logits_over_the_vocabulary():
    model = build_model(CONFIG)
    logits = model(np.zeros((2, 7), np.int32))
    assert tuple(logits.shape) == (2, 7, 13)


@pytest.mark.parametrize("cell", CELL_TYPES)
def test_named_weights_have_the_shapes_the_settings_predict(cell):
    config = ModelConfig(vocab_size=13, layers=2, units=6, embedding_dim=5, cell=cell)
    model = build_model(config)
    named = named_weights(model, config)
    assert {name: tuple(v.shape) for name, v in named.items()} == expected_shapes(config)
    assert sum(int(np.prod(v.shape)) for v in named.values()) == config.parameter_count()
    assert len(model.trainable_variables) == len(named)  # nothing trains that is not saved


def test_lstm_layers_are_stock_keras_layers_for_weight_compatibility():
    model = build_model(CONFIG)
    assert all(isinstance(model.get_layer(f"lstm_{i}"), keras.layers.LSTM) for i in range(3))


@pytest.mark.parametrize("cell", CELL_TYPES)
def test_single_step_form_matches_the_sequence_model(cell):
    config = ModelConfig(vocab_size=13, layers=2, units=6, embedding_dim=5, dropout=0.2, cell=cell)
    keras.utils.set_random_seed(1)
    model = randomized(build_model(config))
    tokens = np.random.default_rng(1).integers(0, 13, (3, 9)).astype(np.int32)
    expected = model(tokens, training=False).numpy()  # (B, T, V)
    step = ModelStep(model, config)
    states = step.initial_states(3)
    assert len(states) == config.layers * (2 if cell in ("lstm", "peephole", "cifg") else 1)
    table = step.input_table()  # (V, gates * U)
    assert tuple(table.shape) == (13, get_cell(cell).gates * 6)
    tabled = states
    for t in range(9):
        logits, states = step.step(tf.constant(tokens[:, t]), states)
        np.testing.assert_allclose(logits.numpy(), expected[:, t], atol=1e-5)
        logits, tabled = step.step(tf.constant(tokens[:, t]), tabled, input_table=table)
        np.testing.assert_allclose(logits.numpy(), expected[:, t], atol=1e-5)


def test_the_first_lstm_layer_folds_the_embedding_and_the_gradients_stay_the_same(monkeypatch):
    import textgen.model.fused_lstm as fused_lstm

    config = ModelConfig(vocab_size=13, layers=2, units=6, embedding_dim=5)
    model = randomized(build_model(config))
    tokens = np.random.default_rng(1).integers(0, 13, (4, 7)).astype(np.int32)  # 28 positions >= 13 ids
    folded = []
    real = fused_lstm.lstm_sequence_from_tokens
    monkeypatch.setattr(fused_lstm, "lstm_sequence_from_tokens", lambda *args: folded.append(1) or real(*args))

    def loss_and_gradients():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(model(tokens)))  # (B, T, V) -> ()
        return loss.numpy(), [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_variables)]

    loss, gradients = loss_and_gradients()
    assert folded == [1]
    monkeypatch.setattr(model.get_layer("lstm_0"), "_embeddings_to_fold", lambda token_ids: None)
    unfolded_loss, unfolded_gradients = loss_and_gradients()
    assert folded == [1]  # the second pass took the embedding's output instead
    np.testing.assert_allclose(loss, unfolded_loss, rtol=1e-5)
    for gradient, unfolded in zip(gradients, unfolded_gradients):
        np.testing.assert_allclose(gradient, unfolded, atol=1e-5, rtol=1e-4)
