"""The recurrent cells a model can stack: LSTM, peephole LSTM, CIFG, GRU and plain RNN.

Each cell's maths is written once, in a ``Cell`` object that works on a dict
of weights. Its ``project`` step is the part that needs no state (the input
projection, done for all timesteps as one large matmul in the sequence form),
and its ``recur`` step is the truly sequential part. ``RecurrentLayer`` runs
``recur`` over a sequence for training; ``textgen.model.ModelStep`` runs it one
token at a time for generation and for traces. Only the default ``lstm`` has a
second, faster training path (``FusedLSTM``), checked against this one in the
tests.

Notation used in the docstrings: x_t is the layer's input at step t, h the
hidden state (short-term memory), c the cell state (long-term memory),
sigma the logistic sigmoid, * an elementwise product, and W, U, b the input
kernel, recurrent kernel and bias, split into one block per gate.
"""

from __future__ import annotations

from textgen.backend import keras, tf
from textgen.config import CELL_TYPES
from textgen.errors import ConfigError


class Cell:
    """The maths of one cell type, on plain tensors.

    ``weight_shapes`` names the weights; ``project(weights, x)`` maps inputs
    (..., E) to their share of the pre-activations; ``recur(weights,
    projected, states)`` takes one step from states (a tuple of (B, U)
    tensors, named by ``state_names``) and returns the new states and a
    record of every quantity the step computed, keyed by the names in
    ``textgen.trace.QUANTITIES``.
    """

    name = ""
    state_names: tuple[str, ...] = ("h",)
    gates = 1  # blocks of U columns in the kernels
    gate_blocks: tuple[str, ...] = ("hidden",)  # what each block of columns computes, in order

    def weight_shapes(self, input_dim: int, units: int) -> dict[str, tuple[int, ...]]:
        return {"kernel": (input_dim, self.gates * units), "recurrent_kernel": (units, self.gates * units),
                "bias": (self.gates * units,)}

    def parameter_count(self, input_dim: int, units: int) -> int:
        total = 0
        for shape in self.weight_shapes(input_dim, units).values():
            count = 1
            for size in shape:
                count *= size
            total += count
        return total

    def project(self, weights, x):
        """x (..., E) -> (..., gates * U): the input's share, bias included."""
        return tf.matmul(x, weights["kernel"]) + weights["bias"] if x.shape.rank == 2 else \
            tf.einsum("...e,eg->...g", x, weights["kernel"]) + weights["bias"]

    def recur(self, weights, projected, states):
        raise NotImplementedError

    def step(self, weights, x, states):
        """One full step: x (B, E), states -> (new states, record)."""
        return self.recur(weights, self.project(weights, x), states)


class LSTMCell(Cell):
    """The standard LSTM (gate order i, f, c, o, as ``keras.layers.LSTM``)::

        i_t = sigma(x_t W_i + h_{t-1} U_i + b_i)      input gate: how much new memory to add
        f_t = sigma(x_t W_f + h_{t-1} U_f + b_f)      forget gate: share of long-term memory kept
        g_t = tanh(x_t W_c + h_{t-1} U_c + b_c)       candidate memory
        o_t = sigma(x_t W_o + h_{t-1} U_o + b_o)      output gate
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t)                         share that becomes short-term memory
    """

    name = "lstm"
    state_names = ("h", "c")
    gates = 4
    gate_blocks = ("input", "forget", "candidate", "output")

    def recur(self, weights, projected, states):
        h, c = states
        z = projected + tf.matmul(h, weights["recurrent_kernel"])  # (B, 4U)
        zi, zf, zg, zo = tf.split(z, 4, axis=-1)
        i, f, g, o = tf.sigmoid(zi), tf.sigmoid(zf), tf.tanh(zg), tf.sigmoid(zo)
        c = f * c + i * g
        h = o * tf.tanh(c)
        return (h, c), {"forget": f, "input": i, "output": o, "candidate": g, "cell": c, "hidden": h}


