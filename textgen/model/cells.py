"""The recurrent cells a model can stack: LSTM, peephole LSTM, CIFG, GRU and plain RNN.

Each cell is written once, as a ``Cell`` that owns everything about it: its
name, its states, the gate each block of kernel columns computes, its
weights' shapes, its maths on tensors, and the same step for one unit in
float64 NumPy, term by term (what ``textgen explain`` prints). Nothing
outside this module branches on a cell's name: it asks the cell.

The maths has two parts. ``project`` needs no state (the input projection,
done for all timesteps as one large matmul in the sequence form), and
``recur`` is the truly sequential part. ``textgen.model.recurrent_layer``
runs ``recur`` over a sequence for training; ``textgen.model.network.ModelStep``
runs it one token at a time for generation and traces. Only the default
``lstm`` has a second, faster training path (``textgen.model.fused_lstm``),
checked against this one in the tests.

This module is plain Python at import: the settings validate a cell's name and
count its weights without loading TensorFlow, which the maths imports when it
first runs.

Notation used in the docstrings: x_t is the layer's input at step t, h the
hidden state (short-term memory), c the cell state (long-term memory),
sigma the logistic sigmoid, * an elementwise product, and W, U, b the input
kernel, recurrent kernel and bias, split into one block per gate.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from textgen.errors import ConfigError


def _tf():
    from textgen.backend import tf  # TensorFlow loads with the first step, not with the settings

    return tf


@dataclasses.dataclass
class GateTerms:
    """One gate of one unit on one step, in float64: the parts of its pre-activation and its value.

    ``input_weights`` and ``state_weights`` are the unit's columns of W and U
    for this gate; ``extra`` holds the cell's own terms (a peephole, the GRU's
    recurrent bias); ``total`` is the pre-activation the cell computed from them.
    """

    name: str
    input_weights: np.ndarray  # (E,)
    state_weights: np.ndarray  # (U,)
    bias: float
    extra: dict[str, float]
    total: float
    function: str  # "sigmoid" or "tanh"
    value: float


def _activate(function: str, total: float) -> float:
    return math.tanh(total) if function == "tanh" else 1.0 / (1.0 + math.exp(-total))


class Cell:
    """The maths of one cell type, on plain tensors.

    ``weight_shapes`` names the weights; ``project(weights, x)`` maps inputs
    (..., E) to their share of the pre-activations; ``recur(weights,
    projected, states)`` takes one step from states (a tuple of (B, U)
    tensors, named by ``state_names`` and recorded under ``state_records``)
    and returns the new states and a record of every quantity the step
    computed, keyed by the names in ``textgen.model.trace.QUANTITIES``.
    """

    name = ""
    state_names: tuple[str, ...] = ("h",)
    state_records: tuple[str, ...] = ("hidden",)  # the record names of the states, in ``state_names`` order
    gate_blocks: tuple[str, ...] = ("hidden",)  # what each block of U kernel columns computes, in order
    keep_gate: str | None = None  # the gate whose bias sets how much of the state survives a step

    @property
    def gates(self) -> int:
        """Blocks of U columns in the kernels."""
        return len(self.gate_blocks)

    def weight_shapes(self, input_dim: int, units: int) -> dict[str, tuple[int, ...]]:
        return {"kernel": (input_dim, self.gates * units), "recurrent_kernel": (units, self.gates * units),
                "bias": (self.gates * units,)}

    def parameter_count(self, input_dim: int, units: int) -> int:
        return sum(math.prod(shape) for shape in self.weight_shapes(input_dim, units).values())

    def gate_function(self, gate: str) -> str:
        """The activation of a gate block: tanh for a candidate or a plain state, sigmoid for a gate."""
        return "tanh" if gate in ("candidate", "hidden") else "sigmoid"

    def project(self, weights, x):
        """x (..., E) -> (..., gates * U): the input's share, bias included."""
        tf = _tf()
        return tf.matmul(x, weights["kernel"]) + weights["bias"] if x.shape.rank == 2 else \
            tf.einsum("...e,eg->...g", x, weights["kernel"]) + weights["bias"]

    def recur(self, weights, projected, states):
        raise NotImplementedError

    def step(self, weights, x, states):
        """One full step: x (B, E), states -> (new states, record)."""
        return self.recur(weights, self.project(weights, x), states)

    def with_keep_bias(self, bias: np.ndarray, units: int, value: float) -> np.ndarray:
        """A copy of a layer's ``bias`` with the keep gate's block set to ``value`` (and nothing else changed).

        sigmoid(b)^k is about how much of a state survives k steps at the start of
        training: a bias of 1 keeps 0.73 per step (2e-14 after 100 steps), 5 keeps 0.993.
        """
        if self.keep_gate is None:
            raise ConfigError(f"the {self.name} cell has no gate that keeps its state. Received: cell={self.name!r}")
        block = self.gate_blocks.index(self.keep_gate)
        bias = np.array(bias)
        bias[block * units:(block + 1) * units] = value
        return bias

    def unit_step(self, weights: dict[str, np.ndarray], x: np.ndarray, states: tuple, unit: int):
        """One unit's step in float64, term by term: -> (a ``GateTerms`` per gate block, the state update).

        ``weights`` are the layer's arrays, ``x`` (E,) its input, ``states`` the
        (U,) states before the step in ``state_names`` order. The state update
        is a dict of named numbers: ``h`` always, and what made it.
        """
        raise NotImplementedError

    def _gate(self, name, weights, column, x, h, bias, extra, total=None) -> GateTerms:
        input_weights, state_weights = weights["kernel"][:, column], weights["recurrent_kernel"][:, column]
        if total is None:
            total = float(x @ input_weights + h @ state_weights) + bias + sum(extra.values())
        function = self.gate_function(name)
        return GateTerms(name, input_weights, state_weights, bias, extra, total, function, _activate(function, total))


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
    state_records = ("hidden", "cell")
    gate_blocks = ("input", "forget", "candidate", "output")
    keep_gate = "forget"

    def recur(self, weights, projected, states):
        tf = _tf()
        h, c = states
        z = projected + tf.matmul(h, weights["recurrent_kernel"])  # (B, 4U)
        zi, zf, zg, zo = tf.split(z, 4, axis=-1)
        i, f, g, o = tf.sigmoid(zi), tf.sigmoid(zf), tf.tanh(zg), tf.sigmoid(zo)
        c = f * c + i * g
        h = o * tf.tanh(c)
        return (h, c), {"forget": f, "input": i, "output": o, "candidate": g, "cell": c, "hidden": h}

    def _extra_terms(self, gate, weights, unit, c_previous, values) -> dict[str, float]:
        """The cell's own terms of a gate's pre-activation, beyond x.W + h.U + b (none for the plain LSTM)."""
        return {}

    def _input_share(self, values) -> float:
        """How much of the candidate is added: the input gate."""
        return values["input"]

    def unit_step(self, weights, x, states, unit):
        h, c = states
        units = len(h)
        gates, values = [], {}
        for block, name in enumerate(self.gate_blocks):
            column = block * units + unit
            extra = self._extra_terms(name, weights, unit, c[unit], values)
            gate = self._gate(name, weights, column, x, h, float(weights["bias"][column]), extra)
            values[name] = gate.value
            gates.append(gate)
        forget, added_share = values["forget"], self._input_share(values)
        memory = {"c_prev": float(c[unit]), "forget": forget, "input": added_share,
                  "coupled": "input" not in self.gate_blocks, "candidate": values["candidate"],
                  "kept": forget * float(c[unit]), "added": added_share * values["candidate"]}
        memory["c"] = memory["kept"] + memory["added"]
        memory["tanh_c"] = math.tanh(memory["c"])
        memory["output"] = values["output"]
        memory["h"] = values["output"] * memory["tanh_c"]
        return gates, memory


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
    peephole_rows = {"input": 0, "forget": 1, "output": 2}

    def weight_shapes(self, input_dim, units):
        return {**super().weight_shapes(input_dim, units), "peephole": (3, units)}

    def recur(self, weights, projected, states):
        tf = _tf()
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

    def _extra_terms(self, gate, weights, unit, c_previous, values):
        if gate not in self.peephole_rows:
            return {}
        weight = float(weights["peephole"][self.peephole_rows[gate]][unit])
        if gate == "output":  # the output gate reads the new cell state, made by the gates before it
            return {"peephole p*c_new": weight * (values["forget"] * c_previous + values["input"] * values["candidate"])}
        return {"peephole p*c_prev": weight * float(c_previous)}


