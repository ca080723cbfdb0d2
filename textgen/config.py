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
import os
import re
import secrets
from typing import Any

from textgen.errors import ConfigError

# Learning-rate schedules: constant, or a cosine decay to COSINE_FLOOR x the
# rate, reached at whichever limit (max_steps, max_time, epochs) comes first.
SCHEDULES = ("constant", "cosine")
COSINE_FLOOR = 0.1

# Named recipes: settings a preset puts in place of the defaults; options given
# explicitly still win. "budget" is the recipe for the best model within a fixed
# --max-time: the model, batch, learning rate and schedule come from the scaling
# study (textgen.training.budget, which chooses them once the vocabulary is known),
# and validation scores windows of 256 tokens, the context nanoGPT's char-level
# figures are measured with, so the two compare.
PRESETS = {
    "budget": {"val_seq_length": 256},
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


# The spellings of a duration and of a byte size, the same in the Python API and on the command line.
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([smh]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}
_BYTE_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(?:([kmgt])(i?))?b?\s*$", re.IGNORECASE)


def parse_duration(value: Any, name: str) -> float:
    """Seconds from a number of seconds or a string such as ``"90"``, ``"90s"``, ``"15m"``, ``"2h"``.

    The one reading of a duration: ``textgen.train`` and the command line's
    option type both call it. Refuses anything that is not a positive, finite span.
    """
    seconds = math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not (math.isfinite(seconds) and seconds > 0):
        fail(f"{name} must be a positive duration such as 90s, 15m or 2h", name, value)
    return seconds


def parse_size(value: Any, name: str) -> int:
    """Bytes from a whole number or a string such as ``"500000"``, ``"100k"``, ``"100M"``, ``"2G"`` (powers of
    1000) or ``"64MiB"`` (powers of 1024).

    The one reading of a byte size: ``textgen.train`` and the command line's
    option type both call it. Refuses anything below one byte.
    """
    size = 0
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        size = int(value)
    elif isinstance(value, str) and (match := _BYTE_SIZE.match(value)):
        unit, binary = (match.group(2) or "").lower(), bool(match.group(3))
        size = int(float(match.group(1)) * (1024 if binary else 1000) ** " kmgt".index(unit or " "))
    if size < 1:
        fail(f"{name} must be a positive size such as 500000, 100M or 2G", name, value)
    return size


def settings_from_dict(cls, data: Any):
    """Build settings dataclass ``cls`` from a plain dict, refusing unknown keys (the dict may come from anyone)."""
    if not isinstance(data, dict):
        fail(f"{cls.__name__} settings must be a JSON object", "settings", type(data).__name__)
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        fail(f"unknown {cls.__name__} setting", "key", unknown[0])
    return cls(**data)


_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# Adam's learning rate when none is given: for a model trained from scratch, and for fine-tuning a trained
# one (chosen by the runs in BENCHMARKS.md, "Fine-tuning").
LEARNING_RATE = 4e-3
FINE_TUNE_LEARNING_RATE = 3e-3


def default_learning_rate(fine_tuning: bool) -> float:
    """The learning rate a run takes when none is given: ``FINE_TUNE_LEARNING_RATE`` when it fine-tunes."""
    return FINE_TUNE_LEARNING_RATE if fine_tuning else LEARNING_RATE


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
    # Epochs in a row without a better validation loss that stop the run; 0 never stops it early. The one
    # spelling of "never", in Python and on the command line alike.
    patience: int = 3
    learning_rate: float = LEARNING_RATE
    schedule: str = "constant"  # or "cosine": decay to 10% of learning_rate by the first limit
    clipnorm: float = 5.0
    val_fraction: float = 0.1
    seed: int = 0
    checkpoint_every: int | None = 500  # steps; checkpoints are also written at every epoch end
    # The model a fine-tuning run started from: {"model": a shipped model's name or a directory's absolute
    # path, "manifest_sha256": the sha256 of its manifest.json, which pins every file of it}. None: from scratch.
    init_from: dict | None = None
    # How a preset chose the model and recipe (``textgen.training.budget``): its one line. None: no choice made.
    recipe: str | None = None

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
        check_int("patience", self.patience, 0, 1_000_000)
        check_float("learning_rate", self.learning_rate, 0.0, 10.0, low_open=True)
        if self.schedule not in SCHEDULES:
            fail(f"schedule must be one of {', '.join(SCHEDULES)}", "schedule", self.schedule)
        check_float("clipnorm", self.clipnorm, 0.0, 1e6, low_open=True)
        check_float("val_fraction", self.val_fraction, 0.0, 0.5, low_open=True)
        check_int("seed", self.seed, 0, SEED_MAX)
        if self.checkpoint_every is not None:
            check_int("checkpoint_every", self.checkpoint_every, 1, 10**12)
        if self.recipe is not None and not isinstance(self.recipe, str):
            fail("recipe must be a line of text", "recipe", self.recipe)
        if self.init_from is not None:
            model, digest = (self.init_from.get(key) if isinstance(self.init_from, dict) else None
                             for key in ("model", "manifest_sha256"))
            if set(self.init_from or ()) != {"model", "manifest_sha256"} or not isinstance(model, str) or \
                    not isinstance(digest, str) or not _SHA256.match(digest):
                fail("init_from must name a model and the sha256 of its manifest", "init_from", self.init_from)

    @property
    def validation_window(self) -> int:
        """Tokens per validation window."""
        return self.val_seq_length or self.seq_length

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "TrainConfig":
        if isinstance(data, dict) and "patience" in data and data["patience"] is None:
            data = {**data, "patience": 0}  # directories and checkpoints written before 0 meant "never"
        return settings_from_dict(cls, data)


@dataclasses.dataclass(frozen=True)
class Limits:
    """The limits a training run is given now; None where one is not given.

    Totals count the whole run, all its sessions together: ``epochs``,
    ``max_steps`` and ``max_time`` (seconds, a resumed run's stored seconds
    included). Increments count from where a resumed run stands:
    ``more_steps`` and ``more_time`` (seconds); they continue a run, so only
    a resumed run takes them. A total and an increment of the same kind are
    never given together. On a fresh run the limits not given keep their
    defaults; on a resumed one, the run's stored limits.
    """

    epochs: int | None = None
    max_steps: int | None = None
    max_time: float | None = None
    more_steps: int | None = None
    more_time: float | None = None

    def __post_init__(self):
        TrainConfig(**self._given(("epochs", "max_steps", "max_time")))  # the totals are TrainConfig's, checked there
        if self.more_steps is not None:
            check_int("more_steps", self.more_steps, 1, 10**12)
        if self.more_time is not None:
            check_float("more_time", self.more_time, 0.0, 10**9, low_open=True)
        for total, increment in (("max_steps", "more_steps"), ("max_time", "more_time")):
            if getattr(self, total) is not None and getattr(self, increment) is not None:
                fail(f"give {total} (a total for the whole run) or {increment} (an increment), not both",
                     increment, getattr(self, increment))

    def _given(self, names) -> dict:
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    @property
    def increments(self) -> dict:
        """The increments given, by name."""
        return self._given(("more_steps", "more_time"))

    def applied_to(self, config: TrainConfig, *, steps: int = 0, seconds: float = 0.0) -> TrainConfig:
        """``config`` with these limits in place of its own, for a run that has done ``steps`` in ``seconds``.

        The result holds totals only (an increment is added to where the run
        stands), so a run resumed again later, say after a kill, keeps the
        very same limits.
        """
        totals = {"epochs": self.epochs,
                  "max_steps": self.max_steps if self.more_steps is None else steps + self.more_steps,
                  "max_time": self.max_time if self.more_time is None else seconds + self.more_time}
        return dataclasses.replace(config, **{name: value for name, value in totals.items() if value is not None})


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


# The continuous-batching loop of ``textgen serve``: tokens each row gets per call of the loop (rows join
# and leave between calls; a stream's text is sent every this many tokens), and the most rows run at once.
CHUNK_TOKENS = 8
MAX_ROWS = 256


# The text ``textgen cells`` reads, in characters: by default, and at most. A trace holds layers x
# quantities x T x U float32 numbers: for the shipped 2 x 512 LSTMs (6 quantities) 24 KiB a token,
# so 20,000 characters (char-level) hold about 470 MiB.
CELLS_CHARACTERS = 8_000
CELLS_MAX_CHARACTERS = 20_000


# What a watched run prints at a validation: samples of this many tokens, at these temperatures.
SAMPLE_LENGTH = 200
SAMPLE_TEMPERATURES = (0.5, 1.0)


@dataclasses.dataclass(frozen=True)
class WatchConfig:
    """How a training run is watched while it trains; none of it changes what the run computes.

    ``sample_every`` N prints samples of ``sample_length`` tokens at every
    N-th validation, one per temperature of ``sample_temperatures`` (None:
    no samples); ``tensorboard`` is a folder for TensorBoard event files
    (None: none written). Not part of a run's stored settings: a resumed run
    may add or drop any of it.
    """

    sample_every: int | None = None
    sample_temperatures: tuple[float, ...] = SAMPLE_TEMPERATURES
    sample_length: int = SAMPLE_LENGTH
    tensorboard: str | None = None

    def __post_init__(self):
        if self.sample_every is not None:
            check_int("sample_every", self.sample_every, 1, 10**9)
        if isinstance(self.sample_temperatures, (str, bytes)) or \
                not isinstance(self.sample_temperatures, (list, tuple)) or not self.sample_temperatures:
            fail("sample_temperatures must be a non-empty list of numbers", "sample_temperatures",
                 self.sample_temperatures)
        for temperature in self.sample_temperatures:
            if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or \
                    not math.isfinite(temperature) or temperature < 0:
                fail("sample_temperatures must be finite numbers >= 0 (0 means greedy)", "sample_temperatures",
                     self.sample_temperatures)
        object.__setattr__(self, "sample_temperatures", tuple(float(t) for t in self.sample_temperatures))
        check_int("sample_length", self.sample_length, 1, MAX_LENGTH)
        if self.tensorboard is not None:
            if not isinstance(self.tensorboard, (str, os.PathLike)) or not str(self.tensorboard):
                fail("tensorboard must be a folder's path", "tensorboard", self.tensorboard)
            object.__setattr__(self, "tensorboard", str(self.tensorboard))

    @property
    def samples(self) -> bool:
        """Whether this run prints samples."""
        return self.sample_every is not None
