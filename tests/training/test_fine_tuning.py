"""Fine-tuning a trained model (init_from) and training on text held in memory (texts)."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import textgen
from textgen.config import FINE_TUNE_LEARNING_RATE, LEARNING_RATE
from textgen.errors import ConfigError
from textgen.files import file_sha256
from textgen.model.network import grow_vocabulary, named_weights
from textgen.model_info import summary
from textgen.training import loop

from conftest import TINY_TEXT

# Text the tiny base model never saw: new characters (accents, a euro sign, digits) among known ones.
NEW_TEXT = ("Zoë paid 12€ for the café's crème brûlée; ROMEO: 'tis 9 o'clock.\n" * 40)
SMALL = dict(seq_length=20, batch_size=8, seed=5)


def saved_weights(path):
    with np.load(path / "weights.npz") as archive:
        return {name: archive[name] for name in archive.files}


def test_grow_vocabulary_keeps_every_base_value_and_takes_fresh_ones_for_new_tokens():
    rng = np.random.default_rng(0)
    base = {"embedding/embeddings": rng.normal(size=(5, 3)), "lstm_0/kernel": rng.normal(size=(3, 8)),
            "logits/kernel": rng.normal(size=(2, 5)), "logits/bias": rng.normal(size=5)}
    fresh = {"embedding/embeddings": rng.normal(size=(7, 3)), "lstm_0/kernel": rng.normal(size=(3, 8)),
             "logits/kernel": rng.normal(size=(2, 7)), "logits/bias": rng.normal(size=7)}
    grown = grow_vocabulary(base, fresh)
    assert np.array_equal(grown["embedding/embeddings"][:5], base["embedding/embeddings"])
    assert np.array_equal(grown["embedding/embeddings"][5:], fresh["embedding/embeddings"][5:])
    assert np.array_equal(grown["logits/kernel"][:, :5], base["logits/kernel"])
    assert np.array_equal(grown["logits/kernel"][:, 5:], fresh["logits/kernel"][:, 5:])
    assert np.array_equal(grown["logits/bias"][:5], base["logits/bias"])
    assert np.array_equal(grown["lstm_0/kernel"], base["lstm_0/kernel"])
    with pytest.raises(ValueError):
        grow_vocabulary(base, {**fresh, "lstm_0/kernel": np.zeros((3, 4))})


@pytest.fixture(scope="module")
def new_corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("new") / "new.txt"
    path.write_text(NEW_TEXT, encoding="utf-8")
    return path


def test_fine_tuning_starts_from_the_base_weights_and_adds_the_new_characters(tiny_model_dir, new_corpus, tmp_path,
                                                                              monkeypatch):
    base = textgen.load(tiny_model_dir)
    base_weights = saved_weights(tiny_model_dir)
    started = {}
    original_fit = loop.Trainer.fit

    def fit_recording_the_start(self, windows, val_ids):
        started.update({name: v.numpy().copy() for name, v in named_weights(self.model, self.model_config).items()})
        return original_fit(self, windows, val_ids)

    monkeypatch.setattr(loop.Trainer, "fit", fit_recording_the_start)
    log = []
    tuned = textgen.train(str(new_corpus), out=tmp_path / "tuned", init_from=str(tiny_model_dir), max_steps=3,
                          log=_Lines(log), **SMALL)

    added = sorted(set(NEW_TEXT) - set("".join(base.tokenizer.token_strings())))
    assert tuned.config.vocab_size == base.config.vocab_size + len(added)
    # The architecture is the base's, whatever the defaults say.
    for name in ("cell", "layers", "units", "embedding_dim", "dropout"):
        assert getattr(tuned.config, name) == getattr(base.config, name)
    # Every old token keeps its id, and every new character has one.
    assert tuned.tokenizer.token_strings()[:base.config.vocab_size] == base.tokenizer.token_strings()
    assert sorted(tuned.tokenizer.token_strings()[base.config.vocab_size:]) == added
    assert tuned.tokenizer.unknown_characters(NEW_TEXT) == []
    # Training started from the base's exact values; only the new rows and columns are new.
    vocab = base.config.vocab_size
    for name, value in base_weights.items():
        if name == "embedding/embeddings":
            assert np.array_equal(started[name][:vocab], value)
        elif name == "logits/kernel":
            assert np.array_equal(started[name][:, :vocab], value)
        elif name == "logits/bias":
            assert np.array_equal(started[name][:vocab], value)
        else:
            assert np.array_equal(started[name], value), name
    assert np.abs(started["embedding/embeddings"][vocab:]).sum() > 0  # freshly initialised, not zeros
    # The settings say where it started, the learning rate is the fine-tuning default, and the log the growth.
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert config["training"]["init_from"] == {"model": str(tiny_model_dir.resolve()),
                                               "manifest_sha256": file_sha256(tiny_model_dir / "manifest.json")}
    assert config["training"]["learning_rate"] == FINE_TUNE_LEARNING_RATE
    share = sum(NEW_TEXT.count(char) for char in added) / len(NEW_TEXT)
    new_tokens = tuned.manifest["corpus"]["new_tokens"]
    assert new_tokens["count"] == len(added) and new_tokens["share"] == pytest.approx(share, abs=1e-6)
    line = next(line for line in log if line.startswith("vocabulary:"))
    assert f"{len(added)} new tokens" in line and f"{share:.3%} of the corpus" in line
    described = summary(tmp_path / "tuned")
    assert f"fine-tuned from {tiny_model_dir.resolve()} (manifest sha256 " \
           f"{config['training']['init_from']['manifest_sha256'][:12]}...), {len(added)} new tokens" in described
    assert "fine-tuned" not in summary(tiny_model_dir)


class _Lines:
    """A log stream that keeps each line."""

    def __init__(self, lines):
        self.lines = lines

    def write(self, text):
        self.lines.extend(part for part in text.replace("\r", "\n").split("\n") if part)

    def flush(self):
        pass


def test_fine_tuning_on_text_the_base_covers_adds_nothing_and_an_explicit_rate_wins(tiny_model_dir, tiny_corpus,
                                                                                   tmp_path):
    tuned = textgen.train(str(tiny_corpus), out=tmp_path / "same", init_from=str(tiny_model_dir), max_steps=2,
                          learning_rate=0.02, quiet=True, **SMALL)
    assert tuned.config.vocab_size == textgen.load(tiny_model_dir).config.vocab_size
    assert tuned.train_config.learning_rate == 0.02
    assert tuned.manifest["corpus"]["new_tokens"] == {"count": 0, "share": 0.0}
    scratch = textgen.train(str(tiny_corpus), out=tmp_path / "scratch", max_steps=1, quiet=True, **SMALL)
    assert scratch.train_config.learning_rate == LEARNING_RATE and scratch.train_config.init_from is None


@pytest.mark.parametrize("settings, name", [
    (dict(units=99), "units"), (dict(layers=3), "layers"), (dict(cell="gru"), "cell"),
    (dict(embedding_dim=5), "embedding_dim"), (dict(tokenizer="word"), "tokenizer"),
])
def test_settings_that_would_change_the_base_weights_are_refused(tiny_model_dir, new_corpus, tmp_path, settings,
                                                                 name):
    with pytest.raises(ConfigError, match=f"Received: {name}="):
        textgen.train(str(new_corpus), out=tmp_path / "x", init_from=str(tiny_model_dir), max_steps=1, quiet=True,
                      **SMALL, **settings)
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_fine_tuning_refuses_resume_its_own_base_and_a_missing_model(tiny_model_dir, new_corpus, tmp_path):
    with pytest.raises(ConfigError, match="Received: init_from="):
        textgen.train(str(new_corpus), out=tmp_path / "r", init_from=str(tiny_model_dir), resume=True, quiet=True)
    with pytest.raises(ConfigError, match="must not be the model it starts from"):
        textgen.train(str(new_corpus), out=tiny_model_dir, init_from=str(tiny_model_dir), overwrite=True,
                      max_steps=1, quiet=True)
    assert textgen.load(tiny_model_dir)  # untouched
    with pytest.raises(ConfigError, match="fine-tuning trains on one host"):
        textgen.train(str(new_corpus), out=tmp_path / "w", init_from=str(tiny_model_dir), strategy="multiworker",
                      max_steps=1, quiet=True)
    with pytest.raises(textgen.errors.ModelDirError, match="nor a shipped model of that name"):
        textgen.train(str(new_corpus), out=tmp_path / "m", init_from="no-such-model", max_steps=1, quiet=True)


def test_a_killed_fine_tuning_run_resumes_bitwise(tiny_model_dir, new_corpus, tmp_path):
    run = ["--init-from", str(tiny_model_dir), "--seq-length", "20", "--batch-size", "8", "--max-steps", "60",
           "--patience", "0", "--seed", "4", "--checkpoint-every", "5", "--dropout", "0.1"]

    def command(out, *extra):
        return [sys.executable, "-m", "textgen", "train", str(new_corpus), "--out", str(out), *run, *extra]

    straight = tmp_path / "straight"
    subprocess.run(command(straight), check=True, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    process = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = killed / "checkpoints" / "latest"
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline and not latest.exists():
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "manifest.json").exists(), "the run ended before it could be killed"
    resumed = subprocess.run([sys.executable, "-m", "textgen", "train", "--out", str(killed), "--resume"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a, b = saved_weights(straight), saved_weights(killed)
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    assert json.loads((killed / "config.json").read_text())["training"]["init_from"]["model"] == \
        str(tiny_model_dir.resolve())


def test_texts_in_memory_train_exactly_as_the_same_text_in_a_file(tmp_path):
    lines = TINY_TEXT.split("\n")
    (tmp_path / "file.txt").write_text("\n".join(lines), encoding="utf-8")
    settings = dict(layers=1, units=8, embedding_dim=4, max_steps=4, quiet=True, **SMALL)
    from_file = textgen.train(str(tmp_path / "file.txt"), out=tmp_path / "a", **settings)
    from_texts = textgen.train(texts=lines, out=tmp_path / "b", **settings)
    a, b = saved_weights(tmp_path / "a"), saved_weights(tmp_path / "b")
    assert all(np.array_equal(a[name], b[name]) for name in a)
    assert from_texts.manifest["metrics"]["history"] == from_file.manifest["metrics"]["history"] or \
        [h["val_loss"] for h in from_texts.manifest["metrics"]["history"]] == \
        [h["val_loss"] for h in from_file.manifest["metrics"]["history"]]
    assert from_texts.manifest["corpus"]["sha256"] == from_file.manifest["corpus"]["sha256"]
    # A resumed run on the same texts finds its corpus again.
    more = textgen.train(texts=lines, out=tmp_path / "b", resume=True, more_steps=2, quiet=True)
    assert more.manifest["metrics"]["steps"] == 6


@pytest.mark.parametrize("texts, message", [
    (5, "texts must be a string or a list of strings"), (["ok", 3], "texts must be a string or a list of strings"),
    ("   \n", "texts hold no text"), ("a\ud800b", "lone surrogate"),
])
def test_texts_that_cannot_be_trained_on_are_refused(tmp_path, texts, message):
    with pytest.raises(ConfigError, match=message):
        textgen.train(texts=texts, out=tmp_path / "m", max_steps=1, quiet=True)
    assert not (tmp_path / "m").exists()


def test_texts_and_a_corpus_together_are_refused(tiny_corpus, tmp_path):
    with pytest.raises(ConfigError, match="corpus or texts, not both"):
        textgen.train(str(tiny_corpus), texts="more", out=tmp_path / "m", quiet=True)