class CIFGCell(LSTMCell):
    """An LSTM with coupled input and forget gates (gate order f, c, o)::

        f_t = sigma(x_t W_f + h_{t-1} U_f + b_f)
        i_t = 1 - f_t                                 memory is only replaced as much as it is forgotten
        g_t = tanh(x_t W_c + h_{t-1} U_c + b_c)
        o_t = sigma(x_t W_o + h_{t-1} U_o + b_o)
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t)
    """

    name = "cifg"
    gate_blocks = ("forget", "candidate", "output")

    def recur(self, weights, projected, states):
        tf = _tf()
        h, c = states
        z = projected + tf.matmul(h, weights["recurrent_kernel"])  # (B, 3U)
        zf, zg, zo = tf.split(z, 3, axis=-1)
        f, g, o = tf.sigmoid(zf), tf.tanh(zg), tf.sigmoid(zo)
        i = 1.0 - f
        c = f * c + i * g
        h = o * tf.tanh(c)
        return (h, c), {"forget": f, "input": i, "output": o, "candidate": g, "cell": c, "hidden": h}

    def _input_share(self, values):
        return 1.0 - values["forget"]


class GRUCell(Cell):
    """The GRU (Cho et al., 2014), in the layout of ``keras.layers.GRU(reset_after=True)``::

        z_t = sigma(x_t W_z + b_z + h_{t-1} U_z + b'_z)          update gate: share of the old state kept
        r_t = sigma(x_t W_r + b_r + h_{t-1} U_r + b'_r)          reset gate
        n_t = tanh(x_t W_n + b_n + r_t * (h_{t-1} U_n + b'_n))   candidate state
        h_t = z_t * h_{t-1} + (1 - z_t) * n_t

    The bias is (2, 3U): row 0 goes with the input, row 1 with the state.
    """

    name = "gru"
    gate_blocks = ("update", "reset", "candidate")
    keep_gate = "update"

    def weight_shapes(self, input_dim, units):
        return {"kernel": (input_dim, 3 * units), "recurrent_kernel": (units, 3 * units), "bias": (2, 3 * units)}

    def project(self, weights, x):
        tf = _tf()
        kernel, bias = weights["kernel"], weights["bias"][0]
        return tf.matmul(x, kernel) + bias if x.shape.rank == 2 else tf.einsum("...e,eg->...g", x, kernel) + bias

    def recur(self, weights, projected, states):
        tf = _tf()
        (h,) = states
        recurrent = tf.matmul(h, weights["recurrent_kernel"]) + weights["bias"][1]  # (B, 3U)
        xz, xr, xn = tf.split(projected, 3, axis=-1)
        hz, hr, hn = tf.split(recurrent, 3, axis=-1)
        z = tf.sigmoid(xz + hz)
        r = tf.sigmoid(xr + hr)
        n = tf.tanh(xn + r * hn)
        h = z * h + (1.0 - z) * n
        return (h,), {"update": z, "reset": r, "candidate": n, "hidden": h}

    def with_keep_bias(self, bias, units, value):
        # The two bias rows add up: the input's row takes the value, the state's row adds nothing.
        bias = np.array(bias)
        block = self.gate_blocks.index(self.keep_gate)
        bias[0, block * units:(block + 1) * units] = value
        bias[1, block * units:(block + 1) * units] = 0.0
        return bias

    def unit_step(self, weights, x, states, unit):
        (h,) = states
        units = len(h)
        gates, values = [], {}
        for block, name in enumerate(self.gate_blocks):
            column = block * units + unit
            input_bias, state_bias = float(weights["bias"][0][column]), float(weights["bias"][1][column])
            if name == "candidate":
                # n = tanh(x.W_n + b_n + r * (h.U_n + b'_n)): the state's part is scaled by the reset gate.
                scaled = values["reset"] * (float(h @ weights["recurrent_kernel"][:, column]) + state_bias)
                extra = {"recurrent bias b'": state_bias, "reset x (h.U + b')": scaled}
                total = float(x @ weights["kernel"][:, column]) + input_bias + scaled
                gate = self._gate(name, weights, column, x, h, input_bias, extra, total)
            else:
                gate = self._gate(name, weights, column, x, h, input_bias, {"recurrent bias b'": state_bias})
            values[name] = gate.value
            gates.append(gate)
        update = values["update"]
        memory = {"h_prev": float(h[unit]), "update": update, "candidate": values["candidate"],
                  "kept": update * float(h[unit]), "added": (1.0 - update) * values["candidate"]}
        memory["h"] = memory["kept"] + memory["added"]
        return gates, memory


