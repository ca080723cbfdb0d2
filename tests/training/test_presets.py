"""Named recipes (``--preset``) and the validation window (``--val-seq-length``)."""

import dataclasses

import numpy as np
import pytest

import textgen
from textgen.config import PRESETS, TrainConfig, apply_preset
from textgen.errors import ConfigError
from textgen.model.loss import Evaluator

from conftest import TINY_SETTINGS, TINY_TEXT


def test_a_preset_fills_in_only_what_was_left_open():
    assert apply_preset("budget", schedule=None, val_seq_length=None) == {"schedule": None, "val_seq_length": 256}
    assert apply_preset("budget", schedule="cosine", val_seq_length=None) == {"schedule": "cosine",
                                                                              "val_seq_length": 256}
    assert apply_preset("budget", schedule=None, val_seq_length=64)["val_seq_length"] == 64
    assert apply_preset(None, schedule=None, val_seq_length=None) == {"schedule": None, "val_seq_length": None}


def test_every_preset_setting_is_one_the_api_leaves_open():
    # apply_preset only fills settings passed as None; the API must pass each one a preset names.
    import inspect

    from textgen.training.run import train

    defaults = {name: p.default for name, p in inspect.signature(train).parameters.items()}
    for preset in PRESETS.values():
        for key, value in preset.items():
            assert defaults[key] is None, key
            TrainConfig(**{key: value})  # and each value is a valid setting


def test_unknown_presets_and_windows_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"Received: preset='fastest'"):
        apply_preset("fastest", schedule=None, val_seq_length=None)
    with pytest.raises(ConfigError, match=r"Received: val_seq_length=0"):
        TrainConfig(val_seq_length=0)
    assert TrainConfig(seq_length=50).validation_window == 50
    assert TrainConfig(seq_length=50, val_seq_length=300).validation_window == 300


def test_validation_scores_each_window_from_an_empty_state(tiny_model_dir):
    tiny_model = textgen.load(tiny_model_dir)  # its own copy: the settings are changed below
    # The same ids scored in windows of 4 and of 200 tokens: the short windows restart the
    # state every 4 tokens, so their tokens see less context and the loss differs.
    ids = np.asarray(tiny_model.tokenizer.encode(TINY_TEXT[:1000]))
    lengths = tiny_model.tokenizer.token_lengths()
    short = Evaluator(tiny_model.keras_model, lengths, 4, 8).evaluate(ids)
    long = Evaluator(tiny_model.keras_model, lengths, 200, 8).evaluate(ids)
    assert short.tokens == long.tokens == len(ids) - 1
    assert abs(short.loss - long.loss) > 1e-3
    # TextModel.evaluate follows the model's stored validation window.
    tiny_model.train_config = dataclasses.replace(tiny_model.train_config, val_seq_length=200)
    assert tiny_model.evaluate(TINY_TEXT[:1000])["loss"] == pytest.approx(long.loss, rel=1e-5)


def test_training_with_a_preset_records_its_settings(tiny_corpus, tmp_path):
    # No --max-time: the budget preset chooses no recipe, and only its validation window applies.
    model = textgen.train(str(tiny_corpus), out=tmp_path / "m", quiet=True, preset="budget",
                          **{**TINY_SETTINGS, "max_steps": 3})
    assert (model.train_config.schedule, model.train_config.val_seq_length) == ("constant", 256)
    reloaded = textgen.load(tmp_path / "m")
    assert (reloaded.train_config.schedule, reloaded.train_config.val_seq_length) == ("constant", 256)
    explicit = textgen.train(str(tiny_corpus), out=tmp_path / "n", quiet=True, preset="budget",
                             schedule="cosine", **{**TINY_SETTINGS, "max_steps": 3})
    assert (explicit.train_config.schedule, explicit.train_config.val_seq_length) == ("cosine", 256)
