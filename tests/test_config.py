import math

import pytest

from textgen.config import SampleConfig, TrainConfig
from textgen.model.settings import ModelConfig
from textgen.errors import ConfigError


def test_defaults_are_valid_and_round_trip():
    model = ModelConfig(vocab_size=65)
    assert ModelConfig.from_dict(model.to_dict()) == model
    train = TrainConfig()
    assert TrainConfig.from_dict(train.to_dict()) == train


def test_parameter_count_matches_the_lstm_formula():
    config = ModelConfig(vocab_size=10, layers=2, units=4, embedding_dim=3)
    lstm_0 = 4 * 4 * (3 + 4 + 1)
    lstm_1 = 4 * 4 * (4 + 4 + 1)
    assert config.parameter_count() == 10 * 3 + lstm_0 + lstm_1 + 4 * 10 + 10


@pytest.mark.parametrize("field, value", [
    ("units", 0), ("layers", 0), ("units", 10**6), ("dropout", 1.0), ("dropout", float("nan")),
    ("embedding_dim", 2.5), ("units", True), ("vocab_size", 1),
])
def test_model_settings_out_of_range_are_refused(field, value):
    settings = dict(vocab_size=65)
    settings[field] = value
    with pytest.raises(ConfigError, match=rf"Received: {field}="):
        ModelConfig(**settings)


def test_a_model_too_large_for_memory_is_refused_before_building():
    with pytest.raises(ConfigError, match="parameters"):
        ModelConfig(vocab_size=1_000_000, units=8192, embedding_dim=8192, layers=32)


def test_unknown_keys_and_wrong_types_are_refused():
    with pytest.raises(ConfigError, match="Received: key='path'"):
        ModelConfig.from_dict({"vocab_size": 10, "path": "/etc/passwd"})
    with pytest.raises(ConfigError):
        ModelConfig.from_dict(["not", "a", "dict"])
    with pytest.raises(ConfigError, match="units"):
        ModelConfig.from_dict({"vocab_size": 10, "units": "http://example.com"})


@pytest.mark.parametrize("value", [-0.5, math.nan, math.inf, -math.inf])
def test_temperature_must_be_finite_and_not_negative(value):
    with pytest.raises(ConfigError, match="Received: temperature="):
        SampleConfig(temperature=value)


def test_temperature_zero_is_allowed_for_greedy_decoding():
    assert SampleConfig(temperature=0).temperature == 0


@pytest.mark.parametrize("field, value", [
    ("length", 0), ("length", -3), ("length", 10**9), ("top_p", 0.0), ("top_p", 1.5), ("top_k", -1),
    ("num_samples", 0),
])
def test_sampling_settings_out_of_range_are_refused(field, value):
    with pytest.raises(ConfigError, match=rf"Received: {field}="):
        SampleConfig(**{field: value})


@pytest.mark.parametrize("field, value", [
    ("seq_length", 0), ("batch_size", 0), ("val_fraction", 0.0), ("val_fraction", 0.9),
    ("learning_rate", 0.0), ("max_time", -1.0), ("patience", -1), ("patience", None),
])
def test_training_settings_out_of_range_are_refused(field, value):
    with pytest.raises(ConfigError, match=rf"Received: {field}="):
        TrainConfig(**{field: value})


def test_patience_zero_means_never_and_older_files_spelled_it_none():
    assert TrainConfig(patience=0).patience == 0
    assert TrainConfig.from_dict({**TrainConfig().to_dict(), "patience": None}).patience == 0


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("1.5m", 90), ("2h", 7200), (45, 45), (0.5, 0.5)])
def test_a_duration_reads_the_same_in_python_and_on_the_command_line(text, seconds):
    from textgen.cli.options import Duration
    from textgen.config import parse_duration

    assert parse_duration(text, "max_time") == Duration().convert(text, None, None) == seconds


@pytest.mark.parametrize("text, size", [("500000", 500_000), ("100k", 100_000), ("100M", 10**8), ("64MiB", 2**26),
                                        (2048, 2048)])
def test_a_byte_size_reads_the_same_in_python_and_on_the_command_line(text, size):
    from textgen.cli.options import ByteSize
    from textgen.config import parse_size

    assert parse_size(text, "tokenizer_sample_bytes") == ByteSize().convert(text, None, None) == size


@pytest.mark.parametrize("value", ["soon", "0", "-5m", "inf", float("nan"), 0, True, None])
def test_a_duration_that_is_not_a_positive_span_is_refused(value):
    from textgen.config import parse_duration

    with pytest.raises(ConfigError, match=r"max_time must be a positive duration .*Received: max_time="):
        parse_duration(value, "max_time")
