"""A faster CPU training path for ``keras.layers.LSTM``, with the same weights and maths.

The stock layer on CPU runs a generic loop that recomputes the input
projection at every step and, in the backward pass, accumulates each weight
gradient one small matmul per timestep. ``lstm_sequence`` instead:

* projects the inputs of all timesteps with one large matmul, (B*T, E) x (E, 4U);
* loops over time only for what is truly sequential, h_{t-1} @ U, saving the
  gate activations;
* in its hand-written backward pass, loops over time only for the gate
  gradients dz_t (and dh_{t-1} = dz_t @ U^T), then forms the weight gradients
  as single large matmuls over all timesteps: dW = X^T dZ, dU = H_prev^T dZ.

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


def _forward(x, kernel, recurrent_kernel, bias):
    """x (B, T, E) -> hidden states (T, B, U), cells (T, B, U), gates (T, B, 4U)."""
    batch = tf.shape(x)[0]
    steps = tf.shape(x)[1]
    units = tf.shape(recurrent_kernel)[0]
    projected = tf.einsum("bte,eg->tbg", x, kernel) + bias  # (T, B, 4U): one matmul for all steps

    def step(t, h, c, hs, cs, gates):
        z = projected[t] + tf.matmul(h, recurrent_kernel)  # (B, 4U)
        i, f, g, o = tf.split(z, 4, axis=-1)
        i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
        c = f * c + i * g
        h = o * tf.tanh(c)
        return t + 1, h, c, hs.write(t, h), cs.write(t, c), gates.write(t, tf.concat([i, f, g, o], -1))

    zeros = tf.zeros([batch, units], x.dtype)
    arrays = [tf.TensorArray(x.dtype, size=steps) for _ in range(3)]
    _, _, _, hs, cs, gates = tf.while_loop(lambda t, *_: t < steps, step, (0, zeros, zeros, *arrays))
    return hs.stack(), cs.stack(), gates.stack()


@tf.custom_gradient
def lstm_sequence(x, kernel, recurrent_kernel, bias):
    """The LSTM over a whole sequence from zero state: x (B, T, E) -> h (B, T, U)."""
    hs, cs, gates = _forward(x, kernel, recurrent_kernel, bias)

    def gradient(dh_sequence):
        batch, steps = tf.shape(x)[0], tf.shape(x)[1]
        units = tf.shape(recurrent_kernel)[0]
        dh_from_above = tf.transpose(dh_sequence, [1, 0, 2])  # (T, B, U)
        zeros = tf.zeros([1, batch, units], x.dtype)
        h_previous = tf.concat([zeros, hs[:-1]], 0)  # (T, B, U)
        c_previous = tf.concat([zeros, cs[:-1]], 0)

        def step(k, dh_next, dc_next, dzs):
            t = steps - 1 - k
            i, f, g, o = tf.split(gates[t], 4, axis=-1)
            tanh_c = tf.tanh(cs[t])
            dh = dh_from_above[t] + dh_next
            dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
            dz = tf.concat([dc * g * i * (1.0 - i),            # input gate
                            dc * c_previous[t] * f * (1.0 - f),  # forget gate
                            dc * i * (1.0 - g * g),              # candidate
                            dh * tanh_c * o * (1.0 - o)], -1)    # output gate; (B, 4U)
            return k + 1, tf.matmul(dz, recurrent_kernel, transpose_b=True), dc * f, dzs.write(t, dz)

        zero_state = tf.zeros([batch, units], x.dtype)
        _, _, _, dzs = tf.while_loop(lambda k, *_: k < steps, step,
                                     (0, zero_state, zero_state, tf.TensorArray(x.dtype, size=steps)))
        dz_all = dzs.stack()  # (T, B, 4U)
        # The weight gradients, each one large matmul over every timestep.
        d_kernel = tf.einsum("bte,tbg->eg", x, dz_all)
        d_recurrent = tf.einsum("tbu,tbg->ug", h_previous, dz_all)
        d_bias = tf.reduce_sum(dz_all, [0, 1])
        d_x = tf.einsum("tbg,eg->bte", dz_all, kernel)
        return d_x, d_kernel, d_recurrent, d_bias

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
