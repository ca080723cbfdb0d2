"""A faster CPU training path for ``keras.layers.LSTM``, with the same weights and maths.

The stock layer on CPU runs a generic loop that recomputes the input
projection at every step and, in the backward pass, accumulates each weight
gradient one small matmul per timestep. ``lstm_sequence`` instead:

* works time-major inside, so that every large matmul is a plain 2-D one,
  (T*B, E) x (E, 4U), with no transposed operand for XLA to copy;
* projects the inputs of all timesteps with that one large matmul;
* loops over time only for what is truly sequential, h_{t-1} @ U, and
  computes all four gates with a single sigmoid: tanh(z) = 2 sigmoid(2z) - 1,
  so the candidate's columns of W, U and b are doubled for the forward pass;
* in its hand-written backward pass, first computes every factor of the
  gate gradients that does not depend on the incoming gradient, for all
  timesteps at once, then loops over time only for dz_t (and
  dh_{t-1} = dz_t @ U^T, with U^T transposed once before the loop), and
  forms the weight gradients as single large matmuls over all timesteps:
  dW = X^T dZ, dU = H_prev^T dZ.

The first layer of a textgen model reads an embedding, and
``lstm_sequence_from_tokens`` folds its input projection into the embedding
table: the forward pass gathers rows of the (V, 4U) table E W + b instead of
multiplying (T*B, E) x (E, 4U), and the backward pass sums dz_t per token
into a (V, 4U) table and forms dW, dE and db from that. It pays while the
vocabulary is smaller than a batch's T*B tokens, as for characters.

Each loop writes its per-step results over a buffer it already holds (the
projection, then the gradient factors), so no zero-filled (T, B, 4U) buffer
is made.

Equations (Keras gate order i, f, c, o)::

    z_t = x_t W + h_{t-1} U + b
    i_t = sigmoid(z_i)    f_t = sigmoid(z_f)    g_t = tanh(z_c)    o_t = sigmoid(z_o)
    c_t = f_t * c_{t-1} + i_t * g_t          (forget part of long-term memory, add new)
    h_t = o_t * tanh(c_t)                    (the share that becomes short-term memory)

``FusedLSTM`` is a ``keras.layers.LSTM`` (same variables, same names, same
shapes) that takes this path when it applies and otherwise, for example on a
GPU where cuDNN is faster, defers to the stock implementation.
"""

from __future__ import annotations

import weakref

from textgen.backend import keras, tf
from textgen.model.cells import LSTMCell


def _candidate_doubled(units, dtype):
    """(4U,) column scale: 1 for the i, f, o gates, 2 for the candidate (tanh(z) = 2 sigmoid(2z) - 1)."""
    ones = tf.ones([units], dtype)
    return tf.concat([ones, ones, 2.0 * ones, ones], 0)


def _recurrence(projected, recurrent_kernel):
    """projected (T, B, 4U), x_t W + b with candidate columns doubled -> h (T, B, U), c (T, B, U), gates (T, B, 4U).

    The gate values are sigmoid outputs for all four blocks; the candidate is
    2 * value - 1.
    """
    steps, batch = tf.shape(projected)[0], tf.shape(projected)[1]
    units = tf.shape(recurrent_kernel)[0]
    # Step t reads its projection from slot t and overwrites it with its gate values.
    gates = tf.TensorArray(projected.dtype, size=steps).unstack(projected)
    recurrent_scaled = recurrent_kernel * _candidate_doubled(units, projected.dtype)

    def step(t, h, c, hs, cs, gates):
        values = tf.sigmoid(gates.read(t) + tf.matmul(h, recurrent_scaled))  # (B, 4U)
        i, f, g, o = tf.split(values, 4, axis=-1)
        c = f * c + i * (2.0 * g - 1.0)
        h = o * tf.tanh(c)
        return t + 1, h, c, hs.write(t, h), cs.write(t, c), gates.write(t, values)

    zeros = tf.zeros([batch, units], projected.dtype)
    arrays = [tf.TensorArray(projected.dtype, size=steps) for _ in range(2)]
    _, _, _, hs, cs, gates = tf.while_loop(lambda t, *_: t < steps, step, (0, zeros, zeros, *arrays, gates))
    return hs.stack(), cs.stack(), gates.stack()


