"""The stacked recurrent language model and its single-step form.

Training uses the sequence form, a plain Keras model::

    tokens (B, T) -> Embedding -> [cell layer -> Dropout] x layers -> Dense -> logits (B, T, V)

The default cell is the LSTM, whose layers are ``FusedLSTM``: a
``keras.layers.LSTM`` with the same weights and maths and a faster CPU
training path (see ``fused_lstm``). The other cells (``textgen.model.cells``) are
``RecurrentLayer`` layers.

Generation and traces use ``ModelStep``: the same weights applied one token
at a time through the cell's own step maths, carrying every layer's states,
so each new token costs O(1) instead of re-reading a window. A test checks
that both forms give the same logits for every cell.
"""

from __future__ import annotations

import numpy as np

from textgen.backend import keras, tf
from textgen.model.cells import get_cell
from textgen.model.fused_lstm import FusedLSTM
from textgen.model.recurrent_layer import RecurrentLayer
from textgen.model.settings import ModelConfig


def layer_name(config: ModelConfig, index: int) -> str:
    """The name of recurrent layer ``index``: ``lstm_0``, ``gru_1``, ..."""
    return f"{config.cell}_{index}"


def build_model(config: ModelConfig) -> keras.Model:
    """Build the sequence form of the language model from validated settings."""
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    # Initialisation as PyTorch's nn.Embedding / nn.LSTM / nn.GRU / nn.Linear, for every cell type alike:
    # unit-variance embeddings and U(-1/sqrt(units), 1/sqrt(units)) weights (chosen over Keras' defaults by
    # measurement, BENCHMARKS.md). Every cell starting alike keeps the cells comparable on their equations.
    spread = keras.initializers.RandomUniform(-config.units ** -0.5, config.units ** -0.5)
    embedding = keras.layers.Embedding(config.vocab_size, config.embedding_dim, name="embedding",
                                       embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0))
    x = embedding(tokens)
    for index in range(config.layers):
        token_inputs = {}
        if config.cell == FusedLSTM.cell_type:
            layer = FusedLSTM(config.units, return_sequences=True, name=layer_name(config, index),
                              kernel_initializer=spread, recurrent_initializer=spread, bias_initializer=spread,
                              unit_forget_bias=False)
            if index == 0:
                # The first layer folds its input projection into the embedding table (fused_lstm).
                layer.read_tokens_from(embedding)
                token_inputs = {"token_ids": tokens}
        else:
            layer = RecurrentLayer(config.cell, config.units, name=layer_name(config, index),
                                   kernel_initializer=spread, recurrent_initializer=spread, bias_initializer=spread)
        x = layer(x, **token_inputs)
        if config.dropout > 0:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{index}")(x)
    logits = keras.layers.Dense(config.vocab_size, name="logits", kernel_initializer=spread,
                                bias_initializer=spread)(x)
    return keras.Model(tokens, logits, name=f"textgen_{config.cell}")


def layer_weights(model: keras.Model, config: ModelConfig, index: int) -> dict[str, keras.Variable]:
    """Recurrent layer ``index``'s variables under the cell's weight names (kernel, recurrent_kernel, ...)."""
    return model.get_layer(layer_name(config, index)).weights_by_name()


def named_weights(model: keras.Model, config: ModelConfig) -> dict[str, keras.Variable]:
    """The model's variables under stable names, the names used on disk.

    Names come from textgen's own layer names rather than Keras variable
    paths, which change with Keras versions and with how often a layer class
    was instantiated in the process.
    """
    weights = {"embedding/embeddings": model.get_layer("embedding").embeddings}
    for index in range(config.layers):
        for name, variable in layer_weights(model, config, index).items():
            weights[f"{layer_name(config, index)}/{name}"] = variable
    dense = model.get_layer("logits")
    weights["logits/kernel"] = dense.kernel
    weights["logits/bias"] = dense.bias
    return weights


# The weights indexed by token id: embedding rows (V, E), output columns (U, V) and biases (V,). Every other
# weight's shape is the same whatever the vocabulary.
_TOKEN_AXES = {"embedding/embeddings": 0, "logits/kernel": 1, "logits/bias": 0}


