"""The long-memory experiment: can a cell carry one symbol across D steps?

For every task of ``textgen.experiments.memory.tasks``, every distance D and every
cell, a one-layer model with about the same number of parameters is trained
for the same CPU-time budget (and at most the same number of steps) on freshly
generated batches, then scored by greedy accuracy at the dependent positions
of held-out sequences. Chance is 1 / kinds (0.25 for all three tasks).

The loss is taken, by default, at the dependent positions only. The other
targets are random filler (the same irreducible loss for every cell, whose
gradient is noise) or the marker, whose *timing* can only be predicted by
counting D steps from the key: a second long-memory skill that would blur what
is measured, which is remembering *which* key came D steps back.
``loss_on="all"`` trains on every position instead, as a language model would.

It also measures vanishing gradients directly: unrolling ``ModelStep`` over
K + 1 tokens whose first is the key and whose next target is the answer,
``gradient_norms`` gives ||dL/dh_{t-k}|| for k = 0..K, the size of the signal
that reaches the hidden state k steps back. For the plain RNN it decays
geometrically: each step back multiplies it by U^T diag(1 - h^2).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import time

import numpy as np

from textgen.backend import keras, tf
from textgen.config import SEED_MAX, check_float, check_int
from textgen.errors import ConfigError, ExperimentError
from textgen.files import refuse_to_overwrite, write_atomically
from textgen.experiments.memory import plots as figures
from textgen.experiments.memory.tasks import ALPHABET, MIN_DISTANCE, TASKS, SyntheticSet, generate, kinds
from textgen.model.cells import CELL_TYPES, get_cell
from textgen.model.loss import token_loss
from textgen.model.network import ModelStep, build_model, layer_weights
from textgen.model.settings import MAX_UNITS, ModelConfig
from textgen.provenance import library_versions
from textgen.training.optimizer import make_optimizer

PLOTS = ("accuracy.png", "gradient_norms.png")
OUTPUTS = ("results.json", "table.txt", *PLOTS)
LOSS_POSITIONS = ("dependent", "all")
_CURVE_EVERY = 25  # steps between points of the recorded loss curve


def _check_list(name, values, check) -> tuple:
    values = tuple(values)
    if not values or len(set(values)) != len(values):
        raise ConfigError(f"{name} must be a non-empty list without repeats. Received: {name}={list(values)!r}")
    for value in values:
        check(value)
    return values


@dataclasses.dataclass(frozen=True)
class MemorySettings:
    """Everything that defines a memory experiment; ``seconds_per_run`` is CPU time of this process."""

    tasks: tuple = TASKS
    distances: tuple = (10, 50, 100, 200)
    cells: tuple = ("rnn", "gru", "lstm")
    parameters: int = 23_000  # per model, matched as closely as whole units allow
    embedding_dim: int = 16
    seconds_per_run: float = 20.0
    max_steps: int = 5000
    batch_size: int = 32
    learning_rate: float = 3e-3
    clipnorm: float = 1.0
    loss_on: str = "dependent"
    eval_sequences: int = 1000
    gradient_steps: int | None = None  # K; default: the largest distance
    gradient_batch: int = 64
    pad: int = 4
    seed: int = 0
    forget_bias: float | None = None  # keep-gate bias (lstm-like: forget gate; gru: update gate); None: as build_model draws it
    jit_compile: bool = True  # XLA for the training step: it fuses each cell's per-step ops

    def __post_init__(self):
        def task(value):
            kinds(value)  # refuses unknown tasks

        def cell(value):
            get_cell(value)

        object.__setattr__(self, "tasks", _check_list("tasks", self.tasks, task))
        object.__setattr__(self, "cells", _check_list("cells", self.cells, cell))
        object.__setattr__(self, "distances", _check_list(
            "distances", self.distances,
            lambda d: check_int("distances", d, MIN_DISTANCE, 10_000)))
        check_int("parameters", self.parameters, 1, 50_000_000)
        check_int("embedding_dim", self.embedding_dim, 1, 4096)
        check_float("seconds_per_run", self.seconds_per_run, 0.0, 1e6)
        check_int("max_steps", self.max_steps, 1, 10**9)
        check_int("batch_size", self.batch_size, 1, 65_536)
        check_float("learning_rate", self.learning_rate, 1e-9, 10.0)
        check_float("clipnorm", self.clipnorm, 1e-9, 1e6)
        if self.loss_on not in LOSS_POSITIONS:
            raise ConfigError(f"loss_on must be one of {', '.join(LOSS_POSITIONS)}. Received: loss_on={self.loss_on!r}")
        check_int("eval_sequences", self.eval_sequences, 1, 10**7)
        if self.gradient_steps is not None:
            check_int("gradient_steps", self.gradient_steps, 1, 10_000)
        check_int("gradient_batch", self.gradient_batch, 1, 65_536)
        check_int("pad", self.pad, 0, 10_000)
        check_int("seed", self.seed, 0, SEED_MAX)
        if self.forget_bias is not None:
            check_float("forget_bias", self.forget_bias, -20.0, 20.0)
        if not isinstance(self.jit_compile, bool):
            raise ConfigError(f"jit_compile must be True or False. Received: jit_compile={self.jit_compile!r}")

    @property
    def k_max(self) -> int:
        """K: the gradient is measured k = 0..K steps back."""
        return self.gradient_steps or max(self.distances)

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}


def model_config(cell: str, units: int, embedding_dim: int) -> ModelConfig:
    """The one-layer model of the experiment over the tasks' alphabet."""
    return ModelConfig(vocab_size=len(ALPHABET), layers=1, units=units,
                       embedding_dim=embedding_dim, cell=cell)