def _recurrence_gradient(dh_from_above, hs, cs, gates, recurrent_kernel):
    """Backward pass through time: dh (T, B, U) from above -> dz (T*B, 4U) for every gate input, and dU.

    dz is the gradient with respect to z_t = x_t W + h_{t-1} U + b itself
    (not the doubled form), so dW, db and dx follow from it directly.
    """
    steps, batch, units = tf.shape(cs)[0], tf.shape(cs)[1], tf.shape(cs)[2]
    dtype = cs.dtype
    c_previous = tf.concat([tf.zeros([1, batch, units], dtype), cs[:-1]], 0)  # (T, B, U)
    # Everything in dz_t but dh_t and dc_t, for all steps at once: dz = [dc, dc, dc, dh] * factors.
    i, f, g, o = tf.split(gates, 4, axis=-1)  # (T, B, U) each
    g = 2.0 * g - 1.0
    tanh_c = tf.tanh(cs)
    dc_per_dh = o * (1.0 - tanh_c * tanh_c)
    factors = tf.concat([g * i * (1.0 - i),            # input gate
                         c_previous * f * (1.0 - f),   # forget gate
                         i * (1.0 - g * g),            # candidate
                         tanh_c * o * (1.0 - o)], -1)  # output gate; (T, B, 4U)
    # Step t reads its factors from slot t and overwrites them with dz_t.
    dzs = tf.TensorArray(dtype, size=steps).unstack(factors)
    # U^T is made once, outside the loop, so each step is a plain (B, 4U) x (4U, U) matmul rather than
    # one on a transposed operand, which XLA would copy at every step.
    recurrent_transposed = tf.transpose(recurrent_kernel)  # (4U, U)

    def step(k, dh_next, dc_next, dzs):
        t = steps - 1 - k
        dh = dh_from_above[t] + dh_next
        dc = dc_next + dh * dc_per_dh[t]
        dz = tf.concat([dc, dc, dc, dh], -1) * dzs.read(t)  # (B, 4U)
        return k + 1, tf.matmul(dz, recurrent_transposed), dc * f[t], dzs.write(t, dz)

    zero_state = tf.zeros([batch, units], dtype)
    _, _, _, dzs = tf.while_loop(lambda k, *_: k < steps, step, (0, zero_state, zero_state, dzs))
    dz_all = dzs.stack()  # (T, B, 4U)
    # dU as one large matmul over every timestep; h_{-1} = 0 adds nothing to it.
    d_recurrent = tf.matmul(tf.reshape(hs[:-1], [-1, units]), tf.reshape(dz_all[1:], [-1, 4 * units]),
                            transpose_a=True)
    return tf.reshape(dz_all, [-1, 4 * units]), d_recurrent


@tf.custom_gradient
def lstm_sequence(x, kernel, recurrent_kernel, bias):
    """The LSTM over a whole sequence from zero state: x (B, T, E) -> h (B, T, U)."""
    batch, steps, features = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    units = tf.shape(recurrent_kernel)[0]
    x_rows = tf.reshape(tf.transpose(x, [1, 0, 2]), [-1, features])  # (T*B, E), time-major
    scale = _candidate_doubled(units, x.dtype)
    projected = tf.matmul(x_rows, kernel * scale) + bias * scale  # (T*B, 4U)
    hs, cs, gates = _recurrence(tf.reshape(projected, [steps, batch, 4 * units]), recurrent_kernel)

    def gradient(dh_sequence):
        dz_rows, d_recurrent = _recurrence_gradient(tf.transpose(dh_sequence, [1, 0, 2]), hs, cs, gates,
                                                    recurrent_kernel)  # (T*B, 4U)
        # dW as one large matmul over every timestep: X^T dZ.
        d_kernel = tf.matmul(x_rows, dz_rows, transpose_a=True)
        d_x = tf.reshape(tf.matmul(dz_rows, kernel, transpose_b=True), [steps, batch, features])
        return tf.transpose(d_x, [1, 0, 2]), d_kernel, d_recurrent, tf.reduce_sum(dz_rows, 0)

    return tf.transpose(hs, [1, 0, 2]), gradient


