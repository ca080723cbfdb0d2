"""The SavedModel export: generates by itself, needs only TensorFlow, matches the Python API."""

import json
import shutil
import subprocess
import sys

import pytest

import textgen
from textgen.errors import TextgenError

from conftest import TINY_SETTINGS

# Runs in a fresh interpreter where importing textgen fails, so only TensorFlow serves.
LOAD_AND_GENERATE = r"""
import json, sys
sys.modules["textgen"] = None
import tensorflow as tf
request = json.loads(sys.argv[2])
model = tf.saved_model.load(sys.argv[1])
out = model.signatures["serving_default"](
    prompts=tf.constant(request["prompts"]), length=tf.constant(request["length"]),
    temperature=tf.constant(request["temperature"]), top_k=tf.constant(request["top_k"]),
    top_p=tf.constant(request["top_p"]), seed=tf.constant(request["seed"], tf.int64),
    stop=tf.constant(request["stop"], tf.string))
print(json.dumps([t.decode("utf-8") for t in out["text"].numpy()]))
"""

REQUESTS = [
    dict(prompts=["ROMEO:", "JULIET: O", ""], length=40, temperature=0.8, top_k=0, top_p=1.0, seed=7, stop=[]),
    dict(prompts=["ROMEO:", "ROMEO:"], length=30, temperature=0.0, top_k=0, top_p=1.0, seed=1, stop=[]),
    dict(prompts=["Deny thy"], length=60, temperature=1.2, top_k=5, top_p=0.9, seed=3, stop=["\n", "Romeo"]),
]


def python_api(model, request):
    texts = model.generate(request["prompts"], length=request["length"], temperature=request["temperature"],
                           top_k=request["top_k"], top_p=request["top_p"], seed=request["seed"],
                           stop=request["stop"])
    return texts


@pytest.fixture(scope="module", params=["char", "word", "bpe"])
def exported(request, tiny_corpus, tmp_path_factory):
    level = request.param
    root = tmp_path_factory.mktemp(f"export-{level}")
    extra = {} if level == "char" else {"vocab_size": 80}
    model = textgen.train(str(tiny_corpus), out=root / "model", quiet=True, tokenizer=level,
                          **{**TINY_SETTINGS, "max_steps": 10}, **extra)
    return model, model.export()


