"""The learning-rate schedule: its curve, and that training follows it."""

import pytest

import textgen
from textgen.config import TrainConfig
from textgen.errors import ConfigError
from textgen.training.optimizer import scheduled_rate

from conftest import TINY_SETTINGS


def test_constant_stays_and_cosine_falls_from_the_rate_to_a_tenth():
    constant, cosine = TrainConfig(learning_rate=0.01), TrainConfig(learning_rate=0.01, schedule="cosine")
    assert [scheduled_rate(constant, p) for p in (0.0, 0.5, 1.0)] == [0.01, 0.01, 0.01]
    assert scheduled_rate(cosine, 0.0) == pytest.approx(0.01)
    assert scheduled_rate(cosine, 0.5) == pytest.approx(0.01 * (0.1 + 0.9 * 0.5))
    assert scheduled_rate(cosine, 1.0) == pytest.approx(0.001)
    assert scheduled_rate(cosine, 3.0) == pytest.approx(0.001)  # past the end it stays at the floor
    rates = [scheduled_rate(cosine, i / 10) for i in range(11)]
    assert rates == sorted(rates, reverse=True)


def test_unknown_schedule_is_refused():
    with pytest.raises(ConfigError, match="Received: schedule='linear'"):
        TrainConfig(schedule="linear")


def test_training_follows_the_schedule_to_its_floor(tiny_corpus, tmp_path):
    model = textgen.train(str(tiny_corpus), out=tmp_path / "m", quiet=True, schedule="cosine",
                          **{**TINY_SETTINGS, "max_steps": 10, "learning_rate": 0.02})
    assert model.train_config.schedule == "cosine"
    # The last step ran at progress 9/10 of max_steps; the history records the rate it used.
    last = model.manifest["metrics"]["history"][-1]
    assert last["step"] == 10
    assert last["learning_rate"] == pytest.approx(scheduled_rate(model.train_config, 0.9), rel=1e-5)
    assert last["learning_rate"] < 0.02 * 0.2