@tf.custom_gradient
def lstm_sequence_from_tokens(tokens, embeddings, kernel, recurrent_kernel, bias):
    """Embedding then LSTM from zero state, in one: token ids (B, T) -> h (B, T, U).

    The same maths as ``lstm_sequence(gather(embeddings, tokens), ...)``, with
    the input projection folded into the embedding table: x_t W + b is row
    token_t of the (V, 4U) table E W + b, so the forward pass gathers rows
    instead of a (T*B, E) x (E, 4U) matmul, and the backward pass sums dz_t
    per token into a (V, 4U) table (dT) instead of two more such matmuls:
    dW = E^T dT, dE = dT W^T, db = column sums of dT. It pays while the
    vocabulary is smaller than the batch's T*B tokens, as for characters.
    """
    batch, steps = tf.shape(tokens)[0], tf.shape(tokens)[1]
    vocab_size, units = tf.shape(embeddings)[0], tf.shape(recurrent_kernel)[0]
    ids = tf.reshape(tf.transpose(tokens), [-1])  # (T*B,), time-major
    scale = _candidate_doubled(units, embeddings.dtype)
    table = tf.matmul(embeddings, kernel * scale) + bias * scale  # (V, 4U)
    projected = tf.gather(table, ids)  # (T*B, 4U)
    hs, cs, gates = _recurrence(tf.reshape(projected, [steps, batch, 4 * units]), recurrent_kernel)

    def gradient(dh_sequence):
        dz_rows, d_recurrent = _recurrence_gradient(tf.transpose(dh_sequence, [1, 0, 2]), hs, cs, gates,
                                                    recurrent_kernel)  # (T*B, 4U)
        d_table = tf.math.unsorted_segment_sum(dz_rows, ids, vocab_size)  # (V, 4U)
        d_embeddings = tf.matmul(d_table, kernel, transpose_b=True)  # (V, E)
        d_kernel = tf.matmul(embeddings, d_table, transpose_a=True)  # (E, 4U)
        return None, d_embeddings, d_kernel, d_recurrent, tf.reduce_sum(d_table, 0)

    return tf.transpose(hs, [1, 0, 2]), gradient


class FusedLSTM(keras.layers.LSTM):
    """``keras.layers.LSTM`` whose CPU path is ``lstm_sequence``; weight-compatible with it.

    The fast path applies to the configuration textgen builds: full sequences
    returned, zero initial state, no mask, no in-layer dropout, the default
    activations, and no GPU (there the stock layer uses cuDNN).

    A first layer that reads an ``Embedding`` directly can be told so with
    ``read_tokens_from(embedding)`` and called as ``layer(x, token_ids=tokens)``:
    its fast path then runs ``lstm_sequence_from_tokens`` on the token ids and
    the embedding's variable, and ``x`` (the embedding's output) is only used
    by the stock path. The weights, their names and the maths stay the stock
    layer's, so a GPU still takes cuDNN.
    """

    cell_type = LSTMCell.name  # the cell whose maths and weights this layer has
    _token_embedding = None  # a weak reference to the Embedding layer whose output this layer reads

    def weights_by_name(self) -> dict:
        """The layer's variables under the LSTM cell's weight names: the stock layer's own variables."""
        return {"kernel": self.cell.kernel, "recurrent_kernel": self.cell.recurrent_kernel, "bias": self.cell.bias}

    def read_tokens_from(self, embedding: keras.layers.Embedding) -> None:
        """Let the fast path fold this layer's input projection into ``embedding``'s table."""
        # A weak reference, not an attribute Keras would track: the embedding stays its own layer, owns its
        # variable, and is saved and named once.
        self._token_embedding = weakref.ref(embedding)

    def _fast_path_applies(self, initial_state, mask) -> bool:
        return (initial_state is None and mask is None and self.return_sequences and not self.return_state
                and not self.go_backwards and not self.stateful and not self.dropout
                and not self.recurrent_dropout and self.use_bias
                and self.activation is keras.activations.tanh
                and self.recurrent_activation is keras.activations.sigmoid
                and not tf.config.list_logical_devices("GPU"))

    def _embeddings_to_fold(self, token_ids):
        """The embedding variable when folding pays for this batch, else None.

        Folding trades three (T*B, E) x (E, 4U) matmuls for three (V, E) x (E, 4U)
        ones, so it pays while V <= T*B; with T*B unknown it is not attempted.
        """
        embedding = self._token_embedding() if self._token_embedding is not None else None
        if token_ids is None or embedding is None or not token_ids.shape.is_fully_defined():
            return None
        rows = token_ids.shape[0] * token_ids.shape[1]
        return embedding.embeddings if embedding.embeddings.shape[0] <= rows else None

    def call(self, sequences, initial_state=None, mask=None, training=False, token_ids=None):
        if not self._fast_path_applies(initial_state, mask):
            return super().call(sequences, initial_state=initial_state, mask=mask, training=training)
        cell = self.cell
        weights = [tf.convert_to_tensor(w) for w in (cell.kernel, cell.recurrent_kernel, cell.bias)]
        if token_ids is not None:
            token_ids = tf.convert_to_tensor(token_ids)
        embeddings = self._embeddings_to_fold(token_ids)
        if embeddings is not None:
            return lstm_sequence_from_tokens(token_ids, tf.convert_to_tensor(embeddings), *weights)
        return lstm_sequence(tf.convert_to_tensor(sequences), *weights)
