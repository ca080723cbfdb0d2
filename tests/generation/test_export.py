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
