"""Settings for the model, training and sampling, with their defaults and checks.

Defaults live here and nowhere else: the command line, the Python API and the
model directory all build these dataclasses. ``from_dict`` is strict (unknown
keys and wrong types are refused) because it also reads settings from model
directories that may come from anyone.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from textgen.errors import ConfigError

TOKENIZER_LEVELS = ("char", "word", "bpe")
# The tokenizer learns from at most this many bytes of the corpus (a larger corpus
# is sampled evenly): 100 MB shows it every frequent character, word and merge,
# while its training time and memory stay bounded whatever the corpus size.
TOKENIZER_SAMPLE_BYTES = 100_000_000

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
        _fail(f"preset must be one of {', '.join(PRESETS)}", "preset", preset)
    missing = sorted(set(PRESETS[preset]) - set(settings))
    if missing:
        raise TypeError(f"apply_preset needs every setting the preset names. Received: missing={missing}")
    return {key: PRESETS[preset].get(key) if value is None else value for key, value in settings.items()}


# The recurrent cells a model can stack (their maths is in ``textgen.cells``).
CELL_TYPES = ("lstm", "peephole", "cifg", "gru", "rnn")


def cell_parameter_count(cell: str, input_dim: int, units: int) -> int:
    """Weights of one recurrent layer, from its shape alone (``textgen.cells`` has the same shapes)."""
    blocks = {"lstm": 4, "peephole": 4, "cifg": 3, "gru": 3, "rnn": 1}[cell]
    total = blocks * units * (input_dim + units + 1)
    if cell == "peephole":
        total += 3 * units  # diagonal peephole weights for the i, f and o gates
    if cell == "gru":
        total += 3 * units  # a second bias row, added to the recurrent part
    return total

# Bounds that keep a settings file from asking for more memory than any
# reasonable model needs (a crafted file could otherwise exhaust RAM on load).
MAX_VOCAB = 1_000_000
MAX_UNITS = 8192
MAX_LAYERS = 32
MAX_EMBEDDING = 8192
MAX_PARAMETERS = 500_000_000


def _fail(message: str, name: str, value: Any) -> None:
    raise ConfigError(f"{message}. Received: {name}={value!r}")


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"{name} must be an integer", name, value)
    if not low <= value <= high:
        _fail(f"{name} must be between {low} and {high}", name, value)


def _check_float(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(f"{name} must be a number", name, value)
    if not math.isfinite(value):
        _fail(f"{name} must be finite", name, value)
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        _fail(f"{name} must be in {bracket}{low}, {high}]", name, value)


def check_tokenizer_sample_bytes(value: Any) -> None:
    """Refuse a tokenizer sample size that is not a positive whole number of bytes."""
    _check_int("tokenizer_sample_bytes", value, 1, 2**62)


def _from_dict(cls, data: Any):
    """Build dataclass ``cls`` from a plain dict, refusing unknown keys."""
    if not isinstance(data, dict):
        _fail(f"{cls.__name__} settings must be a JSON object", "settings", type(data).__name__)
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        _fail(f"unknown {cls.__name__} setting", "key", unknown[0])
    return cls(**data)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape of the stacked recurrent language model: embedding -> cell x layers -> logits."""

    vocab_size: int
    layers: int = 2
    units: int = 256
    embedding_dim: int = 64
    dropout: float = 0.0
    cell: str = "lstm"

    def __post_init__(self):
        if self.cell not in CELL_TYPES:
            _fail(f"cell must be one of {', '.join(CELL_TYPES)}", "cell", self.cell)
        _check_int("vocab_size", self.vocab_size, 2, MAX_VOCAB)
        _check_int("layers", self.layers, 1, MAX_LAYERS)
        _check_int("units", self.units, 1, MAX_UNITS)
        _check_int("embedding_dim", self.embedding_dim, 1, MAX_EMBEDDING)
        _check_float("dropout", self.dropout, 0.0, 0.9)
        if self.parameter_count() > MAX_PARAMETERS:
            _fail(f"model would have more than {MAX_PARAMETERS:,} parameters", "parameters", self.parameter_count())

    def parameter_count(self) -> int:
        """Number of weights, computed from the settings alone (before building)."""
        total = self.vocab_size * self.embedding_dim
        inputs = self.embedding_dim
        for _ in range(self.layers):
            total += cell_parameter_count(self.cell, inputs, self.units)
            inputs = self.units
        return total + self.units * self.vocab_size + self.vocab_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "ModelConfig":
        return _from_dict(cls, data)


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
        _check_int("seq_length", self.seq_length, 1, 100_000)
        if self.val_seq_length is not None:
            _check_int("val_seq_length", self.val_seq_length, 1, 100_000)
        _check_int("batch_size", self.batch_size, 1, 65_536)
        _check_int("epochs", self.epochs, 1, 1_000_000)
        if self.max_steps is not None:
            _check_int("max_steps", self.max_steps, 1, 10**12)
        if self.max_time is not None:
            _check_float("max_time", self.max_time, 0.0, 10**9, low_open=True)
        if self.patience is not None:
            _check_int("patience", self.patience, 1, 1_000_000)
        _check_float("learning_rate", self.learning_rate, 0.0, 10.0, low_open=True)
        if self.schedule not in SCHEDULES:
            _fail(f"schedule must be one of {', '.join(SCHEDULES)}", "schedule", self.schedule)
        _check_float("clipnorm", self.clipnorm, 0.0, 1e6, low_open=True)
        _check_float("val_fraction", self.val_fraction, 0.0, 0.5, low_open=True)
        _check_int("seed", self.seed, 0, 2**31 - 1)
        if self.checkpoint_every is not None:
            _check_int("checkpoint_every", self.checkpoint_every, 1, 10**12)

    @property
    def validation_window(self) -> int:
        """Tokens per validation window."""
        return self.val_seq_length or self.seq_length

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "TrainConfig":
        return _from_dict(cls, data)


# Generation length is bounded so a typo (or a crafted request) cannot ask for
# hours of work or gigabytes of output.
MAX_LENGTH = 1_000_000
MAX_SAMPLES = 4096


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
        _check_int("length", self.length, 1, MAX_LENGTH)
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)):
            _fail("temperature must be a number", "temperature", self.temperature)
        if math.isnan(self.temperature) or math.isinf(self.temperature) or self.temperature < 0:
            _fail("temperature must be a finite number >= 0 (0 means greedy)", "temperature", self.temperature)
        _check_int("top_k", self.top_k, 0, MAX_VOCAB)
        _check_float("top_p", self.top_p, 0.0, 1.0, low_open=True)
        _check_int("num_samples", self.num_samples, 1, MAX_SAMPLES)
        if self.seed is not None:
            _check_int("seed", self.seed, 0, 2**63 - 1)