def units_for_budget(cell: str, parameters: int, embedding_dim: int) -> int:
    """The number of units whose whole model has the parameter count nearest to ``parameters``.

    The count grows with the units (quadratically), so a binary search finds
    the last size at or under the budget; the next size up wins if it is nearer.
    """
    def count(units):
        return model_config(cell, units, embedding_dim).parameter_count()

    if count(1) > parameters:
        raise ConfigError(f"a {cell} model needs at least {count(1):,} parameters at embedding size "
                          f"{embedding_dim}. Received: parameters={parameters}")
    low, high = 1, MAX_UNITS
    while low < high:  # the largest units with count(units) <= parameters
        middle = (low + high + 1) // 2
        low, high = (middle, high) if count(middle) <= parameters else (low, middle - 1)
    if low < MAX_UNITS and count(low + 1) - parameters < parameters - count(low):
        return low + 1
    return low


def set_keep_bias(model, config: ModelConfig, value: float) -> None:
    """Set the bias of the gate that keeps the state in every layer (``Cell.keep_gate``: the forget gate of
    lstm, peephole and cifg, the update gate z of gru, whose h_t = z h_{t-1} + (1 - z) n_t). The plain rnn has
    no such gate and is left as it is."""
    cell = get_cell(config.cell)
    if cell.keep_gate is None:
        return
    for index in range(config.layers):
        bias = layer_weights(model, config, index)["bias"]
        bias.assign(cell.with_keep_bias(bias.numpy(), config.units, value))


