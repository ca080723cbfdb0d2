"""Settings for training and sampling, with their defaults, presets and the checks every setting uses.

Defaults live here and nowhere else: the command line, the Python API and the
model directory all build these dataclasses (the model's own shape,
``ModelConfig``, lives beside the cells it is checked against, in
``textgen.model.settings``). ``from_dict`` is strict (unknown keys and wrong
types are refused) because it also reads settings from model directories
that may come from anyone. Plain Python: the command line reads its defaults
without loading TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import secrets
from typing import Any

from textgen.errors import ConfigError

# Learning-rate schedules: constant, or a cosine decay to COSINE_FLOOR x the
# rate, reached at whichever limit (max_steps, max_time, epochs) comes first.
SCHEDULES = ("constant", "cosine")
COSINE_FLOOR = 0.1

# Named recipes: settings a preset puts in place of the defaults; options given
# explicitly still win. "budget" is the recipe for the best model within a fixed
# --max-time (BENCHMARKS.md, quality in 15 minutes): the learning rate decays
# along a cosine to the time limit, and validation scores windows of 256 tokens,
# the context nanoGPT's char-level figures are measured with, so the two compare.
PRESETS = {
    "budget": {"schedule": "cosine", "val_seq_length": 256},
}


def apply_preset(preset: str | None, **settings):
    """``settings`` with ``preset``'s values in place of those left at None (not given).

    Every setting a preset names must be passed, so that a preset can only fill
    in what the caller left open.
    """
    if preset is None:
        return settings
    if preset not in PRESETS:
        fail(f"preset must be one of {', '.join(PRESETS)}", "preset", preset)
    missing = sorted(set(PRESETS[preset]) - set(settings))
    if missing:
        raise TypeError(f"apply_preset needs every setting the preset names. Received: missing={missing}")
    return {key: PRESETS[preset].get(key) if value is None else value for key, value in settings.items()}


# The largest vocabulary, for the tokenizer as for the model: a bound that keeps a crafted
# settings or tokenizer file from asking for more memory than any reasonable model needs.
MAX_VOCAB = 1_000_000


# Every seed textgen takes (training, sampling, experiments; from the command line or from
# Python) is a whole number from 0 to SEED_MAX, and a seed that was not given is drawn from
# that range. 31 bits fit every consumer of a seed: Keras, NumPy, and TensorFlow's int32 and
# int64 seeds alike.
SEED_MAX = 2**31 - 1


def draw_seed() -> int:
    """A seed drawn at random, for a run whose seed was not given (it is then printed and recorded)."""
    return secrets.randbelow(SEED_MAX + 1)


def fail(message: str, name: str, value: Any) -> None:
    """Raise the ``ConfigError`` for a setting: the message, then ``Received: name=value``."""
    raise ConfigError(f"{message}. Received: {name}={value!r}")


def check_int(name: str, value: Any, low: int, high: int) -> None:
    """Refuse a setting that is not a whole number from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(f"{name} must be an integer", name, value)
    if not low <= value <= high:
        fail(f"{name} must be between {low} and {high}", name, value)


def check_float(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    """Refuse a setting that is not a finite number in [low, high], or (low, high] with ``low_open``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(f"{name} must be a number", name, value)
    if not math.isfinite(value):
        fail(f"{name} must be finite", name, value)
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        fail(f"{name} must be in {bracket}{low}, {high}]", name, value)


def settings_from_dict(cls, data: Any):
    """Build settings dataclass ``cls`` from a plain dict, refusing unknown keys (the dict may come from anyone)."""
    if not isinstance(data, dict):
        fail(f"{cls.__name__} settings must be a JSON object", "settings", type(data).__name__)
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        fail(f"unknown {cls.__name__} setting", "key", unknown[0])
    return cls(**data)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a model is trained. ``None`` for a limit means "no limit"."""

    seq_length: int = 100
    # Tokens per validation window (None: seq_length). Each window is scored from an
    # empty state, so its first tokens see little context: longer windows measure
    # the model with more of it.
    val_seq_length: int | None = None
    batch_size: int = 32
    epochs: int = 20
    max_steps: int | None = None
    max_time: float | None = None  # seconds
    patience: int | None = 3
    learning_rate: float = 4e-3
    schedule: str = "constant"  # or "cosine": decay to 10% of learning_rate by the first limit
    clipnorm: float = 5.0
    val_fraction: float = 0.1
    seed: int = 0
    checkpoint_every: int | None = 500  # steps; checkpoints are also written at every epoch end

    def __post_init__(self):
        check_int("seq_length", self.seq_length, 1, 100_000)
        if self.val_seq_length is not None:
            check_int("val_seq_length", self.val_seq_length, 1, 100_000)
        check_int("batch_size", self.batch_size, 1, 65_536)
        check_int("epochs", self.epochs, 1, 1_000_000)
        if self.max_steps is not None:
            check_int("max_steps", self.max_steps, 1, 10**12)
        if self.max_time is not None:
            check_float("max_time", self.max_time, 0.0, 10**9, low_open=True)
        if self.patience is not None:
            check_int("patience", self.patience, 1, 1_000_000)
        check_float("learning_rate", self.learning_rate, 0.0, 10.0, low_open=True)
        if self.schedule not in SCHEDULES:
            fail(f"schedule must be one of {', '.join(SCHEDULES)}", "schedule", self.schedule)
        check_float("clipnorm", self.clipnorm, 0.0, 1e6, low_open=True)
        check_float("val_fraction", self.val_fraction, 0.0, 0.5, low_open=True)
        check_int("seed", self.seed, 0, SEED_MAX)
        if self.checkpoint_every is not None:
            check_int("checkpoint_every", self.checkpoint_every, 1, 10**12)

    @property
    def validation_window(self) -> int:
        """Tokens per validation window."""
        return self.val_seq_length or self.seq_length

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "TrainConfig":
        return settings_from_dict(cls, data)


# Generation length is bounded so a typo (or a crafted request) cannot ask for
# hours of work or gigabytes of output.
MAX_LENGTH = 1_000_000
MAX_SAMPLES = 4096
# What one request may ask for in all, counted in tokens: rows (prompts x num_samples) x
# (longest prompt + length). It bounds every array a request allocates, (B, W) for the
# prompts and (B, T) for the new ids and their log-probabilities, before any is made.
MAX_REQUEST_TOKENS = 10_000_000


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """How text is sampled. temperature 0 is greedy; top_k 0 and top_p 1 are off."""

    length: int = 400
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    num_samples: int = 1
    seed: int | None = None

    def __post_init__(self):
        check_int("length", self.length, 1, MAX_LENGTH)
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)):
            fail("temperature must be a number", "temperature", self.temperature)
        if math.isnan(self.temperature) or math.isinf(self.temperature) or self.temperature < 0:
            fail("temperature must be a finite number >= 0 (0 means greedy)", "temperature", self.temperature)
        check_int("top_k", self.top_k, 0, MAX_VOCAB)
        check_float("top_p", self.top_p, 0.0, 1.0, low_open=True)
        check_int("num_samples", self.num_samples, 1, MAX_SAMPLES)
        if self.seed is not None:
            check_int("seed", self.seed, 0, SEED_MAX)
