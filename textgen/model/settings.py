"""The model's settings: ``ModelConfig``, the shape of the stacked recurrent language model.

A model is embedding -> cell x layers -> logits. Its settings are checked
against the cell they name (``textgen.model.cells``), which owns its weight
shapes, so the parameter count here is the cells' own. Plain Python, like the
cells: the command line reads these defaults without loading TensorFlow.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from textgen.config import MAX_VOCAB, check_float, check_int, fail, settings_from_dict
from textgen.errors import ConfigError
from textgen.model.cells import CELL_TYPES, get_cell

# Bounds that keep a settings file from asking for more memory than any
# reasonable model needs (a crafted file could otherwise exhaust RAM on load).
MAX_UNITS = 8192
MAX_LAYERS = 32
MAX_EMBEDDING = 8192
MAX_PARAMETERS = 500_000_000


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape of the stacked recurrent language model: embedding -> cell x layers -> logits.

    ``vocab_size`` None means "the size of the tokenizer still to be learned":
    a training run fills it in with ``with_vocab``; a model directory always has it.
    """

    vocab_size: int | None = None
    layers: int = 2
    units: int = 256
    embedding_dim: int = 64
    dropout: float = 0.0
    cell: str = "lstm"

    def __post_init__(self):
        if self.cell not in CELL_TYPES:
            fail(f"cell must be one of {', '.join(CELL_TYPES)}", "cell", self.cell)
        if self.vocab_size is not None:
            check_int("vocab_size", self.vocab_size, 2, MAX_VOCAB)
        check_int("layers", self.layers, 1, MAX_LAYERS)
        check_int("units", self.units, 1, MAX_UNITS)
        check_int("embedding_dim", self.embedding_dim, 1, MAX_EMBEDDING)
        check_float("dropout", self.dropout, 0.0, 0.9)
        if self.vocab_size is not None and self.parameter_count() > MAX_PARAMETERS:
            fail(f"model would have more than {MAX_PARAMETERS:,} parameters with a vocabulary of {self.vocab_size:,} "
                 f"tokens", "parameters", self.parameter_count())

    def with_vocab(self, vocab_size: int) -> "ModelConfig":
        """These settings for a tokenizer of ``vocab_size`` tokens (checked again, the parameter count too)."""
        return dataclasses.replace(self, vocab_size=vocab_size)

    def parameter_count(self) -> int:
        """Number of weights, computed from the settings alone (before building)."""
        if self.vocab_size is None:
            raise ConfigError("the parameter count needs the vocabulary size. Received: vocab_size=None")
        cell = get_cell(self.cell)
        total = self.vocab_size * self.embedding_dim
        inputs = self.embedding_dim
        for _ in range(self.layers):
            total += cell.parameter_count(inputs, self.units)
            inputs = self.units
        return total + self.units * self.vocab_size + self.vocab_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "ModelConfig":
        config = settings_from_dict(cls, data)
        if config.vocab_size is None:
            fail("a stored model needs its vocab_size", "vocab_size", None)
        return config
