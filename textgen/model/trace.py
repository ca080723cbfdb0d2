"""What ``TextModel.trace`` records: every layer's gates and states, token by token.

A ``Trace`` is plain NumPy, so the renderers in ``inspect_report`` and any
user code can read it without TensorFlow.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Every quantity a trace can hold, in display order. A cell records the ones it has:
# lstm and peephole all but update/reset; cifg the same (its input gate is 1 - forget);
# gru update, reset, candidate, hidden; rnn only hidden (its state is its squashed sum).
QUANTITIES = ("forget", "input", "output", "candidate", "update", "reset", "cell", "hidden")
# The quantities that are gates: sigmoids, in [0, 1]. The others are states or the candidate (tanh).
GATES = ("forget", "input", "output", "update", "reset")


@dataclasses.dataclass
class Trace:
    """Per-token values of every layer of a model, read from a run over some text.

    ``tokens[t]`` is the text of token t; ``layers[l][name]`` is a (T, U) array
    holding, for each token, the value of ``name`` in layer l right after that
    token was read; ``ids`` are the tokens' ids. Tokens from ``generated_from`` on were sampled by the
    model rather than given in the prompt.
    """

    cell: str
    tokens: list[str]
    generated_from: int
    layers: list[dict[str, np.ndarray]]
    ids: list[int] = dataclasses.field(default_factory=list)  # the token ids, when known

    @property
    def units(self) -> int:
        return int(next(iter(self.layers[0].values())).shape[1])

    def to_dict(self) -> dict:
        """A JSON-ready dict: lists of floats, rounded to 6 decimals."""
        return {
            "cell": self.cell,
            "tokens": list(self.tokens),
            "generated_from": int(self.generated_from),
            "ids": [int(i) for i in self.ids],
            "layers": [{name: np.round(values.astype(np.float64), 6).tolist() for name, values in layer.items()}
                       for layer in self.layers],
        }


def record_trace(stepper, ids) -> list[dict[str, np.ndarray]]:
    """Run ``ids`` (T,) one token at a time through a ``ModelStep`` and keep every layer's record.

    Returns one dict per layer of (T, U) arrays, in the order of
    ``QUANTITIES``. The loop is one compiled graph, so a long text costs one
    call, not one per token.
    """
    from textgen.backend import tf

    ids = tf.convert_to_tensor(np.asarray(ids, np.int32))
    # One eager step on a dummy token tells which quantities each layer records.
    _, _, probe = stepper.trace_step(tf.zeros([1], tf.int32), stepper.initial_states(1))
    names = [[name for name in QUANTITIES if name in record] for record in probe]

    @tf.function
    def run(ids):
        steps = tf.shape(ids)[0]
        arrays = [[tf.TensorArray(tf.float32, size=steps) for _ in layer] for layer in names]
        states = stepper.initial_states(1)
        for t in tf.range(steps):
            _, states, records = stepper.trace_step(tf.expand_dims(ids[t], 0), states)
            arrays = [[array.write(t, records[layer][name][0]) for array, name in zip(arrays[layer], names[layer])]
                      for layer in range(len(names))]
        return [[array.stack() for array in layer] for layer in arrays]  # each (T, U)

    stacked = run(ids)
    return [{name: values.numpy() for name, values in zip(layer_names, layer)}
            for layer_names, layer in zip(names, stacked)]
