"""Plain-NumPy reference implementations of every cell's textbook equations.

Written independently of ``textgen.model.cells`` (float64, one step at a time, no
shared helpers), so the tests compare two separate readings of the maths.
"""

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def lstm_step(w, x, h, c):
    U = h.shape[-1]
    z = x @ w["kernel"] + h @ w["recurrent_kernel"] + w["bias"]
    i = sigmoid(z[:, :U])
    f = sigmoid(z[:, U:2 * U])
    g = np.tanh(z[:, 2 * U:3 * U])
    o = sigmoid(z[:, 3 * U:])
    c_new = f * c + i * g
    h_new = o * np.tanh(c_new)
    return (h_new, c_new), dict(input=i, forget=f, candidate=g, output=o, cell=c_new, hidden=h_new)


def peephole_step(w, x, h, c):
    U = h.shape[-1]
    p = w["peephole"]
    z = x @ w["kernel"] + h @ w["recurrent_kernel"] + w["bias"]
    i = sigmoid(z[:, :U] + p[0] * c)
    f = sigmoid(z[:, U:2 * U] + p[1] * c)
    g = np.tanh(z[:, 2 * U:3 * U])
    c_new = f * c + i * g
    o = sigmoid(z[:, 3 * U:] + p[2] * c_new)
    h_new = o * np.tanh(c_new)
    return (h_new, c_new), dict(input=i, forget=f, candidate=g, output=o, cell=c_new, hidden=h_new)


def cifg_step(w, x, h, c):
    U = h.shape[-1]
    z = x @ w["kernel"] + h @ w["recurrent_kernel"] + w["bias"]
    f = sigmoid(z[:, :U])
    g = np.tanh(z[:, U:2 * U])
    o = sigmoid(z[:, 2 * U:])
    c_new = f * c + (1.0 - f) * g
    h_new = o * np.tanh(c_new)
    return (h_new, c_new), dict(input=1.0 - f, forget=f, candidate=g, output=o, cell=c_new, hidden=h_new)


def gru_step(w, x, h):
    U = h.shape[-1]
    from_input = x @ w["kernel"] + w["bias"][0]
    from_state = h @ w["recurrent_kernel"] + w["bias"][1]
    z = sigmoid(from_input[:, :U] + from_state[:, :U])
    r = sigmoid(from_input[:, U:2 * U] + from_state[:, U:2 * U])
    n = np.tanh(from_input[:, 2 * U:] + r * from_state[:, 2 * U:])
    h_new = z * h + (1.0 - z) * n
    return (h_new,), dict(update=z, reset=r, candidate=n, hidden=h_new)


def rnn_step(w, x, h):
    h_new = np.tanh(x @ w["kernel"] + h @ w["recurrent_kernel"] + w["bias"])
    return (h_new,), dict(hidden=h_new)


STEPS = {"lstm": (lstm_step, 2), "peephole": (peephole_step, 2), "cifg": (cifg_step, 2), "gru": (gru_step, 1),
         "rnn": (rnn_step, 1)}


def run(cell, weights, x):
    """x (B, T, E) float64 -> hidden states (B, T, U) and per-step records, from zero state."""
    step, state_count = STEPS[cell]
    batch, units = x.shape[0], weights["recurrent_kernel"].shape[0]
    states = tuple(np.zeros((batch, units)) for _ in range(state_count))
    hidden, records = [], []
    for t in range(x.shape[1]):
        states, record = step(weights, x[:, t], *states)
        hidden.append(states[0])
        records.append(record)
    return np.stack(hidden, axis=1), records