class PeepholeLSTMCell(LSTMCell):
    """An LSTM whose gates also see the cell state (Gers and Schmidhuber, 2000)::

        i_t = sigma(x_t W_i + h_{t-1} U_i + p_i * c_{t-1} + b_i)
        f_t = sigma(x_t W_f + h_{t-1} U_f + p_f * c_{t-1} + b_f)
        g_t = tanh(x_t W_c + h_{t-1} U_c + b_c)
        c_t = f_t * c_{t-1} + i_t * g_t
        o_t = sigma(x_t W_o + h_{t-1} U_o + p_o * c_t + b_o)    the output gate peeks at the new cell
        h_t = o_t * tanh(c_t)

    The peephole weights p are diagonal: one (3, U) array, rows i, f, o.
    """

    name = "peephole"

    def weight_shapes(self, input_dim, units):
        return {**super().weight_shapes(input_dim, units), "peephole": (3, units)}

    def recur(self, weights, projected, states):
        h, c_previous = states
        peephole = weights["peephole"]  # (3, U)
        z = projected + tf.matmul(h, weights["recurrent_kernel"])  # (B, 4U)
        zi, zf, zg, zo = tf.split(z, 4, axis=-1)
        i = tf.sigmoid(zi + peephole[0] * c_previous)
        f = tf.sigmoid(zf + peephole[1] * c_previous)
        g = tf.tanh(zg)
        c = f * c_previous + i * g
        o = tf.sigmoid(zo + peephole[2] * c)
        h = o * tf.tanh(c)
        return (h, c), {"forget": f, "input": i, "output": o, "candidate": g, "cell": c, "hidden": h}


class CIFGCell(Cell):
    """An LSTM with coupled input and forget gates (gate order f, c, o)::

        f_t = sigma(x_t W_f + h_{t-1} U_f + b_f)
        i_t = 1 - f_t                                 memory is only replaced as much as it is forgotten
        g_t = tanh(x_t W_c + h_{t-1} U_c + b_c)
        o_t = sigma(x_t W_o + h_{t-1} U_o + b_o)
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t)
    """

    name = "cifg"
    state_names = ("h", "c")
    gates = 3
    gate_blocks = ("forget", "candidate", "output")

    def recur(self, weights, projected, states):
        h, c = states
        z = projected + tf.matmul(h, weights["recurrent_kernel"])  # (B, 3U)
        zf, zg, zo = tf.split(z, 3, axis=-1)
        f, g, o = tf.sigmoid(zf), tf.tanh(zg), tf.sigmoid(zo)
        i = 1.0 - f
        c = f * c + i * g
        h = o * tf.tanh(c)
        return (h, c), {"forget": f, "input": i, "output": o, "candidate": g, "cell": c, "hidden": h}


class GRUCell(Cell):
    """The GRU (Cho et al., 2014), in the layout of ``keras.layers.GRU(reset_after=True)``::

        z_t = sigma(x_t W_z + b_z + h_{t-1} U_z + b'_z)          update gate: share of the old state kept
        r_t = sigma(x_t W_r + b_r + h_{t-1} U_r + b'_r)          reset gate
        n_t = tanh(x_t W_n + b_n + r_t * (h_{t-1} U_n + b'_n))   candidate state
        h_t = z_t * h_{t-1} + (1 - z_t) * n_t

    The bias is (2, 3U): row 0 goes with the input, row 1 with the state.
    """

    name = "gru"
    gates = 3
    gate_blocks = ("update", "reset", "candidate")

    def weight_shapes(self, input_dim, units):
        return {"kernel": (input_dim, 3 * units), "recurrent_kernel": (units, 3 * units), "bias": (2, 3 * units)}

    def project(self, weights, x):
        kernel, bias = weights["kernel"], weights["bias"][0]
        return tf.matmul(x, kernel) + bias if x.shape.rank == 2 else tf.einsum("...e,eg->...g", x, kernel) + bias

    def recur(self, weights, projected, states):
        (h,) = states
        recurrent = tf.matmul(h, weights["recurrent_kernel"]) + weights["bias"][1]  # (B, 3U)
        xz, xr, xn = tf.split(projected, 3, axis=-1)
        hz, hr, hn = tf.split(recurrent, 3, axis=-1)
        z = tf.sigmoid(xz + hz)
        r = tf.sigmoid(xr + hr)
        n = tf.tanh(xn + r * hn)
        h = z * h + (1.0 - z) * n
        return (h,), {"update": z, "reset": r, "candidate": n, "hidden": h}


