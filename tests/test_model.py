import numpy as np

from textgen.backend import keras, tf
from textgen.config import ModelConfig
from textgen.model import LSTMStep, build_model, expected_shapes, named_weights

CONFIG = ModelConfig(vocab_size=13, layers=3, units=6, embedding_dim=5, dropout=0.2)


def test_model_maps_tokens_to_logits_over_the_vocabulary():
    model = build_model(CONFIG)
    logits = model(np.zeros((2, 7), np.int32))
    assert tuple(logits.shape) == (2, 7, 13)


def test_named_weights_have_the_shapes_the_settings_predict():
    model = build_model(CONFIG)
    named = named_weights(model, CONFIG)
    assert {name: tuple(v.shape) for name, v in named.items()} == expected_shapes(CONFIG)
    assert sum(int(np.prod(v.shape)) for v in named.values()) == CONFIG.parameter_count()


def test_lstm_layers_are_stock_keras_layers_for_weight_compatibility():
    model = build_model(CONFIG)
    assert all(isinstance(model.get_layer(f"lstm_{i}"), keras.layers.LSTM) for i in range(3))


def test_single_step_form_matches_the_sequence_model():
    keras.utils.set_random_seed(1)
    model = build_model(CONFIG)
    for variable in model.trainable_variables:  # make the biases non-trivial too
        variable.assign(np.random.default_rng(0).normal(0, 0.5, variable.shape).astype(np.float32))
    tokens = np.random.default_rng(1).integers(0, 13, (3, 9)).astype(np.int32)
    expected = model(tokens, training=False).numpy()  # (B, T, V)
    step = LSTMStep(model, CONFIG)
    states = step.initial_states(3)
    for t in range(9):
        logits, states = step.step(tf.constant(tokens[:, t]), states)
        np.testing.assert_allclose(logits.numpy(), expected[:, t], atol=1e-5)
