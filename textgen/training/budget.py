"""The ``budget`` preset's model and recipe, chosen from the time limit and the vocabulary.

The choices come from the scaling study (``docs/scaling.md``; its runs are
``benchmarks/scaling.py``): on the 2-core reference CPU, for each time budget,
a model and recipe that reached a validation loss no worse than textgen's
defaults on every corpus of the study. ``choose`` turns that table into a rule
for any corpus: a larger vocabulary makes every step dearer (the output layer
has a column per token), so a time limit buys what a shorter one buys with
characters; the budget is scaled by the cost of a token with the study's
vocabularies over its cost with this one before it is looked up.

Only a fresh run from scratch has its model chosen (a fine-tuned or resumed
run keeps its own), and a setting the caller gave always wins over the choice.
"""

from __future__ import annotations

import dataclasses

from textgen.config import TrainConfig
from textgen.model.settings import ModelConfig

# The largest vocabulary of the study's corpora (66 to 223 characters), rounded up: costs are relative to it.
STUDY_VOCAB = 256


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A model and how to train it: the settings ``CHOOSABLE`` names."""

    layers: int
    units: int
    embedding_dim: int
    batch_size: int
    learning_rate: float
    schedule: str

    def token_cost(self, vocab_size: int) -> int:
        """Multiply-adds of one token's forward step: each layer's gates and the output layer."""
        inputs = [self.embedding_dim] + [self.units] * (self.layers - 1)
        return sum(4 * self.units * (size + self.units) for size in inputs) + self.units * vocab_size

    def describe(self) -> str:
        return (f"{self.layers}x{self.units} LSTM, embedding {self.embedding_dim}, batch {self.batch_size}, "
                f"learning rate {self.learning_rate:g}, {self.schedule} schedule")


# The settings the preset may choose, a recipe's fields; those the caller gave are kept.
CHOOSABLE = tuple(field.name for field in dataclasses.fields(Recipe))


# (shortest budget in seconds, recipe, the study's evidence): from that budget up, on the reference CPU.
BUDGET_LADDER = (
    (0, Recipe(layers=2, units=256, embedding_dim=64, batch_size=32, learning_rate=0.004, schedule="constant"),
     "textgen's defaults, which no candidate beat on all three corpora at 2 and 5 minutes"),
    (900, Recipe(layers=2, units=384, embedding_dim=96, batch_size=32, learning_rate=0.003, schedule="cosine"),
     "ahead of the defaults by 0.020-0.045 on all three corpora at 15 minutes, "
     "and at 60 by 0.069 on python and 0.030 on kjv"),
)


@dataclasses.dataclass(frozen=True)
class Choice:
    """The recipe the preset chose, and why, in a few words."""

    recipe: Recipe
    why: str


def choose(max_time: float, vocab_size: int) -> Choice:
    """The recipe for a run of ``max_time`` seconds with a vocabulary of ``vocab_size``."""
    _, recipe, evidence = BUDGET_LADDER[0]
    for shortest, candidate, why in BUDGET_LADDER:
        if max_time * _vocab_scale(candidate, vocab_size) >= shortest:
            recipe, evidence = candidate, why
    reasons = [f"for {max_time / 60:g} minutes: {evidence}"]
    scale = _vocab_scale(recipe, vocab_size)
    if scale < 0.95:
        reasons.append(f"a vocabulary of {vocab_size:,} makes each token {1 / scale:.1f}x dearer")
    return Choice(recipe, "; ".join(reasons))


def _vocab_scale(recipe: Recipe, vocab_size: int) -> float:
    """A token's cost with the study's vocabularies over its cost with ``vocab_size`` (1 or less)."""
    return recipe.token_cost(STUDY_VOCAB) / recipe.token_cost(max(vocab_size, STUDY_VOCAB))


def apply(choice: Choice, model: ModelConfig, training: TrainConfig, left_open) -> tuple[ModelConfig, TrainConfig,
                                                                                         str]:
    """``model`` and ``training`` with the choice in place of the settings ``left_open``, and the line that says so.

    The line is recorded in the training settings (``TrainConfig.recipe``).
    """
    chosen = {name: getattr(choice.recipe, name) for name in CHOOSABLE if name in left_open}
    model = dataclasses.replace(model, **{name: value for name, value in chosen.items() if hasattr(model, name)})
    training = dataclasses.replace(training, **{name: value for name, value in chosen.items()
                                                if hasattr(training, name)})
    final = Recipe(**{name: getattr(model if hasattr(model, name) else training, name) for name in CHOOSABLE})
    given = [f"--{name.replace('_', '-')}" for name in CHOOSABLE if name not in left_open]
    kept = f"; kept as given: {' '.join(given)}" if given else ""
    line = f"budget preset: {final.describe()} ({choice.why}{kept})"
    return model, dataclasses.replace(training, recipe=line), line
