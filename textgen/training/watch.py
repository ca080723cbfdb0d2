"""Watching a run while it trains: samples, TensorBoard events and the caller's callbacks, at each validation.

``Watch`` is what the training loop tells about its progress: every point
of the training-loss curve and every validation. Nothing it does changes
what the run computes: samples come from ``TextModel.generate`` (the one
generation loop), whose randomness is stateless and seeded apart from
training's, and read the weights without writing any; so a watched run's
weights are bitwise those of the same run unwatched.
"""

from __future__ import annotations

from typing import Callable, Sequence

from textgen.config import WatchConfig
from textgen.errors import ConfigError
from textgen.training import tensorboard

# The keys of the metrics dict a callback receives at each validation.
METRIC_KEYS = ("step", "epoch", "train_loss", "val_loss", "val_bits_per_char", "learning_rate",
               "tokens_per_second", "seconds")


def check_callbacks(callbacks) -> tuple[Callable, ...]:
    """``callbacks`` as a tuple of callables (None: none), refused before any work if one is not callable."""
    if callbacks is None:
        return ()
    if callable(callbacks) or isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Sequence):
        raise ConfigError(f"callbacks must be a list of callables. Received: callbacks={callbacks!r}")
    for callback in callbacks:
        if not callable(callback):
            raise ConfigError(f"callbacks must be a list of callables. Received: callback={callback!r}")
    return tuple(callbacks)


class Watch:
    """Samples, TensorBoard events and callbacks for one run; the loop calls ``curve_point`` and ``validated``.

    ``text_model`` is a ``TextModel`` over the very model being trained;
    samples are drawn from it with ``seed`` and printed with ``message``
    (a line writer to stderr). ``first_step`` is the step the run starts
    from (a resumed run's checkpoint), where TensorBoard's events continue.
    """

    def __init__(self, config: WatchConfig, callbacks: Sequence[Callable] = (), *, text_model=None, seed: int = 0,
                 message: Callable[[str], None] = lambda line: None, first_step: int = 0):
        self.config = config
        self.callbacks = tuple(callbacks)
        self.text_model = text_model
        self.seed = seed
        self.message = message
        self.validations = 0  # validations seen in this session
        self.events = tensorboard.EventWriter(config.tensorboard, first_step + 1) if config.tensorboard else None

    def curve_point(self, point: dict) -> None:
        """A new point of the training-loss curve: {"step", "seconds", "loss"}."""
        if self.events is not None:
            self.events.scalars(point["step"], {tensorboard.TRAIN_LOSS: point["loss"]})

    def validated(self, metrics: dict) -> bool:
        """Show a validation's ``metrics`` (``METRIC_KEYS``); False if a callback asks the run to stop.

        Every callback is called, in order, even after one asked to stop. A
        callback's exception propagates, with a note of the step it was
        raised at.
        """
        self.validations += 1
        if self.events is not None:
            self.events.scalars(metrics["step"], {tensorboard.VAL_LOSS: metrics["val_loss"],
                                                  tensorboard.LEARNING_RATE: metrics["learning_rate"],
                                                  tensorboard.TOKENS_PER_SECOND: metrics["tokens_per_second"]})
        if self.config.samples and self.validations % self.config.sample_every == 0:
            self._samples(metrics["step"])
        go_on = True
        for callback in self.callbacks:
            try:
                answer = callback(dict(metrics))
            except Exception as exc:
                exc.add_note(f"textgen: raised by the training callback {callback!r} at step {metrics['step']}; "
                             f"the run's checkpoint is kept, and resuming the run continues from it")
                raise
            go_on = go_on and answer is not False
        return go_on

    def _samples(self, step: int) -> None:
        for temperature in self.config.sample_temperatures:
            text = self.text_model.generate("", length=self.config.sample_length, temperature=temperature,
                                            seed=self.seed, include_prompt=False)
            self.message(f"sample at step {step}, temperature {temperature:g}:")
            for line in text.strip("\n").splitlines():  # indented under its heading; blank lines left blank
                self.message(f"  {line}" if line.strip() else "")

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