def grow_vocabulary(base: dict[str, np.ndarray], fresh: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Weights for a larger vocabulary: ``base``'s values, with ``fresh``'s for the tokens ``base`` lacks.

    ``fresh`` are a newly built model's weights (its own initialisation) for
    the larger vocabulary, whose first tokens are ``base``'s: every weight
    ``base`` has keeps its exact value, token rows and columns included, and
    only the new tokens' embedding rows and output columns come from ``fresh``.
    """
    grown = {}
    for name, value in fresh.items():
        old = base[name]
        axis = _TOKEN_AXES.get(name)
        if axis is None or old.shape == value.shape:
            if old.shape != value.shape:
                raise ValueError(f"grow_vocabulary needs the same architecture. Received: {name}={old.shape}")
            grown[name] = old.copy()
            continue
        grown[name] = np.array(value, copy=True)
        index = [slice(None)] * value.ndim
        index[axis] = slice(0, old.shape[axis])
        grown[name][tuple(index)] = old
    return grown


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every named weight, derived from settings alone."""
    shapes = {"embedding/embeddings": (config.vocab_size, config.embedding_dim)}
    cell = get_cell(config.cell)
    inputs = config.embedding_dim
    for index in range(config.layers):
        for name, shape in cell.weight_shapes(inputs, config.units).items():
            shapes[f"{layer_name(config, index)}/{name}"] = shape
        inputs = config.units
    shapes["logits/kernel"] = (config.units, config.vocab_size)
    shapes["logits/bias"] = (config.vocab_size,)
    return shapes


class ModelStep(tf.Module):
    """One step of the stacked model, on the model's own variables.

    ``step(tokens, states)`` takes token ids (B,) and a flat list of (B, units)
    state tensors, layer by layer, each layer's in the order of its cell's
    ``state_names`` (h_0, c_0, h_1, c_1, ... for an LSTM; h_0, h_1, ... for a
    GRU), and returns logits (B, V) and the new states. ``trace_step`` also
    returns every layer's record of gates and states. Dropout is off, as at
    inference.
    """

    def __init__(self, model: keras.Model, config: ModelConfig):
        super().__init__(name="model_step")
        self.config = config
        self.cell = get_cell(config.cell)
        # Keras variables wrap tf.Variables; tracking the tf.Variables lets a
        # SavedModel export carry them.
        self.embeddings = model.get_layer("embedding").embeddings.value
        self.layer_weights = [{name: variable.value for name, variable in layer_weights(model, config, i).items()}
                              for i in range(config.layers)]
        dense = model.get_layer("logits")
        self.logits_kernel = dense.kernel.value
        self.logits_bias = dense.bias.value

    @property
    def states_per_layer(self) -> int:
        return len(self.cell.state_names)

    @property
    def state_count(self) -> int:
        """Length of the flat state list: layers x states per layer."""
        return self.config.layers * self.states_per_layer

    def initial_states(self, batch_size) -> list[tf.Tensor]:
        """Zero states for every layer: a flat list of ``state_count`` (B, units) tensors."""
        zeros = tf.zeros([batch_size, self.config.units], dtype=tf.float32)
        return [zeros] * self.state_count

    def input_table(self):
        """The first layer's input share for every token: (V, gates * U), the embedding lookup and the
        input projection (bias included) done once, so that a step can gather a row of it instead."""
        return self.cell.project(self.layer_weights[0], self.embeddings)

    def trace_step(self, tokens, states, input_table=None):
        """Advance every row by one token: -> logits (B, V), new states, one record dict per layer.

        ``input_table`` (from ``input_table``), or None, gives the first layer's input share by a gather.
        """
        x = tf.gather(self.embeddings, tokens) if input_table is None else None  # (B, E)
        per_layer = self.states_per_layer
        new_states, records = [], []
        for layer, weights in enumerate(self.layer_weights):
            layer_states = tuple(states[layer * per_layer:(layer + 1) * per_layer])
            projected = (tf.gather(input_table, tokens) if x is None
                         else self.cell.project(weights, x))  # (B, gates * U)
            layer_states, record = self.cell.recur(weights, projected, layer_states)
            new_states.extend(layer_states)
            records.append(record)
            x = layer_states[0]  # h feeds the next layer
        logits = tf.matmul(x, self.logits_kernel) + self.logits_bias  # (B, V)
        return logits, new_states, records

    def step(self, tokens, states, input_table=None):
        """Advance every row by one token. tokens (B,) int32 -> logits (B, V), new states."""
        logits, new_states, _ = self.trace_step(tokens, states, input_table)
        return logits, new_states
