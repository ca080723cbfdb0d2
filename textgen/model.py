"""The stacked LSTM language model and its single-step form.

Training uses the sequence form, a plain Keras model::

    tokens (B, T) -> Embedding -> [LSTM -> Dropout] x layers -> Dense -> logits (B, T, V)

The LSTM layers are ``FusedLSTM``: a ``keras.layers.LSTM`` with the same
weights and maths and a faster CPU training path (see ``fused_lstm``).

Generation uses ``LSTMStep``: the same weights applied one token at a time,
carrying each layer's (h, c) state, so every new token costs O(1) instead of
re-reading a window. Its equations are those of ``keras.layers.LSTM`` (gate
order i, f, c, o; sigmoid gates; tanh candidate and output), and a test checks
that both forms give the same logits.
"""

from __future__ import annotations

from textgen.backend import keras, tf
from textgen.config import ModelConfig
from textgen.fused_lstm import FusedLSTM


def build_model(config: ModelConfig) -> keras.Model:
    """Build the sequence form of the language model from validated settings."""
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(config.vocab_size, config.embedding_dim, name="embedding")(tokens)
    for index in range(config.layers):
        x = FusedLSTM(config.units, return_sequences=True, name=f"lstm_{index}")(x)
        if config.dropout > 0:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{index}")(x)
    logits = keras.layers.Dense(config.vocab_size, name="logits")(x)
    return keras.Model(tokens, logits, name="textgen_lstm")


def named_weights(model: keras.Model, config: ModelConfig) -> dict[str, keras.Variable]:
    """The model's variables under stable names, the names used on disk.

    Names come from textgen's own layer names rather than Keras variable
    paths, which change with Keras versions and with how often a layer class
    was instantiated in the process.
    """
    weights = {"embedding/embeddings": model.get_layer("embedding").embeddings}
    for index in range(config.layers):
        cell = model.get_layer(f"lstm_{index}").cell
        weights[f"lstm_{index}/kernel"] = cell.kernel
        weights[f"lstm_{index}/recurrent_kernel"] = cell.recurrent_kernel
        weights[f"lstm_{index}/bias"] = cell.bias
    dense = model.get_layer("logits")
    weights["logits/kernel"] = dense.kernel
    weights["logits/bias"] = dense.bias
    return weights


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every named weight, derived from settings alone."""
    shapes = {"embedding/embeddings": (config.vocab_size, config.embedding_dim)}
    inputs = config.embedding_dim
    for index in range(config.layers):
        shapes[f"lstm_{index}/kernel"] = (inputs, 4 * config.units)
        shapes[f"lstm_{index}/recurrent_kernel"] = (config.units, 4 * config.units)
        shapes[f"lstm_{index}/bias"] = (4 * config.units,)
        inputs = config.units
    shapes["logits/kernel"] = (config.units, config.vocab_size)
    shapes["logits/bias"] = (config.vocab_size,)
    return shapes


class LSTMStep(tf.Module):
    """One generation step of the stacked LSTM, on the model's own variables.

    ``step(tokens, states)`` takes token ids (B,) and a flat list
    ``[h_0, c_0, h_1, c_1, ...]`` of (B, units) tensors and returns logits
    (B, V) and the new states. Dropout is off, as at inference.
    """

    def __init__(self, model: keras.Model, config: ModelConfig):
        super().__init__(name="lstm_step")
        self.config = config
        weights = named_weights(model, config)
        # Keras variables wrap tf.Variables; tracking the tf.Variables lets a
        # SavedModel export carry them.
        self.embeddings = weights["embedding/embeddings"].value
        self.kernels = [weights[f"lstm_{i}/kernel"].value for i in range(config.layers)]
        self.recurrent_kernels = [weights[f"lstm_{i}/recurrent_kernel"].value for i in range(config.layers)]
        self.biases = [weights[f"lstm_{i}/bias"].value for i in range(config.layers)]
        self.logits_kernel = weights["logits/kernel"].value
        self.logits_bias = weights["logits/bias"].value

    def initial_states(self, batch_size) -> list[tf.Tensor]:
        """Zero (h, c) for every layer: a flat list of 2 * layers (B, units) tensors."""
        zeros = tf.zeros([batch_size, self.config.units], dtype=tf.float32)
        return [zeros] * (2 * self.config.layers)

    def step(self, tokens, states):
        """Advance every row by one token. tokens (B,) int32 -> logits (B, V)."""
        x = tf.gather(self.embeddings, tokens)  # (B, E)
        new_states = []
        for layer in range(self.config.layers):
            h, c = states[2 * layer], states[2 * layer + 1]
            z = tf.matmul(x, self.kernels[layer]) + tf.matmul(h, self.recurrent_kernels[layer])
            z = z + self.biases[layer]  # (B, 4U)
            i, f, g, o = tf.split(z, 4, axis=-1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            new_states.extend([h, c])
            x = h
        logits = tf.matmul(x, self.logits_kernel) + self.logits_bias  # (B, V)
        return logits, new_states