class SimpleRNNCell(Cell):
    """The plain (Elman) RNN, whose gradients vanish or explode over long spans::

        h_t = tanh(x_t W + h_{t-1} U + b)

    Back-propagating k steps multiplies by U^T diag(1 - h^2) k times.
    """

    name = "rnn"
    gates = 1

    def recur(self, weights, projected, states):
        (h,) = states
        h = tf.tanh(projected + tf.matmul(h, weights["recurrent_kernel"]))  # (B, U)
        return (h,), {"hidden": h}


_CELLS = {cell.name: cell for cell in (LSTMCell(), PeepholeLSTMCell(), CIFGCell(), GRUCell(), SimpleRNNCell())}


def get_cell(name: str) -> Cell:
    """The ``Cell`` for a type name in ``CELL_TYPES``."""
    if name not in _CELLS:
        raise ConfigError(f"cell must be one of {', '.join(CELL_TYPES)}. Received: cell={name!r}")
    return _CELLS[name]


def run_sequence(cell: Cell, weights, x):
    """The cell over a whole sequence from zero state: x (B, T, E) -> hidden states (B, T, U)."""
    units = weights["recurrent_kernel"].shape[0]
    projected = tf.transpose(cell.project(weights, x), [1, 0, 2])  # (T, B, gates*U): one matmul for all steps
    zeros = tf.zeros([tf.shape(x)[0], units], x.dtype)
    initial = tuple(zeros for _ in cell.state_names)

    def step(states, projected_t):
        new_states, _ = cell.recur(weights, projected_t, states)
        return new_states

    states = tf.scan(step, projected, initializer=initial)  # each (T, B, U)
    return tf.transpose(states[0], [1, 0, 2])


class RecurrentLayer(keras.layers.Layer):
    """A recurrent layer of any ``CELL_TYPES`` cell, returning the full sequence of hidden states.

    (B, T, E) -> (B, T, U), from zero state. The weights are created in
    ``build`` under the names of ``Cell.weight_shapes``. The initialisers
    default to those of Keras' recurrent layers (Glorot uniform, orthogonal,
    zeros); ``build_model`` passes the same ones to every cell type, so that
    cells are compared on their equations and not on their starting points.
    Peephole weights always start at zero: the cell starts as a plain LSTM.
    """

    def __init__(self, cell: str, units: int, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.cell_type = get_cell(cell).name
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ConfigError(f"units must be a positive integer. Received: units={units!r}")
        self.units = units
        self.cell = get_cell(cell)
        self.initializers = {"kernel": keras.initializers.get(kernel_initializer),
                             "recurrent_kernel": keras.initializers.get(recurrent_initializer),
                             "bias": keras.initializers.get(bias_initializer)}

    def build(self, input_shape):
        shapes = self.cell.weight_shapes(int(input_shape[-1]), self.units)
        self.cell_weights = {name: self.add_weight(name=name, shape=shape,
                                                   initializer=self.initializers.get(name, "zeros"))
                             for name, shape in shapes.items()}

    def weights_by_name(self) -> dict:
        """The layer's variables under the cell's weight names."""
        return dict(self.cell_weights)

    def call(self, sequences):
        weights = {name: tf.convert_to_tensor(variable) for name, variable in self.cell_weights.items()}
        return run_sequence(self.cell, weights, tf.convert_to_tensor(sequences))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "cell": self.cell_type, "units": self.units,
                "kernel_initializer": keras.initializers.serialize(self.initializers["kernel"]),
                "recurrent_initializer": keras.initializers.serialize(self.initializers["recurrent_kernel"]),
                "bias_initializer": keras.initializers.serialize(self.initializers["bias"])}
