"""Every cell against an independent NumPy reference: forward values, step records and gradients."""

import numpy as np
import pytest

from reference_cells import run as reference_run
from textgen.backend import keras, tf
from textgen.model.cells import CELL_TYPES, get_cell
from textgen.model.recurrent_layer import RecurrentLayer, run_sequence
from textgen.model.settings import ModelConfig
from textgen.errors import ConfigError
from textgen.model.fused_lstm import FusedLSTM
from textgen.model.network import build_model, layer_weights

B, T, E, U = 3, 7, 4, 5


def random_weights(cell, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0, 0.6, shape) for name, shape in get_cell(cell).weight_shapes(E, U).items()}


def random_inputs(seed=1):
    return np.random.default_rng(seed).normal(size=(B, T, E))


def built_layer(cell, weights):
    """The layer textgen builds for ``cell``, holding ``weights``."""
    layer = FusedLSTM(U, return_sequences=True) if cell == "lstm" else RecurrentLayer(cell, U)
    layer.build((None, None, E))
    if cell == "lstm":
        variables = {"kernel": layer.cell.kernel, "recurrent_kernel": layer.cell.recurrent_kernel,
                     "bias": layer.cell.bias}
    else:
        variables = layer.weights_by_name()
    for name, variable in variables.items():
        variable.assign(weights[name].astype(np.float32))
    return layer, variables


@pytest.mark.parametrize("cell", CELL_TYPES)
def test_sequence_form_matches_the_numpy_reference(cell):
    weights, x = random_weights(cell), random_inputs()
    expected, _ = reference_run(cell, weights, x)
    layer, _ = built_layer(cell, weights)
    np.testing.assert_allclose(layer(x.astype(np.float32)).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("cell", CELL_TYPES)
def test_every_recorded_quantity_matches_the_reference_step_by_step(cell):
    weights, x = random_weights(cell, seed=2), random_inputs(seed=3)
    _, expected = reference_run(cell, weights, x)
    maths = get_cell(cell)
    tf_weights = {name: tf.constant(value, tf.float32) for name, value in weights.items()}
    states = tuple(tf.zeros([B, U]) for _ in maths.state_names)
    for t in range(T):
        states, record = maths.step(tf_weights, tf.constant(x[:, t], tf.float32), states)
        assert set(record) == set(expected[t])
        for name, value in record.items():
            np.testing.assert_allclose(value.numpy(), expected[t][name], atol=1e-5, err_msg=f"{cell} {name} t={t}")


@pytest.mark.parametrize("cell", CELL_TYPES)
def test_gradients_match_finite_differences_of_the_reference(cell):
    weights, x = random_weights(cell, seed=4), random_inputs(seed=5)
    upstream = np.random.default_rng(6).normal(size=(B, T, U))

    def reference_loss(weights, x):
        hidden, _ = reference_run(cell, weights, x)
        return float(np.sum(hidden * upstream))

    layer, variables = built_layer(cell, weights)
    x_tensor = tf.constant(x, tf.float32)
    names = list(variables)
    with tf.GradientTape() as tape:
        tape.watch(x_tensor)
        loss = tf.reduce_sum(layer(x_tensor) * tf.constant(upstream, tf.float32))
    gradients = tape.gradient(loss, [x_tensor] + [variables[name] for name in names])

    rng = np.random.default_rng(7)
    epsilon = 1e-6
    for target, gradient in zip(["x"] + names, gradients):
        gradient = np.asarray(gradient)
        values = x if target == "x" else weights[target]
        # Central differences on a sample of entries of every array (all of the small ones).
        flat_indices = rng.choice(values.size, size=min(values.size, 12), replace=False)
        for flat in flat_indices:
            index = np.unravel_index(flat, values.shape)
            plus, minus = values.copy(), values.copy()
            plus[index] += epsilon
            minus[index] -= epsilon
            if target == "x":
                numeric = (reference_loss(weights, plus) - reference_loss(weights, minus)) / (2 * epsilon)
            else:
                numeric = (reference_loss({**weights, target: plus}, x)
                           - reference_loss({**weights, target: minus}, x)) / (2 * epsilon)
            assert gradient[index] == pytest.approx(numeric, rel=2e-3, abs=2e-4), f"{cell} d/d{target}{index}"


def test_gru_is_weight_compatible_with_the_stock_keras_gru():
    weights, x = random_weights("gru", seed=8), random_inputs(seed=9).astype(np.float32)
    ours, _ = built_layer("gru", weights)
    stock = keras.layers.GRU(U, return_sequences=True, reset_after=True)
    stock.build((None, None, E))
    stock.set_weights([weights["kernel"], weights["recurrent_kernel"], weights["bias"]])
    np.testing.assert_allclose(ours(x).numpy(), stock(x).numpy(), atol=1e-5)


@pytest.mark.parametrize("cell", CELL_TYPES)
def test_every_cell_type_starts_from_the_same_initialisation(cell):
    """build_model draws every cell's kernels and biases from U(-1/sqrt(U), 1/sqrt(U)), peepholes at zero,
    so that cell types are compared on their equations, not on where they start."""
    units = 64
    config = ModelConfig(vocab_size=7, cell=cell, layers=1, units=units, embedding_dim=E)
    weights = {name: v.numpy() for name, v in layer_weights(build_model(config), config, 0).items()}
    bound = units ** -0.5
    for name in ("kernel", "recurrent_kernel", "bias"):
        values = weights[name]
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.8 * bound, name
        for block in np.split(values, values.shape[-1] // units, axis=-1):  # no gate starts biased open or shut
            assert abs(block.mean()) < 0.5 * bound, name  # 7 standard errors of a 64-value mean
    for name in set(weights) - {"kernel", "recurrent_kernel", "bias"}:
        np.testing.assert_array_equal(weights[name], 0.0)


def test_layer_config_round_trips_and_bad_settings_are_refused():
    layer = RecurrentLayer("peephole", 7, name="peephole_0")
    assert RecurrentLayer.from_config(layer.get_config()).get_config() == layer.get_config()
    with pytest.raises(ConfigError, match="Received: cell='lstm2'"):
        RecurrentLayer("lstm2", 3)
    with pytest.raises(ConfigError, match="Received: units=0"):
        RecurrentLayer("gru", 0)
    with pytest.raises(ConfigError, match="Received: cell='tree'"):
        ModelConfig(vocab_size=5, cell="tree")


def test_run_sequence_is_the_same_maths_as_the_fused_lstm():
    weights, x = random_weights("lstm", seed=10), random_inputs(seed=11).astype(np.float32)
    fused, _ = built_layer("lstm", weights)
    tf_weights = {name: tf.constant(value, tf.float32) for name, value in weights.items()}
    np.testing.assert_allclose(run_sequence(get_cell("lstm"), tf_weights, tf.constant(x)).numpy(),
                               fused(x).numpy(), atol=1e-5)
