import numpy as np
import pytest

import textgen
from textgen.errors import ConfigError, CorpusError, ModelDirError, TrainingError
from textgen.tokenization.tokenizer import UnknownTokenWarning

from conftest import TINY_SETTINGS


def test_load_gives_the_documented_interface(tiny_model):
    assert tiny_model.keras_model.output_shape[-1] == tiny_model.config.vocab_size
    assert tiny_model.tokenizer.level == "char"
    assert tiny_model.train_config.seed == TINY_SETTINGS["seed"]


def test_generate_continues_the_prompt_reproducibly(tiny_model):
    text = tiny_model.generate("ROMEO:", length=40, temperature=0.8, seed=1)
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 40
    assert text == tiny_model.generate("ROMEO:", length=40, temperature=0.8, seed=1)
    assert text != tiny_model.generate("ROMEO:", length=40, temperature=0.8, seed=2)


def test_num_samples_returns_a_list_of_distinct_samples(tiny_model):
    texts = tiny_model.generate("JULIET:", length=30, num_samples=3, seed=5)
    assert isinstance(texts, list) and len(texts) == 3
    assert len(set(texts)) == 3


def test_greedy_samples_are_identical(tiny_model):
    texts = tiny_model.generate("O", length=20, temperature=0, num_samples=2, seed=1)
    assert texts[0] == texts[1]


def test_unknown_prompt_characters_warn_and_do_not_crash(tiny_model):
    with pytest.warns(UnknownTokenWarning, match="☃"):
        text = tiny_model.generate("☃ snow", length=5, seed=1)
    assert len(text) == len("☃ snow") + 5


def test_bad_sampling_settings_are_refused(tiny_model):
    with pytest.raises(ConfigError, match="temperature"):
        tiny_model.generate("a", temperature=-1)
    with pytest.raises(ConfigError, match="top_k"):
        tiny_model.generate("a", top_k=tiny_model.config.vocab_size + 1)


def test_evaluate_reports_loss_bits_per_char_and_perplexity(tiny_model):
    from conftest import TINY_TEXT

    result = tiny_model.evaluate(TINY_TEXT[:500])
    assert result["tokens"] == 499 and result["characters"] == 499
    assert result["perplexity"] == pytest.approx(np.exp(result["loss"]))
    assert result["bits_per_char"] == pytest.approx(result["loss"] / np.log(2), rel=1e-4)


def test_training_lowers_validation_loss_below_uniform(tiny_model):
    best = tiny_model.manifest["metrics"]["best"]
    assert best["val_loss"] < np.log(tiny_model.config.vocab_size)


def test_same_seed_gives_identical_weights(tiny_corpus, tiny_model, tmp_path):
    again = textgen.train(str(tiny_corpus), out=tmp_path / "again", quiet=True, **TINY_SETTINGS)
    for a, b in zip(again.keras_model.weights, tiny_model.keras_model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("tokenizer", ["word", "bpe"])
def test_other_tokenizer_levels_train_and_sample(tiny_corpus, tmp_path, tokenizer):
    model = textgen.train(str(tiny_corpus), out=tmp_path / tokenizer, quiet=True, tokenizer=tokenizer,
                          vocab_size=60, **{**TINY_SETTINGS, "seq_length": 8, "max_steps": 5})
    assert textgen.load(tmp_path / tokenizer).tokenizer.level == tokenizer
    assert model.generate("ROMEO", length=5, seed=1).startswith("ROMEO")


def test_a_corpus_shorter_than_one_batch_fails_before_training(tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("just a few words\n" * 3)
    with pytest.raises(TrainingError, match="fewer than one batch"):
        textgen.train(str(small), out=tmp_path / "m", quiet=True)
    assert not (tmp_path / "m").exists()


def test_settings_and_destination_are_checked_before_reading_the_corpus(tmp_path):
    with pytest.raises(ConfigError, match="units"):
        textgen.train("does-not-exist.txt", out=tmp_path / "m", units=0, quiet=True)
    with pytest.raises(CorpusError):
        textgen.train("does-not-exist.txt", out=tmp_path / "m", quiet=True)


def test_the_python_api_takes_the_command_lines_spellings_and_patience_zero(tiny_corpus, tmp_path):
    model = textgen.train(str(tiny_corpus), out=tmp_path / "m", quiet=True, max_time="10m",
                          tokenizer_sample_bytes="2k", peer_timeout="5m", **{**TINY_SETTINGS, "patience": 0})
    assert model.train_config.max_time == 600 and model.train_config.patience == 0
    assert model.manifest["corpus"]["tokenizer_sample_bytes"] == 2000


@pytest.mark.parametrize("setting, value", [("max_time", "soon"), ("tokenizer_sample_bytes", "lots"),
                                            ("peer_timeout", "-1s")])
def test_a_misspelt_duration_or_size_is_refused_before_reading_the_corpus(tmp_path, setting, value):
    with pytest.raises(ConfigError, match=rf"must be a positive (duration|size) .*Received: {setting}='{value}'$"):
        textgen.train("does-not-exist.txt", out=tmp_path / "m", quiet=True, **{setting: value})


def test_load_of_a_plain_folder_is_refused(tmp_path):
    with pytest.raises(ModelDirError):
        textgen.load(tmp_path)


def test_ctrl_c_during_training_saves_the_work_and_reraises(tiny_corpus, tmp_path, monkeypatch):
    from textgen.training.progress import Progress

    calls = []

    def interrupted_update(self, **state):
        # Ctrl-C reaches the main thread, here right after the 3rd step (batches
        # are read ahead in tf.data's threads, so reading is not the place).
        calls.append(state["step"])
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Progress, "update", interrupted_update)
    with pytest.raises(KeyboardInterrupt):
        textgen.train(str(tiny_corpus), out=tmp_path / "m", quiet=True, **TINY_SETTINGS)
    saved = textgen.load(tmp_path / "m")
    assert saved.manifest["metrics"]["stop_reason"] == "interrupted"
    assert saved.manifest["metrics"]["steps"] == 3


def test_stop_strings_end_each_sample_before_the_stop(tiny_model):
    free = tiny_model.generate("ROMEO:", length=80, seed=11, include_prompt=False)
    stop = free[10:12]
    stopped = tiny_model.generate("ROMEO:", length=80, seed=11, stop=[stop, "zzz"], include_prompt=False)
    assert stopped == free[: free.find(stop)]
    samples = tiny_model.generate("ROMEO:", length=80, seed=11, stop="\n", num_samples=4, include_prompt=False)
    assert all("\n" not in sample for sample in samples)


@pytest.mark.parametrize("settings", [
    dict(length=70, seed=3),
    dict(length=70, seed=3, num_samples=3, stop=["\n", "th"]),
    dict(length=5, seed=1, temperature=0),
])
def test_streaming_in_chunks_gives_exactly_what_generate_gives(tiny_model, settings):
    chunks = list(tiny_model.stream("ROMEO:", chunk_tokens=7, include_prompt=False, **settings))
    assert chunks[-1] == tiny_model.generate("ROMEO:", include_prompt=False, **settings)
    chunks = [[chunk] if isinstance(chunk, str) else chunk for chunk in chunks]
    for earlier, later in zip(chunks, chunks[1:]):  # nothing shown is ever taken back
        assert all(b.startswith(a) for a, b in zip(earlier, later))
