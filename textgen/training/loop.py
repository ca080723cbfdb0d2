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
from textgen.config import TrainConfig
from textgen.data.windows import TrainWindows
from textgen.errors import TrainingError
from textgen.model.loss import Evaluator, token_loss
from textgen.model.network import named_weights
from textgen.model.settings import ModelConfig
from textgen.training.optimizer import make_optimizer, scheduled_rate
from textgen.training.progress import Progress

# The training loss shown is the mean of this many latest steps.
_SHOWN_LOSS_STEPS = 50
# The training-loss curve kept in the metrics: one point per CURVE_EVERY steps (the mean loss of those
# steps) until it holds 2 x CURVE_POINTS points; then each two neighbours become one and the steps per
# point double, so a run of any length keeps between CURVE_POINTS and 2 x CURVE_POINTS points.
CURVE_EVERY = 25
CURVE_POINTS = 250


@dataclasses.dataclass
class TrainResult:
    """What a training run did and where it ended."""

    history: list[dict]
    best: dict | None
    steps: int
    tokens: int
    seconds: float
    stop_reason: str
    validation_seconds: float = 0.0  # validating and watching (samples, events, callbacks)
    curve: list = dataclasses.field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        """Training throughput, the time spent validating and watching excluded."""
        training_seconds = self.seconds - self.validation_seconds
        return self.tokens / training_seconds if training_seconds > 0 else 0.0


@dataclasses.dataclass
class LoopState:
    """Where the training loop is: everything but the variables, as plain JSON."""

    epoch: int = 1
    step_in_epoch: int = 0  # the next step to run in ``epoch``
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0  # wall time spent so far, over all sessions
    validation_seconds: float = 0.0  # validating and watching (samples, events, callbacks)
    best: dict | None = None
    epochs_without_gain: int = 0
    history: list = dataclasses.field(default_factory=list)
    epoch_losses: list = dataclasses.field(default_factory=list)
    # The training-loss curve: points {"step", "seconds", "loss"}, each the mean loss of ``curve_every``
    # steps, and the losses of the steps since the last point.
    curve: list = dataclasses.field(default_factory=list)
    curve_every: int = CURVE_EVERY
    curve_losses: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def stop_reason(self, config: TrainConfig, seconds: float) -> str | None:
        """The limit that ends the run here, or None to go on; ``seconds`` is the time the run has spent so far.

        The one statement of the stopping rules, for the loop and for a resumed
        run that may have nothing left to do. Every limit counts the whole run,
        all its sessions together. Time and steps can end a run after any step;
        patience and epochs only between two epochs (``step_in_epoch`` 0),
        once the last one was validated. Patience 0 never stops a run.
        """
        if config.max_time is not None and seconds >= config.max_time:
            return "max_time"
        if config.max_steps is not None and self.steps >= config.max_steps:
            return "max_steps"
        if self.step_in_epoch == 0:
            if config.patience and self.epochs_without_gain >= config.patience:
                return "patience"
            if self.epoch > config.epochs:
                return "epochs"
        return None

    @classmethod
    def from_dict(cls, data: dict) -> "LoopState":
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