class SimpleRNNCell(Cell):
    """The plain (Elman) RNN, whose gradients vanish or explode over long spans::

        h_t = tanh(x_t W + h_{t-1} U + b)

    Back-propagating k steps multiplies by U^T diag(1 - h^2) k times.
    """

    name = "rnn"

    def recur(self, weights, projected, states):
        tf = _tf()
        (h,) = states
        h = tf.tanh(projected + tf.matmul(h, weights["recurrent_kernel"]))  # (B, U)
        return (h,), {"hidden": h}

    def unit_step(self, weights, x, states, unit):
        (h,) = states
        gate = self._gate("hidden", weights, unit, x, h, float(weights["bias"][unit]), {})
        return [gate], {"h_prev": float(h[unit]), "h": gate.value}


_CELLS = {cell.name: cell for cell in (LSTMCell(), PeepholeLSTMCell(), CIFGCell(), GRUCell(), SimpleRNNCell())}
# The recurrent cells a model can stack, by name.
CELL_TYPES = tuple(_CELLS)


def get_cell(name: str) -> Cell:
    """The ``Cell`` for a type name in ``CELL_TYPES``."""
    if name not in _CELLS:
        raise ConfigError(f"cell must be one of {', '.join(CELL_TYPES)}. Received: cell={name!r}")
    return _CELLS[name]
