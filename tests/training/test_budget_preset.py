"""The budget preset's choice of model and recipe (``textgen.training.budget``), alone and in a run."""

import json

from click.testing import CliRunner

import textgen
from textgen.cli.main import cli
from textgen.config import TrainConfig
from textgen.model.settings import ModelConfig
from textgen.training import budget

SMALL = budget.Recipe(layers=1, units=64, embedding_dim=16, batch_size=16, learning_rate=0.01, schedule="constant")
LARGE = budget.Recipe(layers=2, units=512, embedding_dim=128, batch_size=64, learning_rate=0.002, schedule="cosine")
TWO_RUNGS = ((0, SMALL, "small wins short runs"), (900, LARGE, "large wins long runs"))


def test_the_shortest_budgets_get_textgens_defaults():
    """Below the study's first rung the preset changes nothing: it can be no worse than the defaults there."""
    shortest, recipe, _ = budget.BUDGET_LADDER[0]
    model, training = ModelConfig(), TrainConfig()
    assert shortest == 0
    assert (recipe.layers, recipe.units, recipe.embedding_dim) == (model.layers, model.units, model.embedding_dim)
    assert (recipe.batch_size, recipe.learning_rate, recipe.schedule) == (training.batch_size, training.learning_rate,
                                                                          training.schedule)
    assert [rung[0] for rung in budget.BUDGET_LADDER] == sorted({rung[0] for rung in budget.BUDGET_LADDER})


def test_each_rung_is_chosen_from_its_budget_up(monkeypatch):
    monkeypatch.setattr(budget, "BUDGET_LADDER", TWO_RUNGS)
    assert budget.choose(899, 66).recipe == SMALL
    assert budget.choose(900, 66).recipe == LARGE
    assert budget.choose(3600, 66).recipe == LARGE
    assert budget.choose(900, 66).why == "for 15 minutes: large wins long runs"


def test_a_larger_vocabulary_buys_what_a_shorter_budget_buys(monkeypatch):
    monkeypatch.setattr(budget, "BUDGET_LADDER", TWO_RUNGS)
    words = budget.choose(1200, 50_000)
    assert words.recipe == SMALL and "a vocabulary of 50,000 makes each token" in words.why
    # Vocabularies up to the study's own cost nothing extra.
    for vocab in (66, 223, budget.STUDY_VOCAB):
        assert budget.choose(1200, vocab).recipe == LARGE and "dearer" not in budget.choose(1200, vocab).why


def test_settings_the_caller_gave_win_over_the_choice():
    choice = budget.Choice(LARGE, "large wins long runs")
    left_open = set(budget.CHOOSABLE) - {"units", "batch_size"}
    model, training, line = budget.apply(choice, ModelConfig(units=8), TrainConfig(batch_size=4), left_open)
    assert (model.units, training.batch_size) == (8, 4)
    assert (model.layers, model.embedding_dim) == (LARGE.layers, LARGE.embedding_dim)
    assert (training.learning_rate, training.schedule) == (LARGE.learning_rate, LARGE.schedule)
    assert line == ("budget preset: 2x8 LSTM, embedding 128, batch 4, learning rate 0.002, cosine schedule "
                    "(large wins long runs; kept as given: --units --batch-size)")
    assert training.recipe == line


def test_a_run_records_the_choice_and_keeps_what_was_given(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "BUDGET_LADDER", TWO_RUNGS)
    shape = dict(units=16, embedding_dim=8, seq_length=20, batch_size=8, max_steps=3, seed=7)
    lines = []
    model = textgen.train(str(tiny_corpus), out=tmp_path / "m", preset="budget", max_time=3600, log=_Lines(lines),
                          **shape)
    assert (model.config.units, model.config.embedding_dim, model.train_config.batch_size) == (16, 8, 8)
    assert (model.config.layers, model.train_config.learning_rate, model.train_config.schedule) == (
        LARGE.layers, LARGE.learning_rate, LARGE.schedule)
    assert any(line.startswith("budget preset: 2x16 LSTM") for line in lines)
    assert textgen.load(tmp_path / "m").train_config.recipe == model.train_config.recipe
    assert "kept as given: --units --embedding-dim --batch-size" in model.train_config.recipe
    plain = textgen.train(str(tiny_corpus), out=tmp_path / "n", quiet=True, max_time=3600, **shape)
    assert (plain.config.layers, plain.train_config.schedule, plain.train_config.recipe) == (2, "constant", None)


def test_without_a_time_limit_the_preset_keeps_the_defaults(tiny_corpus, tmp_path):
    lines = []
    model = textgen.train(str(tiny_corpus), out=tmp_path / "m", preset="budget", log=_Lines(lines), units=16,
                          embedding_dim=8, seq_length=20, batch_size=8, max_steps=2, seed=7)
    assert (model.config.layers, model.train_config.schedule, model.train_config.recipe) == (2, "constant", None)
    assert model.train_config.val_seq_length == 256
    assert any("no --max-time" in line for line in lines)


def test_the_command_line_says_what_the_preset_chose(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "BUDGET_LADDER", TWO_RUNGS)
    out = tmp_path / "m"
    result = CliRunner().invoke(cli, ["train", str(tiny_corpus), "--out", str(out), "--preset", "budget",
                                      "--max-time", "1h", "--layers", "1", "--units", "8", "--embedding-dim", "4",
                                      "--seq-length", "20", "--batch-size", "8", "--max-steps", "2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stderr.splitlines() if line.startswith("budget preset:"))
    assert line == ("budget preset: 1x8 LSTM, embedding 4, batch 8, learning rate 0.002, cosine schedule "
                    "(for 60 minutes: large wins long runs; kept as given: --layers --units --embedding-dim "
                    "--batch-size)")
    settings = json.loads((out / "config.json").read_text())
    assert settings["training"]["recipe"] == line and settings["training"]["schedule"] == "cosine"


class _Lines:
    """A log stream that keeps each line written to it."""

    def __init__(self, lines):
        self.lines = lines

    def write(self, text):
        self.lines.extend(part for part in text.splitlines() if part)

    def flush(self):
        pass