def test_the_savedmodel_matches_the_python_api_without_textgen(exported):
    model, path = exported
    assert path == model.path / "saved_model"
    for request in REQUESTS:
        result = subprocess.run([sys.executable, "-c", LOAD_AND_GENERATE, str(path), json.dumps(request)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert json.loads(result.stdout) == python_api(model, request)


def test_saved_model_cli_lists_the_signatures_and_runs_them(exported):
    _, path = exported
    cli = shutil.which("saved_model_cli") or str(__import__("pathlib").Path(sys.executable).parent / "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", str(path), "--all"], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "signature_def['serving_default']" in shown.stdout and "signature_def['step']" in shown.stdout
    ran = subprocess.run(
        [cli, "run", "--dir", str(path), "--tag_set", "serve", "--signature_def", "serving_default",
         "--input_exprs", "prompts=['ROMEO:'];length=20;temperature=0.0;top_k=0;top_p=1.0;seed=1;stop=['']"],
        capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "ROMEO:" in ran.stdout


def test_the_step_signature_matches_the_keras_model(exported):
    import numpy as np

    from textgen.backend import tf

    model, path = exported
    loaded = tf.saved_model.load(str(path))
    ids = model.tokenizer.encode("ROMEO: But soft")[None, :]  # (1, T)
    expected = model.keras_model(ids, training=False).numpy()[0]  # (T, V)
    states = tf.zeros([2 * model.config.layers, 1, model.config.units])
    for t in range(ids.shape[1]):
        out = loaded.signatures["step"](tokens=tf.constant(ids[:, t]), states=states)
        states = out["states"]
        np.testing.assert_allclose(out["logits"].numpy()[0], expected[t], atol=1e-4)


def test_export_refuses_a_non_empty_destination(tiny_model, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(TextgenError, match="not empty"):
        tiny_model.export(tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_an_existing_savedmodel_is_replaced_only_with_overwrite(tiny_model, tmp_path):
    path = tiny_model.export(tmp_path / "sm")
    with pytest.raises(TextgenError, match=r"--overwrite.*Received: out="):
        tiny_model.export(path)
    assert tiny_model.export(path, overwrite=True) == path
    assert (path / "saved_model.pb").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["sm"]  # no staging folder left behind
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(TextgenError, match="not a SavedModel"):
        tiny_model.export(mine, overwrite=True)  # --overwrite replaces a SavedModel, never anything else
    assert (mine / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("failure", ["ResourceExhaustedError", "PermissionDeniedError", "OSError"])
def test_a_failed_export_is_one_line_and_leaves_nothing_behind(tiny_model, tmp_path, monkeypatch, failure):
    from textgen.backend import tf

    real_save = tf.saved_model.save

    def save_then_fail(module, path, signatures):
        real_save(module, path, signatures=signatures)  # files written before the failure, as a full disk leaves them
        if failure == "OSError":
            raise OSError(28, "No space left on device")
        raise getattr(tf.errors, failure)(None, None, "writing variables failed\nmore detail")

    path = tiny_model.export(tmp_path / "sm")
    before = (path / "saved_model.pb").read_bytes()
    monkeypatch.setattr(tf.saved_model, "save", save_then_fail)
    with pytest.raises(TextgenError, match=r"could not write the SavedModel: [^\n]*Received: out=") as caught:
        tiny_model.export(path, overwrite=True)
    assert "\n" not in str(caught.value)
    assert (path / "saved_model.pb").read_bytes() == before  # the SavedModel that was there is intact
    assert [p.name for p in tmp_path.iterdir()] == ["sm"]  # and the failed attempt left nothing


KILLED_EXPORT = r"""
import os, sys
import tensorflow as tf
import textgen

real_save = tf.saved_model.save

def save_and_die(module, path, signatures):
    real_save(module, path, signatures=signatures)
    os._exit(137)

tf.saved_model.save = save_and_die
textgen.load(sys.argv[1]).export(sys.argv[2])
"""


def test_a_killed_export_leaves_no_savedmodel_and_can_be_done_again(tiny_model_dir, tmp_path):
    path = tmp_path / "sm"
    killed = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(tiny_model_dir), str(path)],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert not path.exists()  # a loader never finds half of one
    assert textgen.load(tiny_model_dir).export(path) == path
    assert [p.name for p in tmp_path.iterdir()] == ["sm"]  # the killed export's staging folder is gone too


def test_the_savedmodel_clamps_length_and_answers_empty_requests(tiny_model, tmp_path, monkeypatch):
    from textgen.backend import tf
    from textgen.generation import export as export_module

    monkeypatch.setattr(export_module, "MAX_LENGTH", 7)  # the documented maximum, made small to test quickly
    loaded = tf.saved_model.load(str(tiny_model.export(tmp_path / "sm")))
    serve = loaded.signatures["serving_default"]

    def texts(prompts, length):
        out = serve(prompts=tf.constant(prompts, tf.string), length=tf.constant(length), temperature=tf.constant(0.0),
                    top_k=tf.constant(0), top_p=tf.constant(1.0), seed=tf.constant(1, tf.int64),
                    stop=tf.constant([], tf.string))
        return [text.decode("utf-8") for text in out["text"].numpy()]

    assert texts(["ROMEO:", "a"], 0) == ["ROMEO:", "a"]  # nothing asked for: the prompts come back
    assert texts(["ROMEO:"], -5) == ["ROMEO:"]
    assert texts([], 20) == []
    clamped = texts(["ROMEO:"], 10**9)[0]
    assert clamped == tiny_model.generate("ROMEO:", length=7, temperature=0.0, seed=1)
    assert len(clamped) == len("ROMEO:") + 7
