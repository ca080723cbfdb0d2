"""A worked example of one recurrent unit on one step, with the model's real numbers.

``explain_step`` reads a trained model's weights and the states a trace
recorded just before the chosen token, and recomputes that one unit's step
by hand in float64: every weighted sum (with its largest terms), every
sigmoid and tanh, what share of the long-term memory was kept, what was
added, and what became the short-term memory. ``render`` prints it the way
a textbook walks through an LSTM cell. A test checks the hand computation
against the model's own trace.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from textgen.errors import ConfigError
from textgen.model.cells import get_cell
from textgen.model.network import layer_weights

_TOP_TERMS = 3
_SYMBOLS = {"input": "i", "forget": "f", "candidate": "g", "output": "o", "update": "z", "reset": "r",
            "hidden": "h"}


@dataclasses.dataclass
class WeightedSum:
    """``vector . weights`` for one unit: its value, length and largest terms (index, input, weight)."""

    value: float
    size: int
    top_terms: list[tuple[int, float, float]]


@dataclasses.dataclass
class GateStep:
    """One gate's pre-activation, split into its parts, and its activation."""

    name: str
    from_input: WeightedSum
    from_state: WeightedSum
    bias: float
    extra: dict[str, float]  # peephole term, or the GRU's reset-scaled recurrent part
    total: float
    function: str  # "sigmoid" or "tanh"
    value: float


@dataclasses.dataclass
class Explanation:
    """Everything ``render`` prints; ``memory`` holds the state update's named numbers."""

    cell: str
    layer: int
    unit: int
    units: int
    position: int
    token: str
    context: str
    input_name: str
    gates: list[GateStep]
    memory: dict[str, float]


def _weighted_sum(vector: np.ndarray, weights: np.ndarray) -> WeightedSum:
    terms = vector * weights
    order = np.argsort(-np.abs(terms))[:_TOP_TERMS]
    return WeightedSum(float(terms.sum()), len(vector),
                       [(int(j), float(vector[j]), float(weights[j])) for j in order])


def explain_step(model, text: str, position: int = -1, layer: int = 0, unit: int = 0) -> Explanation:
    """Recompute unit ``unit`` of layer ``layer`` on token ``position`` of ``text`` (negative counts from the end)."""
    config = model.config
    trace = model.trace(text)
    steps = len(trace.tokens)
    for name, value, high in (("layer", layer, config.layers), ("unit", unit, config.units)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < high:
            raise ConfigError(f"{name} must be between 0 and {high - 1}. Received: {name}={value!r}")
    if isinstance(position, bool) or not isinstance(position, int) or not -steps <= position < steps:
        raise ConfigError(f"position must index one of the text's {steps} tokens (negative counts from the end). "
                          f"Received: position={position!r}")
    position %= steps
    cell = get_cell(config.cell)
    weights = {name: np.asarray(variable.numpy(), np.float64)
               for name, variable in layer_weights(model.keras_model, config, layer).items()}

    # The layer's input at this step: the token's embedding, or the hidden state of the layer below.
    if layer == 0:
        embeddings = model.keras_model.get_layer("embedding").embeddings.numpy()
        x = np.asarray(embeddings[trace.ids[position]], np.float64)
        input_name = f"the embedding of token {trace.tokens[position]!r}"
    else:
        x = trace.layers[layer - 1]["hidden"][position].astype(np.float64)
        input_name = f"the hidden state of layer {layer - 1}"
    # The states just before this token: what the trace recorded after the previous one, or zeros.
    recorded = trace.layers[layer]
    states = tuple(recorded[name][position - 1].astype(np.float64) if position else np.zeros(config.units)
                   for name in cell.state_records)

    gate_terms, memory = cell.unit_step(weights, x, states, unit)
    h_previous = states[0]  # h comes first among every cell's states
    gates = [GateStep(terms.name, _weighted_sum(x, terms.input_weights), _weighted_sum(h_previous, terms.state_weights),
                      terms.bias, terms.extra, terms.total, terms.function, terms.value) for terms in gate_terms]
    context = "".join(trace.tokens[max(0, position - 30):position])
    return Explanation(config.cell, layer, unit, config.units, position, trace.tokens[position], context, input_name,
                       gates, memory)


def _sum_line(label: str, total: WeightedSum, vector: str, weight: str) -> str:
    terms = ", ".join(f"{vector}[{j}]*{weight}[{j}] = {value:+.3f}*{w:+.3f} = {value * w:+.4f}"
                      for j, value, w in total.top_terms)
    return f"    {label:<10}= {total.value:+.4f}   (sum of {total.size} terms; largest: {terms})"


def render(explanation: Explanation) -> str:
    """The explanation as a worked example, one quantity per line."""
    e = explanation
    lines = [f"{e.cell.upper()} layer {e.layer}, unit {e.unit} of {e.units}, at token {e.position} "
             f"{e.token!r} (after ...{e.context!r})",
             f"input x: {e.input_name}; h_prev: this layer's hidden state after the previous token", ""]
    for gate in e.gates:
        symbol = _SYMBOLS[gate.name]
        role = {"forget": "what share of long-term memory to keep", "input": "how much new memory to add",
                "candidate": "the new memory on offer", "output": "what share of memory to show as h",
                "update": "what share of the old state to keep", "reset": "how much old state the candidate sees",
                "hidden": "the new state"}[gate.name]
        lines.append(f"{gate.name} {symbol} = {gate.function}(x.W + h_prev.U + b)   -- {role}")
        lines.append(_sum_line("x.W", gate.from_input, "x", "W"))
        lines.append(_sum_line("h_prev.U", gate.from_state, "h", "U"))
        lines.append(f"    {'b':<10}= {gate.bias:+.4f}")
        for label, value in gate.extra.items():
            lines.append(f"    {label:<10}= {value:+.4f}")
        lines.append(f"    {'sum':<10}= {gate.total:+.4f}  ->  {gate.function}({gate.total:+.4f}) = {gate.value:.4f}")
        lines.append("")
    m = e.memory
    if "c" in m:  # a cell state: the LSTM family
        coupled = " (= 1 - f: coupled)" if m["coupled"] else ""
        lines += [
            "long-term memory (cell state c):",
            f"    kept      f * c_prev = {m['forget']:.4f} * {m['c_prev']:+.4f} = {m['kept']:+.4f}"
            f"   ({m['forget']:.0%} of the old memory)",
            f"    added     i * g      = {m['input']:.4f}{coupled} * {m['candidate']:+.4f} = {m['added']:+.4f}",
            f"    new c     = kept + added = {m['kept']:+.4f} {m['added']:+.4f} = {m['c']:+.4f}",
            "short-term memory (hidden state h):",
            f"    h = o * tanh(c) = {m['output']:.4f} * tanh({m['c']:+.4f}) = {m['output']:.4f} * {m['tanh_c']:+.4f}"
            f" = {m['h']:+.4f}   ({m['output']:.0%} of the squashed memory is shown)",
        ]
    elif "update" in m:  # the old state kept by an update gate: the GRU
        lines += [
            "new state h = z * h_prev + (1 - z) * n:",
            f"    kept      z * h_prev    = {m['update']:.4f} * {m['h_prev']:+.4f} = {m['kept']:+.4f}",
            f"    added     (1 - z) * n   = {1 - m['update']:.4f} * {m['candidate']:+.4f} = {m['added']:+.4f}",
            f"    h         = {m['h']:+.4f}",
        ]
    else:
        lines += [f"new state h = tanh(sum) = {m['h']:+.4f}   (the old state {m['h_prev']:+.4f} survives only "
                  f"through U, squashed again at every step)"]
    return "\n".join(lines)
