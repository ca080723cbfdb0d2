"""The training loop: compiled steps, validation, stopping rules, best weights.

A custom loop rather than ``model.fit``: it addresses batches by
(epoch, step), which an exact resume needs, it keeps the best weights
in memory without writing a checkpoint per epoch, and it stops on a time
budget in the middle of an epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time

import numpy as np

from textgen.backend import keras, tf
from textgen.config import COSINE_FLOOR, ModelConfig, TrainConfig
from textgen.data import TrainWindows, eval_batches
from textgen.errors import TrainingError
from textgen.model import named_weights
from textgen.progress import Progress

LN2 = math.log(2.0)


@dataclasses.dataclass
class Evaluation:
    """Loss of a model on some text: nats per token, bits per character."""

    loss: float
    bits_per_char: float
    tokens: int
    characters: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)


@dataclasses.dataclass
class TrainResult:
    """What a training run did and where it ended."""

    history: list[dict]
    best: dict | None
    steps: int
    tokens: int
    seconds: float
    stop_reason: str
    validation_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        """Training throughput, validation time excluded."""
        training_seconds = self.seconds - self.validation_seconds
        return self.tokens / training_seconds if training_seconds > 0 else 0.0


class Evaluator:
    """Computes the loss of a model on token ids, in compiled batches."""

    def __init__(self, model: keras.Model, token_lengths: np.ndarray, seq_length: int, batch_size: int):
        self.model = model
        self.seq_length = seq_length
        self.batch_size = batch_size
        self._lengths = tf.constant(np.asarray(token_lengths, np.float32))  # (V,)
        self._step = tf.function(self._batch_sums, jit_compile=True, reduce_retracing=True)

    def _batch_sums(self, x, y, weights):
        logits = self.model(x, training=False)  # (B, T, V)
        nats = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)  # (B, T)
        chars = tf.gather(self._lengths, y)
        return tf.reduce_sum(nats * weights), tf.reduce_sum(chars * weights)

    def evaluate(self, ids) -> Evaluation:
        """Loss over every next-token prediction in ``ids`` (an array or lazy ``TokenShards``), batch by batch."""
        total_nats = 0.0
        total_chars = 0.0
        for x, y, w in eval_batches(ids, self.seq_length, self.batch_size):
            nats, chars = self._step(x, y, w)
            total_nats += float(nats)
            total_chars += float(chars)
        tokens = max(len(ids) - 1, 0)
        if tokens == 0:
            raise TrainingError(f"text is too short to evaluate: it needs at least 2 tokens. Received: tokens={len(ids)}")
        loss = total_nats / tokens
        bits_per_char = total_nats / LN2 / max(total_chars, 1.0)
        return Evaluation(loss, bits_per_char, tokens, int(total_chars))


def scheduled_rate(config: TrainConfig, progress: float) -> float:
    """The learning rate at ``progress`` (0 to 1) of the run, under ``config.schedule``."""
    if config.schedule == "constant":
        return config.learning_rate
    progress = min(max(progress, 0.0), 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.learning_rate * (COSINE_FLOOR + (1.0 - COSINE_FLOOR) * cosine)


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam with the gradient's global norm clipped, as LSTMs need."""
    return keras.optimizers.Adam(learning_rate=config.learning_rate, global_clipnorm=config.clipnorm)


@dataclasses.dataclass
class LoopState:
    """Where the training loop is: everything but the variables, as plain JSON."""

    epoch: int = 1
    step_in_epoch: int = 0  # the next step to run in ``epoch``
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0  # wall time spent so far, over all sessions
    validation_seconds: float = 0.0
    best: dict | None = None
    epochs_without_gain: int = 0
    history: list = dataclasses.field(default_factory=list)
    epoch_losses: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LoopState":
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


