"""``RecurrentLayer``: the Keras layer that runs any cell of ``textgen.model.cells`` over a sequence.

(B, T, E) -> (B, T, U), from zero state: the input projection of every
timestep is one large matmul, and ``tf.scan`` runs the cell's ``recur`` over
time. The default ``lstm`` trains through ``FusedLSTM`` instead; this layer
serves every other cell type.
"""

from __future__ import annotations

from textgen.backend import keras, tf
from textgen.errors import ConfigError
from textgen.model.cells import Cell, get_cell


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
