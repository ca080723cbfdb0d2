"""The training loop: compiled steps, validation, stopping rules, best weights.

A custom loop rather than ``model.fit``: it addresses batches by
(epoch, step), which an exact resume needs, it keeps the best weights
in memory without writing a checkpoint per epoch, and it stops on a time
budget in the middle of an epoch.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from textgen.backend import keras, tf
from textgen.config import ModelConfig, TrainConfig
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

    def evaluate(self, ids: np.ndarray) -> Evaluation:
        """Loss over every next-token prediction in ``ids``."""
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


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam with the gradient's global norm clipped, as LSTMs need."""
    return keras.optimizers.Adam(learning_rate=config.learning_rate, global_clipnorm=config.clipnorm)


class Trainer:
    """Runs the training loop over ``TrainWindows`` and measures on validation ids."""

    def __init__(self, model: keras.Model, model_config: ModelConfig, config: TrainConfig,
                 token_lengths: np.ndarray, progress: Progress | None = None):
        self.model = model
        self.model_config = model_config
        self.config = config
        self.progress = progress or Progress(stream=None)
        self.optimizer = make_optimizer(config)
        self.evaluator = Evaluator(model, token_lengths, config.seq_length, config.batch_size)
        # XLA fuses the LSTM's per-step ops, which Keras leaves uncompiled on CPU.
        self._train_step = tf.function(self._step, jit_compile=True)

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

    def fit(self, windows: TrainWindows, val_ids: np.ndarray) -> TrainResult:
        """Train until a stopping rule fires; leave the best weights in the model.

        Stops on ``epochs``, ``max_steps``, ``max_time``, ``patience`` epochs
        without a better validation loss, or Ctrl-C (``stop_reason`` says
        which). A non-finite loss raises ``TrainingError``.
        """
        cfg = self.config
        history: list[dict] = []
        best: dict | None = None
        best_weights = None
        epochs_without_gain = 0
        steps = tokens = 0
        tokens_per_step = cfg.batch_size * cfg.seq_length
        start = time.monotonic()
        stop_reason = "epochs"
        window_loss = []

        validation_seconds = 0.0

        def validate(epoch: int, fraction: float) -> None:
            nonlocal best, best_weights, epochs_without_gain, validation_seconds
            began = time.monotonic()
            result = self.evaluator.evaluate(val_ids)
            validation_seconds += time.monotonic() - began
            record = {"epoch": epoch, "epoch_fraction": round(fraction, 4), "step": steps,
                      "train_loss": float(np.mean(window_loss)) if window_loss else None,
                      "val_loss": result.loss, "val_bits_per_char": result.bits_per_char,
                      "seconds": round(time.monotonic() - start, 2)}
            history.append(record)
            improved = best is None or result.loss < best["val_loss"]
            self.progress.message(
                f"epoch {epoch} step {steps}: val loss {result.loss:.4f} nats/token, "
                f"{result.bits_per_char:.4f} bits/char" + (" (best)" if improved else ""))
            if improved:
                best, best_weights = dict(record), self._snapshot()
                epochs_without_gain = 0
            else:
                epochs_without_gain += 1

        try:
            for epoch in range(1, cfg.epochs + 1):
                epoch_steps = windows.steps_in_epoch(epoch)
                if cfg.max_steps is not None:
                    epoch_steps = min(epoch_steps, cfg.max_steps - steps)
                window_loss = []
                reason = None
                for step in range(epoch_steps):
                    x, y = windows.batch(epoch, step)
                    loss = float(self._train_step(x, y))
                    if not math.isfinite(loss):
                        raise TrainingError(
                            f"training loss became {loss} at step {steps + 1}; try a lower --learning-rate "
                            f"or a lower --clipnorm. Received: learning_rate={cfg.learning_rate}")
                    steps += 1
                    tokens += tokens_per_step
                    window_loss.append(loss)
                    elapsed = time.monotonic() - start
                    rate = tokens / max(elapsed - validation_seconds, 1e-9)
                    self.progress.update(epoch=epoch, step=step + 1, steps=epoch_steps,
                                         loss=float(np.mean(window_loss[-50:])), tokens_per_second=rate,
                                         eta_seconds=self._eta(elapsed, steps, epoch, step + 1, epoch_steps, windows))
                    if cfg.max_time is not None and elapsed >= cfg.max_time:
                        reason = "max_time"
                        break
                    if cfg.max_steps is not None and steps >= cfg.max_steps:
                        reason = "max_steps"
                        break
                completed = (step + 1) / max(windows.steps_in_epoch(epoch), 1) if epoch_steps else 0.0
                validate(epoch, completed)
                if reason:
                    stop_reason = reason
                    break
                if cfg.patience is not None and epochs_without_gain >= cfg.patience:
                    stop_reason = "patience"
                    break
        except KeyboardInterrupt:
            stop_reason = "interrupted"

        seconds = time.monotonic() - start
        if best_weights is not None:
            self._restore(best_weights)
        return TrainResult(history, best, steps, tokens, seconds, stop_reason, validation_seconds)

    def _eta(self, elapsed, steps, epoch, step, epoch_steps, windows) -> float | None:
        """Seconds left until the first limit that will stop training."""
        if steps == 0:
            return None
        per_step = elapsed / steps
        cfg = self.config
        remaining = (epoch_steps - step) + (cfg.epochs - epoch) * windows.steps_in_epoch(epoch)
        if cfg.max_steps is not None:
            remaining = min(remaining, cfg.max_steps - steps)
        eta = remaining * per_step
        if cfg.max_time is not None:
            eta = min(eta, cfg.max_time - elapsed)
        return max(eta, 0.0)