class Trainer:
    """Runs the training loop over ``TrainWindows`` and measures on validation ids.

    ``checkpoint`` (optional) is called with the trainer every
    ``config.checkpoint_every`` steps, at the end of every epoch and when
    training stops; ``state_arrays`` and ``state`` are what it should save.
    ``cluster`` (a ``textgen.distributed.Cluster``, whose scope the model was
    built in) trains over its replicas; without one, one device trains.
    """

    def __init__(self, model: keras.Model, model_config: ModelConfig, config: TrainConfig,
                 token_lengths: np.ndarray, progress: Progress | None = None, checkpoint=None, cluster=None):
        self.model = model
        self.model_config = model_config
        self.config = config
        self.progress = progress or Progress(stream=None)
        self.checkpoint = checkpoint
        self.cluster = cluster
        with cluster.scope() if cluster else contextlib.nullcontext():
            self.optimizer = make_optimizer(config)
            self.optimizer.build(model.trainable_variables)
        self.evaluator = Evaluator(model, token_lengths, config.validation_window, config.batch_size)
        # XLA fuses the LSTM's per-step ops, which Keras leaves uncompiled on CPU.
        self._train_step = tf.function(self._step, jit_compile=True)
        self._replicated = cluster.make_step(model, self.optimizer, config.batch_size, config.seq_length) \
            if cluster else None
        self._chief_clock = 0.0  # in a cluster, the chief's training seconds as of the last step
        self.state = LoopState()
        self.best_weights: dict[str, np.ndarray] | None = None

    def _step(self, x, y):
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)  # (B, T, V)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        variables = self.model.trainable_variables
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return loss

    def _snapshot(self) -> dict[str, np.ndarray]:
        return {name: np.array(var.numpy()) for name, var in named_weights(self.model, self.model_config).items()}

    def _restore(self, snapshot: dict[str, np.ndarray]) -> None:
        for name, var in named_weights(self.model, self.model_config).items():
            var.assign(snapshot[name])

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every variable the next steps depend on: model (random generator states
        included), optimizer, and the best weights so far."""
        arrays = {f"model/{i:04d}": np.array(v.numpy()) for i, v in enumerate(self.model.variables)}
        arrays.update({f"optimizer/{i:04d}": np.array(v.numpy()) for i, v in enumerate(self.optimizer.variables)})
        for name, value in (self.best_weights or {}).items():
            arrays[f"best/{name}"] = value
        return arrays

    def restore(self, arrays: dict[str, np.ndarray], state: dict) -> None:
        """Put the trainer back where ``state_arrays`` and ``state`` were taken."""
        for prefix, variables in (("model", self.model.variables), ("optimizer", self.optimizer.variables)):
            for i, variable in enumerate(variables):
                key = f"{prefix}/{i:04d}"
                if key not in arrays or tuple(arrays[key].shape) != tuple(variable.shape):
                    raise TrainingError(f"the checkpoint does not fit this model. Received: variable={key}")
                variable.assign(arrays[key])
        best = {key[len("best/"):]: value for key, value in arrays.items() if key.startswith("best/")}
        self.best_weights = best or None
        self.state = LoopState.from_dict(state)

    def fit(self, windows: TrainWindows, val_ids) -> TrainResult:
        """Train from ``self.state`` until a stopping rule fires; leave the best weights in the model.

        Stops on ``epochs``, ``max_steps``, ``max_time``, ``patience`` epochs
        without a better validation loss, or Ctrl-C (``stop_reason`` says
        which). A non-finite loss raises ``TrainingError``.
        """
        cfg, st = self.config, self.state
        tokens_per_step = cfg.batch_size * cfg.seq_length
        session_start = time.monotonic()
        seconds_before = st.seconds
        stop_reason = "epochs"

        def elapsed() -> float:
            return seconds_before + time.monotonic() - session_start

        self._chief_clock = seconds_before

        def clock() -> float:
            """The time that time-based decisions (max_time, the schedule) use: in a cluster,
            the chief's as of the last step, so that every worker decides alike."""
            return elapsed() if self.cluster is None else self._chief_clock

        def validate(fraction: float) -> None:
            began = time.monotonic()
            result = self.evaluator.evaluate(val_ids)
            if self.cluster is not None:  # every worker takes the chief's numbers, so best and patience agree
                result.loss, result.bits_per_char = self.cluster.agree([result.loss, result.bits_per_char])
            st.validation_seconds += time.monotonic() - began
            record = {"epoch": st.epoch, "epoch_fraction": round(fraction, 4), "step": st.steps,
                      "train_loss": float(np.mean(st.epoch_losses)) if st.epoch_losses else None,
                      "val_loss": result.loss, "val_bits_per_char": result.bits_per_char,
                      "learning_rate": float(self.optimizer.learning_rate.numpy()),  # .numpy(): also a MirroredVariable
                      "seconds": round(elapsed(), 2)}
            st.history.append(record)
            improved = st.best is None or result.loss < st.best["val_loss"]
            self.progress.message(
                f"epoch {st.epoch} step {st.steps}: val loss {result.loss:.4f} nats/token, "
                f"{result.bits_per_char:.4f} bits/char" + (" (best)" if improved else ""))
            if improved:
                st.best, self.best_weights = dict(record), self._snapshot()
                st.epochs_without_gain = 0
            else:
                st.epochs_without_gain += 1

        def save_checkpoint() -> None:
            if self.checkpoint is not None:
                st.seconds = elapsed()
                self.checkpoint(self)

        try:
            while st.epoch <= cfg.epochs:
                epoch_steps = windows.steps_in_epoch(st.epoch)
                if cfg.max_steps is not None:
                    epoch_steps = min(epoch_steps, st.step_in_epoch + cfg.max_steps - st.steps)
                reason = None
                # Batches come through tf.data, read ahead while the current one trains.
                steps = (st.epoch, st.step_in_epoch, max(epoch_steps, st.step_in_epoch))
                batches = self.cluster.epoch_batches(windows, *steps) if self.cluster else windows.epoch_batches(*steps)
                for x, y in batches:
                    if cfg.schedule != "constant":
                        self.optimizer.learning_rate = scheduled_rate(cfg, self._progress(clock(), windows))
                    if self._replicated is None:
                        loss = float(self._train_step(x, y))
                    else:
                        loss, self._chief_clock = self._replicated(x, y, elapsed())
                    if not math.isfinite(loss):
                        raise TrainingError(
                            f"training loss became {loss} at step {st.steps + 1}; nothing non-finite was saved and "
                            f"the last checkpoint is kept. Try a lower --learning-rate or --clipnorm. "
                            f"Received: learning_rate={cfg.learning_rate}")
                    st.steps += 1
                    st.step_in_epoch += 1
                    st.tokens += tokens_per_step
                    st.epoch_losses.append(loss)
                    now = elapsed()
                    rate = st.tokens / max(now - st.validation_seconds, 1e-9)
                    self.progress.update(epoch=st.epoch, step=st.step_in_epoch, steps=epoch_steps,
                                         loss=float(np.mean(st.epoch_losses[-50:])), tokens_per_second=rate,
                                         eta_seconds=self._eta(now, windows))
                    if cfg.max_time is not None and clock() >= cfg.max_time:
                        reason = "max_time"
                        break
                    if cfg.max_steps is not None and st.steps >= cfg.max_steps:
                        reason = "max_steps"
                        break
                    if cfg.checkpoint_every and st.steps % cfg.checkpoint_every == 0 \
                            and st.step_in_epoch < epoch_steps:
                        save_checkpoint()
                batches.close()  # stops the read-ahead of an epoch left early
                full_epoch = max(windows.steps_in_epoch(st.epoch), 1)
                validate(st.step_in_epoch / full_epoch)
                if reason is None:
                    st.epoch, st.step_in_epoch, st.epoch_losses = st.epoch + 1, 0, []
                save_checkpoint()
                if reason:
                    stop_reason = reason
                    break
                if cfg.patience is not None and st.epochs_without_gain >= cfg.patience:
                    stop_reason = "patience"
                    break
        except KeyboardInterrupt:
            stop_reason = "interrupted"
            if st.steps:
                save_checkpoint()

        st.seconds = elapsed()
        if self.best_weights is not None:
            self._restore(self.best_weights)
        return TrainResult(st.history, st.best, st.steps, st.tokens, st.seconds, stop_reason,
                           st.validation_seconds)

    def _progress(self, elapsed: float, windows) -> float:
        """How far the run is towards its first limit, from 0 to 1."""
        st, cfg = self.state, self.config
        fractions = [st.steps / (cfg.epochs * max(windows.steps_in_epoch(1), 1))]
        if cfg.max_steps is not None:
            fractions.append(st.steps / cfg.max_steps)
        if cfg.max_time is not None:
            fractions.append(elapsed / cfg.max_time)
        return max(fractions)

    def _eta(self, elapsed: float, windows: TrainWindows) -> float | None:
        """Seconds left until the first limit that will stop training."""
        st, cfg = self.state, self.config
        if st.steps == 0:
            return None
        per_step = (elapsed - st.validation_seconds) / st.steps
        this_epoch = windows.steps_in_epoch(st.epoch)
        remaining = (this_epoch - st.step_in_epoch) + (cfg.epochs - st.epoch) * this_epoch
        if cfg.max_steps is not None:
            remaining = min(remaining, cfg.max_steps - st.steps)
        eta = remaining * per_step
        if cfg.max_time is not None:
            eta = min(eta, cfg.max_time - elapsed)
        return max(eta, 0.0)
