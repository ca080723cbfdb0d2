"""The ``budget`` preset's model and recipe, chosen from the time limit, the corpus's size and its vocabulary.

The choices come from the scaling study (``docs/scaling.md``; its runs are
``benchmarks/scaling.py``): on the 2-core reference CPU, for each time budget,
the model and recipe that reached the lowest validation loss. ``choose`` turns
that table into a rule for any corpus and vocabulary:

* a larger vocabulary makes every step dearer (the output layer has a column
  per token), so a time limit buys what a shorter one buys with characters:
  the budget is scaled by the cost of a token with characters over its cost
  with this vocabulary before it is looked up;
* a small corpus is seen many times in a long run, so dropout is added when
  the run would read its training text more than ``DROPOUT_FROM_EPOCHS`` times.

Only a fresh run from scratch has its model chosen (a fine-tuned or resumed
run keeps its own), and a setting the caller gave always wins over the choice.
"""

from __future__ import annotations

import dataclasses

from textgen.config import TrainConfig
from textgen.model.settings import ModelConfig

# The settings the preset may choose; those the caller gave are kept.
CHOOSABLE = ("layers", "units", "embedding_dim", "dropout", "batch_size", "learning_rate")

# A vocabulary the study's char-level corpora have (66 to 100 characters): the costs are relative to it.
STUDY_VOCAB = 100


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A model and how to train it: the settings ``CHOOSABLE`` names."""

    layers: int
    units: int
    embedding_dim: int
    batch_size: int
    learning_rate: float
    dropout: float = 0.0

    def token_cost(self, vocab_size: int) -> int:
        """Multiply-adds of one token's forward step: each layer's gates and the output layer."""
        inputs = [self.embedding_dim] + [self.units] * (self.layers - 1)
        return sum(4 * self.units * (size + self.units) for size in inputs) + self.units * vocab_size

    def describe(self) -> str:
        shape = f"{self.layers}x{self.units} LSTM, embedding {self.embedding_dim}"
        dropout = f", dropout {self.dropout:g}" if self.dropout else ""
        return f"{shape}{dropout}, batch {self.batch_size}, learning rate {self.learning_rate:g}"


# (shortest budget in seconds, recipe): the study's best model from that budget up, on the reference CPU.
BUDGET_LADDER = (
    (0, Recipe(layers=2, units=256, embedding_dim=64, batch_size=32, learning_rate=0.004)),
    (240, Recipe(layers=2, units=384, embedding_dim=96, batch_size=64, learning_rate=0.003)),
    (900, Recipe(layers=2, units=512, embedding_dim=128, batch_size=64, learning_rate=0.002)),
)

# Dropout for a run that would read its training text more often than this; how many times is estimated
# from the tokens/s the recipe made in the study.
DROPOUT_FROM_EPOCHS = 10
DROPOUT = 0.2
STUDY_TOKENS_PER_SECOND = {256: 25_000, 384: 14_000, 512: 8_000}


@dataclasses.dataclass(frozen=True)
class Choice:
    """The recipe the preset chose, and why, in a few words."""

    recipe: Recipe
    why: str


def choose(max_time: float, corpus_tokens: int, vocab_size: int) -> Choice:
    """The recipe for a run of ``max_time`` seconds on ``corpus_tokens`` training tokens of ``vocab_size``."""
    recipe = BUDGET_LADDER[0][1]
    for shortest, candidate in BUDGET_LADDER:
        if max_time * _vocab_scale(candidate, vocab_size) >= shortest:
            recipe = candidate
    scale = _vocab_scale(recipe, vocab_size)
    reasons = [f"the scaling study's best for {max_time / 60:g} minutes"]
    if scale < 0.95:
        reasons.append(f"a vocabulary of {vocab_size:,} makes each token {1 / scale:.1f}x dearer")
    passes = max_time * STUDY_TOKENS_PER_SECOND[recipe.units] * scale / max(corpus_tokens, 1)
    if passes > DROPOUT_FROM_EPOCHS:
        recipe = dataclasses.replace(recipe, dropout=DROPOUT)
        reasons.append(f"about {passes:.0f} passes over {corpus_tokens:,} training tokens call for dropout")
    return Choice(recipe, "; ".join(reasons))


def _vocab_scale(recipe: Recipe, vocab_size: int) -> float:
    """A token's cost with the study's vocabulary over its cost with ``vocab_size`` (1 or less)."""
    return recipe.token_cost(STUDY_VOCAB) / recipe.token_cost(max(vocab_size, STUDY_VOCAB))


def apply(choice: Choice, model: ModelConfig, training: TrainConfig, left_open) -> tuple[ModelConfig, TrainConfig,
                                                                                         str]:
    """``model`` and ``training`` with the choice in place of the settings ``left_open``, and the line that says so.

    The line is recorded in the training settings (``TrainConfig.recipe``).
    """
    chosen = {name: getattr(choice.recipe, name) for name in CHOOSABLE if name in left_open}
    model = dataclasses.replace(model, **{name: value for name, value in chosen.items() if hasattr(model, name)})
    training = dataclasses.replace(training, **{name: value for name, value in chosen.items()
                                                if name in ("batch_size", "learning_rate")})
    final = Recipe(layers=model.layers, units=model.units, embedding_dim=model.embedding_dim,
                   batch_size=training.batch_size, learning_rate=training.learning_rate, dropout=model.dropout)
    given = [f"--{name.replace('_', '-')}" for name in CHOOSABLE if name not in left_open]
    kept = f"; kept as given: {' '.join(given)}" if given else ""
    line = f"budget preset: {final.describe()} ({choice.why}{kept})"
    return model, dataclasses.replace(training, recipe=line), line