def _seed(*parts) -> int:
    """A 31-bit seed mixed from the settings' seed and names/numbers identifying a run."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] >> 1)


def _batch(data: SyntheticSet, loss_on: str):
    """Inputs, next-token targets and loss weights, each (B, L - 1)."""
    x, y = data.tokens[:, :-1], data.tokens[:, 1:]
    if loss_on == "all":
        return x, y, np.ones(y.shape, np.float32)
    weights = np.zeros(y.shape, np.float32)
    weights[np.arange(len(y)), data.dependent - 1] = 1.0  # the target at input j-1 is token j
    return x, y, weights


def gradient_norms(step_model: ModelStep, tokens, targets, layer: int = -1) -> np.ndarray:
    """||dL/dh_{t-k}|| for k = 0..K, each averaged over the batch.

    ``tokens`` (B, K+1) are fed one by one; L is the cross-entropy of the
    last step's logits against ``targets`` (B,), so t = K and h_{t-k} is the
    hidden state (of ``layer``) right after reading token K - k. The gradient
    of the whole L with respect to h_{t-k} counts every path from it to L
    (through the LSTM's cell state too), but none through c_{t-k} itself.
    """
    tokens = tf.convert_to_tensor(np.asarray(tokens, np.int32))  # (B, K+1)
    batch, length = tokens.shape
    config = step_model.config
    per_layer = len(get_cell(config.cell).state_names)
    index = (layer % config.layers) * per_layer  # h comes first among a layer's states
    states = step_model.initial_states(batch)
    hidden = []
    with tf.GradientTape() as tape:
        for t in range(length):
            logits, states = step_model.step(tokens[:, t], states)  # (B, V)
            hidden.append(states[index])  # h_t, (B, U)
        # Summed over rows: row b's loss depends on row b's states only, so each row keeps its own gradient.
        loss = tf.reduce_sum(token_loss(tf.convert_to_tensor(np.asarray(targets, np.int32)), logits))
    gradients = tape.gradient(loss, hidden)  # K+1 tensors (B, U), index t
    norms = np.stack([np.linalg.norm(g.numpy().astype(np.float64), axis=1) for g in gradients])  # (K+1, B)
    return norms[::-1].mean(axis=1)  # index k = K - t


class MemoryRun:
    """One model of the experiment: build, train on fresh batches, score, measure gradients."""

    def __init__(self, settings: MemorySettings, task: str, distance: int, cell: str):
        self.settings, self.task, self.distance, self.cell = settings, task, distance, cell
        self.units = units_for_budget(cell, settings.parameters, settings.embedding_dim)
        self.config = model_config(cell, self.units, settings.embedding_dim)
        keras.utils.set_random_seed(_seed(settings.seed, TASKS.index(task), distance,
                                          CELL_TYPES.index(cell)))
        self.model = build_model(self.config)
        if settings.forget_bias is not None:
            set_keep_bias(self.model, self.config, settings.forget_bias)
        self.optimizer = make_optimizer(settings.learning_rate, settings.clipnorm)
        self.optimizer.build(self.model.trainable_variables)
        # XLA fuses each cell's per-step ops, which TensorFlow otherwise runs one by one. Scoring runs
        # a few batches only, where compiling would cost more than it saves.
        self._train_step = tf.function(self._step, jit_compile=settings.jit_compile)
        self._logits = tf.function(lambda x: self.model(x, training=False))

    def _step(self, x, y, weights):
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)  # (B, T, V)
            loss = tf.reduce_sum(token_loss(y, logits) * weights) / tf.reduce_sum(weights)  # over (B, T)
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def _data(self, stream: int):
        """Stream 0 trains (the same batches for every cell), 1 scores, 2 measures gradients."""
        return np.random.default_rng([self.settings.seed, TASKS.index(self.task), self.distance, stream])

    def train(self) -> dict:
        """Train until the CPU-time budget or the step cap; the compiling first step is not timed."""
        s = self.settings
        rng = self._data(0)
        began = time.process_time()
        losses = [float(self._train_step(*_batch(generate(self.task, self.distance, s.batch_size, rng,
                                                                    s.pad), s.loss_on)))]
        compile_seconds = time.process_time() - began
        cpu_start, wall_start = time.process_time(), time.monotonic()
        curve, diverged = [], False
        while len(losses) < s.max_steps and time.process_time() - cpu_start < s.seconds_per_run:
            data = generate(self.task, self.distance, s.batch_size, rng, s.pad)
            losses.append(float(self._train_step(*_batch(data, s.loss_on))))
            if not math.isfinite(losses[-1]):
                diverged = True  # recorded, and scored as it stands: one bad run should not end the experiment
                break
            if len(losses) % _CURVE_EVERY == 0:
                curve.append([len(losses), round(float(np.mean(losses[-_CURVE_EVERY:])), 5)])
        return {"steps": len(losses), "cpu_seconds": round(time.process_time() - cpu_start, 2),
                "wall_seconds": round(time.monotonic() - wall_start, 2),
                "compile_seconds": round(compile_seconds, 2), "diverged": diverged,
                "train_loss": round(float(np.mean(losses[-_CURVE_EVERY:])), 5), "loss_curve": curve}

    def score(self) -> dict:
        """Greedy accuracy and loss at the dependent positions of held-out sequences."""
        s = self.settings
        data = generate(self.task, self.distance, s.eval_sequences, self._data(1), s.pad)
        correct, nats, size = 0, 0.0, min(256, s.eval_sequences)
        for first in range(0, s.eval_sequences, size):
            rows = np.arange(first, min(first + size, s.eval_sequences))
            # The last batch is padded to the same shape, so the function is traced once.
            padded = np.resize(rows, size)
            logits = self._logits(data.tokens[padded, :-1]).numpy()[:len(rows)]  # (b, L-1, V)
            at = logits[np.arange(len(rows)), data.dependent[rows] - 1]  # (b, V): predicting token j
            answers = data.answers()[rows]
            correct += int(np.sum(at.argmax(-1) == answers))
            shifted = at - at.max(-1, keepdims=True)
            nats += float(np.sum(np.log(np.exp(shifted).sum(-1)) - shifted[np.arange(len(at)), answers]))
        return {"accuracy": correct / s.eval_sequences, "eval_loss": round(nats / s.eval_sequences, 5),
                "chance": data.chance}

    def gradients(self) -> list[float]:
        """``gradient_norms`` on key-first sequences of this task whose answer is K + 1 tokens on."""
        s = self.settings
        data = generate(self.task, s.k_max + 1, s.gradient_batch, self._data(2), pad=0)
        norms = gradient_norms(ModelStep(self.model, self.config), data.tokens[:, :-1], data.tokens[:, -1])
        return [float(f"{value:.4e}") for value in norms]


def check_out_dir(out, overwrite: bool = False) -> pathlib.Path:
    """Create ``out`` if needed; refuse one that already holds results (unless ``overwrite``), before any work."""
    path = pathlib.Path(out)
    if path.exists() and not path.is_dir():
        raise ExperimentError(f"--out must be a directory. Received: out='{path}'")
    refuse_to_overwrite([path / name for name in OUTPUTS], overwrite=overwrite, error=ExperimentError,
                        hint="pass --overwrite or choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExperimentError(f"cannot create the output directory: {exc.strerror}. Received: out='{path}'") from None
    return path


def run_memory_experiment(settings: MemorySettings, out=None, plots: bool = True, progress=None,
                          overwrite: bool = False) -> dict:
    """Run every task x distance x cell; return the results and, with ``out``, write them there.

    ``progress`` (optional) is called with one line of text per finished model.
    Written files: ``results.json``, ``table.txt`` and, with ``plots``,
    ``accuracy.png`` and ``gradient_norms.png``. Results already in ``out``
    are refused before any work, or replaced with ``overwrite``.
    """
    if plots:
        figures.require_matplotlib()
    path = check_out_dir(out, overwrite) if out is not None else None
    say = progress or (lambda line: None)
    began = time.monotonic()
    # Which code and machine made the numbers: initialisations change with textgen versions.
    provenance = {**library_versions(), "cpu_count": os.cpu_count()}
    result = {"settings": settings.to_dict(), "vocab_size": len(ALPHABET), "k_max": settings.k_max,
              "versions": provenance, "runs": [], "untrained_gradient_norms": {}}
    for cell in settings.cells:
        units = units_for_budget(cell, settings.parameters, settings.embedding_dim)
        say(f"{cell}: {units} units, {model_config(cell, units, settings.embedding_dim).parameter_count():,} parameters")
    for task in settings.tasks:
        result["untrained_gradient_norms"][task] = {
            cell: MemoryRun(settings, task, settings.k_max + 1, cell).gradients() for cell in settings.cells}
        for distance in settings.distances:
            for cell in settings.cells:
                run = MemoryRun(settings, task, distance, cell)
                record = {"task": task, "distance": distance, "cell": cell, "units": run.units,
                          "parameters": run.config.parameter_count(), **run.train()}
                record.update(run.score())
                record["gradient_norms"] = run.gradients()
                result["runs"].append(record)
                say(f"{task} D={distance} {cell}: {record['steps']} steps in {record['cpu_seconds']:.0f} CPU s, "
                    f"accuracy {record['accuracy']:.3f} (chance {record['chance']:.3f})")
    result["wall_seconds"] = round(time.monotonic() - began, 1)
    result["table"] = format_table(result["runs"])
    if path is not None:
        write_atomically(path / "results.json", (json.dumps(result, indent=1) + "\n").encode("utf-8"))
        write_atomically(path / "table.txt", (result["table"] + "\n").encode("utf-8"))
        if plots:
            figures.plot_accuracy(result, path / "accuracy.png")
            figures.plot_gradient_norms(result, path / "gradient_norms.png")
        else:  # plots of an earlier experiment (only there with overwrite) must not pass for this one's
            for name in PLOTS:
                (path / name).unlink(missing_ok=True)
    return result


def format_table(runs: list[dict]) -> str:
    """The runs as a plain-text table, one line per model."""
    header = ("task", "D", "cell", "units", "params", "steps", "cpu s", "loss", "accuracy", "chance")
    rows = [(r["task"], str(r["distance"]), r["cell"], str(r["units"]), f"{r['parameters']:,}", str(r["steps"]),
             f"{r['cpu_seconds']:.0f}", f"{r['eval_loss']:.3f}", f"{r['accuracy']:.3f}", f"{r['chance']:.3f}")
            for r in runs]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)
