"""The budget preset's choice of model and recipe (``textgen.training.budget``), alone and in a run."""

import json

from click.testing import CliRunner

import textgen
from textgen.cli.main import cli
from textgen.config import TrainConfig
from textgen.model.settings import ModelConfig
from textgen.training import budget

LARGE_CORPUS = 100_000_000  # tokens: no run in the ladder's budgets reads it twice


def test_each_rung_of_the_ladder_is_chosen_from_its_budget_up():
    for index, (shortest, recipe) in enumerate(budget.BUDGET_LADDER):
        chosen = budget.choose(shortest + 1, LARGE_CORPUS, 66).recipe
        assert chosen == recipe, (shortest, chosen)
        if index + 1 < len(budget.BUDGET_LADDER):  # and not past the next rung's budget
            assert budget.choose(budget.BUDGET_LADDER[index + 1][0] - 1, LARGE_CORPUS, 66).recipe == recipe


def test_a_larger_vocabulary_buys_a_smaller_model_for_the_same_time():
    longest = budget.BUDGET_LADDER[-1][0] + 1
    chars = budget.choose(longest, LARGE_CORPUS, 66)
    words = budget.choose(longest, LARGE_CORPUS, 50_000)
    assert words.recipe.token_cost(100) < chars.recipe.token_cost(100)
    assert "makes each token" in words.why and "dearer" not in chars.why
    # A vocabulary the size of the study's own changes nothing.
    assert budget.choose(longest, LARGE_CORPUS, 100).recipe == chars.recipe


def test_a_small_corpus_read_many_times_gets_dropout():
    long_run = budget.BUDGET_LADDER[-1][0] + 1
    small = budget.choose(long_run, 100_000, 66)
    assert small.recipe.dropout == budget.DROPOUT and "dropout" in small.why
    assert budget.choose(long_run, LARGE_CORPUS, 66).recipe.dropout == 0.0
    assert budget.choose(60, 1_000_000, 66).recipe.dropout == 0.0  # a short run reads it about once


def test_settings_the_caller_gave_win_over_the_choice():
    choice = budget.choose(budget.BUDGET_LADDER[-1][0] + 1, 100_000, 66)
    left_open = set(budget.CHOOSABLE) - {"units", "batch_size"}
    model, training, line = budget.apply(choice, ModelConfig(units=8), TrainConfig(batch_size=4), left_open)
    assert (model.units, training.batch_size) == (8, 4)
    assert (model.layers, model.embedding_dim, model.dropout) == (choice.recipe.layers, choice.recipe.embedding_dim,
                                                                  choice.recipe.dropout)
    assert training.learning_rate == choice.recipe.learning_rate
    assert line.startswith(f"budget preset: {choice.recipe.layers}x8 LSTM") and "kept as given: --units --batch-size" in line
    assert training.recipe == line


def test_a_run_records_the_choice_and_keeps_what_was_given(tiny_corpus, tmp_path):
    shape = dict(units=16, embedding_dim=8, seq_length=20, batch_size=8, max_steps=3, seed=7)
    lines = []
    model = textgen.train(str(tiny_corpus), out=tmp_path / "m", preset="budget", max_time=3600, log=_Lines(lines),
                          **shape)
    expected = budget.choose(3600, 1, 1)  # a tiny corpus: the longest rung, with dropout
    assert (model.config.units, model.config.embedding_dim, model.train_config.batch_size) == (16, 8, 8)
    assert (model.config.layers, model.config.dropout) == (expected.recipe.layers, budget.DROPOUT)
    assert model.train_config.learning_rate == expected.recipe.learning_rate
    assert any(line.startswith("budget preset:") for line in lines)
    assert textgen.load(tmp_path / "m").train_config.recipe == model.train_config.recipe
    assert "kept as given: --units --embedding-dim --batch-size" in model.train_config.recipe
    plain = textgen.train(str(tiny_corpus), out=tmp_path / "n", quiet=True, max_time=3600, **shape)
    assert (plain.config.dropout, plain.train_config.recipe) == (0.0, None)


def test_the_command_line_says_what_the_preset_chose(tiny_corpus, tmp_path):
    out = tmp_path / "m"
    result = CliRunner().invoke(cli, ["train", str(tiny_corpus), "--out", str(out), "--preset", "budget",
                                      "--max-time", "1h", "--layers", "1", "--units", "8", "--embedding-dim", "4",
                                      "--seq-length", "20", "--batch-size", "8", "--learning-rate", "0.01",
                                      "--max-steps", "2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stderr.splitlines() if line.startswith("budget preset:"))
    assert "1x8 LSTM, embedding 4, dropout 0.2, batch 8, learning rate 0.01" in line
    assert "kept as given: --layers --units --embedding-dim --batch-size --learning-rate" in line
    settings = json.loads((out / "config.json").read_text())
    assert settings["training"]["recipe"] == line and settings["model"]["dropout"] == budget.DROPOUT


class _Lines:
    """A log stream that keeps each line written to it."""

    def __init__(self, lines):
        self.lines = lines

    def write(self, text):
        self.lines.extend(part for part in text.splitlines() if part)

    def flush(self):
        pass