class Trainer:
    """Runs the training loop over ``TrainWindows`` and measures on validation ids.

    ``checkpoint`` (optional) is called with the trainer every
    ``config.checkpoint_every`` steps, at the end of every epoch and when
    training stops; ``state_arrays`` and ``state`` are what it should save.
    ``cluster`` (a ``textgen.training.distributed.Cluster``, whose scope the
    model was built in) trains over its replicas; without one, one device trains.
    ``watch`` (a ``textgen.training.watch.Watch``, given to the chief only)
    is told every point of the training-loss curve and every validation, and
    may stop the run (``stop_reason`` "callback").
    """

    def __init__(self, model: keras.Model, model_config: ModelConfig, config: TrainConfig,
                 token_lengths: np.ndarray, progress: Progress | None = None, checkpoint=None, cluster=None,
                 watch=None):
        self.model = model
        self.watch = watch
        self.model_config = model_config
        self.config = config
        self.progress = progress or Progress(stream=None)
        self.checkpoint = checkpoint
        self.cluster = cluster
        with cluster.scope() if cluster else contextlib.nullcontext():
            self.optimizer = make_optimizer(config.learning_rate, config.clipnorm)
            self.optimizer.build(model.trainable_variables)
        self.evaluator = Evaluator(model, token_lengths, config.validation_window, config.batch_size)
        # XLA fuses the LSTM's per-step ops, which Keras leaves uncompiled on CPU.
        self._train_step = tf.function(self._step, jit_compile=True)
        self._replicated = cluster.make_step(model, self.optimizer, config.batch_size, config.seq_length) \
            if cluster else None
        self.state = LoopState()
        self.best_weights: dict[str, np.ndarray] | None = None
        self._session_start = time.monotonic()
        self._seconds_before = 0.0  # training seconds of earlier sessions of this run
        self._chief_seconds = 0.0  # in a cluster, the chief's training seconds as of the last step

    def _step(self, x, y):
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)  # (B, T, V)
            loss = tf.reduce_mean(token_loss(y, logits))
        variables = self.model.trainable_variables
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return loss

    def _snapshot(self) -> dict[str, np.ndarray]:
        return {name: np.array(var.numpy()) for name, var in named_weights(self.model, self.model_config).items()}

    def _restore_weights(self, snapshot: dict[str, np.ndarray]) -> None:
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
        without a better validation loss (``LoopState.stop_reason``), a watch's
        callback returning False (``"callback"``, once that validation is
        checkpointed), or Ctrl-C (``stop_reason`` says which). Every epoch,
        whole or cut short by a limit, ends with a validation and a
        checkpoint. A run resumed where a limit already holds returns at once:
        no step, no validation, no checkpoint. A non-finite loss raises
        ``TrainingError``.
        """
        cfg, st = self.config, self.state
        self._session_start, self._seconds_before = time.monotonic(), st.seconds
        self._chief_seconds = st.seconds
        self._close_finished_epoch(windows)  # a checkpoint written by an older textgen may leave one open
        stop_reason = st.stop_reason(cfg, self._decision_seconds())
        try:
            while stop_reason is None:
                stop_reason = self._train_epoch(windows)
                self._validate(val_ids, st.step_in_epoch / max(windows.steps_in_epoch(st.epoch), 1))
                self._close_finished_epoch(windows)
                # Watched before the checkpoint: a crash in between repeats this validation on resume, and its
                # events with it, rather than losing them. A callback's error still leaves the checkpoint.
                try:
                    go_on = self._watched()
                except Exception:
                    self._save_checkpoint()
                    raise
                self._save_checkpoint()
                if not go_on:
                    stop_reason = "callback"
                stop_reason = stop_reason or st.stop_reason(cfg, self._decision_seconds())
        except KeyboardInterrupt:
            stop_reason = "interrupted"
            if st.steps:
                self._save_checkpoint()
        st.seconds = self._elapsed()
        if self.best_weights is not None:
            self._restore_weights(self.best_weights)
        return TrainResult(st.history, st.best, st.steps, st.tokens, st.seconds, stop_reason, st.validation_seconds,
                           st.curve)

    def _watched(self) -> bool:
        """Tell the watch about the latest validation; False if it asks the run to stop.

        In a cluster only the chief has a watch, and every worker takes its answer.
        """
        go_on = True
        if self.watch is not None:
            began = time.monotonic()
            now = self._elapsed()
            metrics = {**{key: self.state.history[-1][key] for key in ("step", "epoch", "train_loss", "val_loss",
                                                                        "val_bits_per_char", "learning_rate")},
                       "tokens_per_second": self.state.tokens / max(now - self.state.validation_seconds, 1e-9),
                       "seconds": now}
            try:
                go_on = self.watch.validated(metrics)
            finally:
                self.state.validation_seconds += time.monotonic() - began
        if self.cluster is not None:
            go_on = self.cluster.agree([1.0 if go_on else 0.0])[0] > 0.5
        return go_on

    def _close_finished_epoch(self, windows: TrainWindows) -> None:
        """Move on to the next epoch once every step of this one has run and been validated.

        Also when a limit stopped the run on the epoch's last step: the epoch
        is over, so a continued run starts the next one rather than validating
        an epoch with no steps left.
        """
        st = self.state
        if st.step_in_epoch >= windows.steps_in_epoch(st.epoch):
            st.epoch, st.step_in_epoch, st.epoch_losses = st.epoch + 1, 0, []

    def _train_epoch(self, windows: TrainWindows) -> str | None:
        """Train the rest of the current epoch; the limit that cut it short (max_time, max_steps), or None."""
        cfg, st = self.config, self.state
        epoch_steps = windows.steps_in_epoch(st.epoch)
        if cfg.max_steps is not None:
            epoch_steps = min(epoch_steps, st.step_in_epoch + cfg.max_steps - st.steps)
        # Batches are read ahead by a thread while the current one trains.
        steps = (st.epoch, st.step_in_epoch, max(epoch_steps, st.step_in_epoch))
        batches = self.cluster.epoch_batches(windows, *steps) if self.cluster else windows.epoch_batches(*steps)
        try:
            for x, y in batches:
                self._train_batch(x, y, windows)
                now = self._elapsed()
                self.progress.update(epoch=st.epoch, step=st.step_in_epoch, steps=epoch_steps,
                                     loss=float(np.mean(st.epoch_losses[-_SHOWN_LOSS_STEPS:])),
                                     tokens_per_second=st.tokens / max(now - st.validation_seconds, 1e-9),
                                     eta_seconds=self._eta(now, windows))
                limit = st.stop_reason(cfg, self._decision_seconds())  # max_time or max_steps: the epoch goes on
                if limit is not None:
                    return limit
                if cfg.checkpoint_every and st.steps % cfg.checkpoint_every == 0 and st.step_in_epoch < epoch_steps:
                    self._save_checkpoint()
        finally:
            batches.close()  # stops the read-ahead of an epoch left early
        return None

    def _train_batch(self, x, y, windows: TrainWindows) -> None:
        """One optimizer step on batch (x, y), counted in the loop state."""
        cfg, st = self.config, self.state
        if cfg.schedule != "constant":
            self.optimizer.learning_rate = scheduled_rate(cfg, self._progress(self._decision_seconds(), windows))
        if self._replicated is None:
            loss = float(self._train_step(x, y))
        else:
            loss, self._chief_seconds = self._replicated(x, y, self._elapsed())
        if not math.isfinite(loss):
            raise TrainingError(
                f"training loss became {loss} at step {st.steps + 1}; nothing non-finite was saved and "
                f"the last checkpoint is kept. Try a lower --learning-rate or --clipnorm. "
                f"Received: learning_rate={cfg.learning_rate}")
        st.steps += 1
        st.step_in_epoch += 1
        st.tokens += cfg.batch_size * cfg.seq_length
        st.epoch_losses.append(loss)
        st.curve_losses.append(loss)
        if len(st.curve_losses) >= st.curve_every:
            self._add_curve_point()

    def _add_curve_point(self) -> None:
        """Turn the losses since the last point into a point of the curve, and thin a curve grown too long."""
        st = self.state
        point = {"step": st.steps, "seconds": round(self._elapsed(), 2), "loss": float(np.mean(st.curve_losses))}
        st.curve.append(point)
        st.curve_losses = []
        if len(st.curve) >= 2 * CURVE_POINTS:  # each pair of neighbours, equal in steps, becomes one point
            st.curve = [{"step": b["step"], "seconds": b["seconds"], "loss": (a["loss"] + b["loss"]) / 2}
                        for a, b in zip(st.curve[::2], st.curve[1::2])]
            st.curve_every *= 2
        if self.watch is not None:
            began = time.monotonic()
            self.watch.curve_point(point)
            st.validation_seconds += time.monotonic() - began

    def _validate(self, val_ids, epoch_fraction: float) -> None:
        """Measure the validation loss, record it, and keep the weights if they are the best so far."""
        st = self.state
        began = time.monotonic()
        result = self.evaluator.evaluate(val_ids)
        if self.cluster is not None:  # every worker takes the chief's numbers, so best and patience agree
            result.loss, result.bits_per_char = self.cluster.agree([result.loss, result.bits_per_char])
        st.validation_seconds += time.monotonic() - began
        record = {"epoch": st.epoch, "epoch_fraction": round(epoch_fraction, 4), "step": st.steps,
                  "train_loss": float(np.mean(st.epoch_losses)) if st.epoch_losses else None,
                  "val_loss": result.loss, "val_bits_per_char": result.bits_per_char,
                  "learning_rate": float(self.optimizer.learning_rate.numpy()),  # .numpy(): also a MirroredVariable
                  "seconds": round(self._elapsed(), 2)}
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

    def _save_checkpoint(self) -> None:
        if self.checkpoint is not None:
            self.state.seconds = self._elapsed()
            self.checkpoint(self)

    def _elapsed(self) -> float:
        """Wall seconds this run has spent, over all its sessions."""
        return self._seconds_before + time.monotonic() - self._session_start

    def _decision_seconds(self) -> float:
        """The time that time-based decisions (max_time, the schedule) use: in a cluster, the chief's as
        of the last step, so that every worker decides alike."""
        return self._elapsed() if self.cluster is None else self._chief_seconds

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
