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

Each loop writes its per-step results over a buffer it already holds (the
projection, then the gradient factors), so no zero-filled (T, B, 4U) buffer
is made; a loop step compiles to seven XLA kernels where it was ten.

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

from textgen.backend import keras, tf


def _candidate_doubled(units, dtype):
    """(4U,) column scale: 1 for the i, f, o gates, 2 for the candidate (tanh(z) = 2 sigmoid(2z) - 1)."""
    ones = tf.ones([units], dtype)
    return tf.concat([ones, ones, 2.0 * ones, ones], 0)


def _forward(x_steps, kernel, recurrent_kernel, bias):
    """x_steps (T, B, E) -> hidden states (T, B, U), cells (T, B, U), gate values (T, B, 4U).

    The gate values are sigmoid outputs for all four blocks; the candidate is
    2 * value - 1.
    """
    steps, batch, features = tf.shape(x_steps)[0], tf.shape(x_steps)[1], tf.shape(x_steps)[2]
    units = tf.shape(recurrent_kernel)[0]
    scale = _candidate_doubled(units, x_steps.dtype)
    projected = tf.matmul(tf.reshape(x_steps, [-1, features]), kernel * scale) + bias * scale  # (T*B, 4U)
    # Step t reads its projection from slot t and overwrites it with its gate values.
    gates = tf.TensorArray(x_steps.dtype, size=steps).unstack(tf.reshape(projected, [steps, batch, 4 * units]))
    recurrent_scaled = recurrent_kernel * scale

    def step(t, h, c, hs, cs, gates):
        values = tf.sigmoid(gates.read(t) + tf.matmul(h, recurrent_scaled))  # (B, 4U)
        i, f, g, o = tf.split(values, 4, axis=-1)
        c = f * c + i * (2.0 * g - 1.0)
        h = o * tf.tanh(c)
        return t + 1, h, c, hs.write(t, h), cs.write(t, c), gates.write(t, values)

    zeros = tf.zeros([batch, units], x_steps.dtype)
    arrays = [tf.TensorArray(x_steps.dtype, size=steps) for _ in range(2)]
    _, _, _, hs, cs, gates = tf.while_loop(lambda t, *_: t < steps, step, (0, zeros, zeros, *arrays, gates))
    return hs.stack(), cs.stack(), gates.stack()


@tf.custom_gradient
def lstm_sequence(x, kernel, recurrent_kernel, bias):
    """The LSTM over a whole sequence from zero state: x (B, T, E) -> h (B, T, U)."""
    x_steps = tf.transpose(x, [1, 0, 2])  # (T, B, E)
    hs, cs, gates = _forward(x_steps, kernel, recurrent_kernel, bias)

    def gradient(dh_sequence):
        steps, batch, features = tf.shape(x_steps)[0], tf.shape(x_steps)[1], tf.shape(x_steps)[2]
        units = tf.shape(recurrent_kernel)[0]
        dh_from_above = tf.transpose(dh_sequence, [1, 0, 2])  # (T, B, U)
        c_previous = tf.concat([tf.zeros([1, batch, units], x.dtype), cs[:-1]], 0)  # (T, B, U)
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
        dzs = tf.TensorArray(x.dtype, size=steps).unstack(factors)

        def step(k, dh_next, dc_next, dzs):
            t = steps - 1 - k
            dh = dh_from_above[t] + dh_next
            dc = dc_next + dh * dc_per_dh[t]
            dz = tf.concat([dc, dc, dc, dh], -1) * dzs.read(t)  # (B, 4U)
            return k + 1, tf.matmul(dz, recurrent_transposed), dc * f[t], dzs.write(t, dz)

        zero_state = tf.zeros([batch, units], x.dtype)
        # U^T is made once, outside the loop: with a plain (B, 4U) x (4U, U) matmul per step instead of
        # one on a transposed operand, the whole 2x512 training step ran 5% faster (BENCHMARKS.md).
        recurrent_transposed = tf.transpose(recurrent_kernel)  # (4U, U)
        _, _, _, dzs = tf.while_loop(lambda k, *_: k < steps, step, (0, zero_state, zero_state, dzs))
        dz_all = dzs.stack()  # (T, B, 4U)
        dz_rows = tf.reshape(dz_all, [-1, 4 * units])  # (T*B, 4U)
        # The weight gradients, each one large matmul over every timestep; h_{-1} = 0 adds nothing to dU.
        d_kernel = tf.matmul(tf.reshape(x_steps, [-1, features]), dz_rows, transpose_a=True)
        d_recurrent = tf.matmul(tf.reshape(hs[:-1], [-1, units]), tf.reshape(dz_all[1:], [-1, 4 * units]),
                                transpose_a=True)
        d_bias = tf.reduce_sum(dz_rows, 0)
        d_x = tf.reshape(tf.matmul(dz_rows, kernel, transpose_b=True), [steps, batch, features])
        return tf.transpose(d_x, [1, 0, 2]), d_kernel, d_recurrent, d_bias

    return tf.transpose(hs, [1, 0, 2]), gradient


class FusedLSTM(keras.layers.LSTM):
    """``keras.layers.LSTM`` whose CPU path is ``lstm_sequence``; weight-compatible with it.

    The fast path applies to the configuration textgen builds: full sequences
    returned, zero initial state, no mask, no in-layer dropout, the default
    activations, and no GPU (there the stock layer uses cuDNN).
    """

    def _fast_path_applies(self, initial_state, mask) -> bool:
        return (initial_state is None and mask is None and self.return_sequences and not self.return_state
                and not self.go_backwards and not self.stateful and not self.dropout
                and not self.recurrent_dropout and self.use_bias
                and self.activation is keras.activations.tanh
                and self.recurrent_activation is keras.activations.sigmoid
                and not tf.config.list_logical_devices("GPU"))

    def call(self, sequences, initial_state=None, mask=None, training=False):
        if not self._fast_path_applies(initial_state, mask):
            return super().call(sequences, initial_state=initial_state, mask=mask, training=training)
        cell = self.cell
        return lstm_sequence(tf.convert_to_tensor(sequences), tf.convert_to_tensor(cell.kernel),
                             tf.convert_to_tensor(cell.recurrent_kernel), tf.convert_to_tensor(cell.bias))
