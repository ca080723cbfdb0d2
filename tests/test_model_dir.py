import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import textgen
from textgen import model_dir
from textgen.errors import ModelDirError

from conftest import TINY_SETTINGS


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    return target


def rewrite_json(path, name, change):
    """Edit one JSON file and update its hash, as a careful attacker would."""
    data = json.loads((path / name).read_text())
    change(data)
    (path / name).write_text(json.dumps(data))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"][name]["sha256"] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_directory_holds_the_documented_files(tiny_model_dir):
    assert sorted(os.listdir(tiny_model_dir)) == ["checkpoints", "config.json", "manifest.json", "tokenizer.json",
                                                  "weights.npz"]
    # A finished run keeps one checkpoint bundle, enough to train on later with --resume.
    assert sorted(os.listdir(tiny_model_dir / "checkpoints")) == ["ckpt-0000000030", "latest"]
    manifest = json.loads((tiny_model_dir / "manifest.json").read_text())
    assert manifest["format_version"] == model_dir.FORMAT_VERSION
    assert set(manifest["libraries"]) >= {"textgen", "tensorflow", "keras", "tokenizers", "numpy"}
    assert len(manifest["corpus"]["sha256"]) == 64
    assert manifest["metrics"]["best"]["val_loss"] > 0


def test_weights_encoding_is_deterministic_and_round_trips():
    arrays = {"a/kernel": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float32)}
    data = model_dir.encode_weights(arrays)
    assert data == model_dir.encode_weights(dict(reversed(list(arrays.items()))))


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "weights.npz").write_bytes(b"garbage"), "sha256"),
    (lambda p: (p / "manifest.json").unlink(), "manifest.json is missing"),
    (lambda p: (p / "tokenizer.json").unlink(), "partial"),
    (lambda p: (p / "manifest.json").write_text("{not json"), "not valid JSON"),
])
def test_corrupt_or_partial_directories_are_refused(model_copy, damage, message):
    damage(model_copy)
    with pytest.raises(ModelDirError, match=message):
        textgen.load(model_copy)


def test_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(ModelDirError, match="no model directory"):
        textgen.load(tmp_path / "nope")


def test_a_newer_format_version_asks_for_an_upgrade(model_copy):
    manifest = json.loads((model_copy / "manifest.json").read_text())
    manifest["format_version"] = model_dir.FORMAT_VERSION + 1
    (model_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelDirError, match="newer textgen"):
        textgen.load(model_copy)


def test_a_symlink_out_of_the_directory_is_refused(model_copy, tmp_path):
    outside = tmp_path / "outside.json"
    shutil.copy(model_copy / "tokenizer.json", outside)
    (model_copy / "tokenizer.json").unlink()
    (model_copy / "tokenizer.json").symlink_to(outside)
    with pytest.raises(ModelDirError, match="outside the model directory"):
        textgen.load(model_copy)


def test_unknown_settings_such_as_paths_are_refused(model_copy):
    rewrite_json(model_copy, "config.json", lambda c: c["model"].update(weights_url="http://example.com/w"))
    with pytest.raises(ModelDirError, match="weights_url"):
        textgen.load(model_copy)


def test_a_foreign_layer_class_in_the_config_is_refused(model_copy):
    rewrite_json(model_copy, "config.json",
                 lambda c: c.update(keras_config={"class_name": "Lambda", "config": {"function": "os.system"}}))
    with pytest.raises(ModelDirError, match="keras_config"):
        textgen.load(model_copy)


def test_shapes_that_would_exhaust_memory_are_refused_before_allocating(model_copy):
    rewrite_json(model_copy, "config.json", lambda c: c["model"].update(units=8192, layers=32))
    with pytest.raises(ModelDirError, match="parameters"):
        textgen.load(model_copy)


def test_weights_that_do_not_fit_the_settings_are_refused(model_copy):
    rewrite_json(model_copy, "config.json", lambda c: c["model"].update(units=17))
    with pytest.raises(ModelDirError, match="wrong shape"):
        textgen.load(model_copy)


def test_a_non_model_directory_is_never_overwritten(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    with pytest.raises(ModelDirError, match="not a textgen model"):
        model_dir.check_destination(precious, overwrite=True)
    assert (precious / "thesis.txt").read_text() == "years of work"


def test_an_existing_model_is_replaced_only_with_overwrite(model_copy):
    with pytest.raises(ModelDirError, match="--overwrite"):
        model_dir.check_destination(model_copy)
    model_dir.check_destination(model_copy, overwrite=True)
    model_dir.check_destination(model_copy.parent / "new")


def test_save_replaces_atomically_and_leaves_no_temporary_files(tiny_model, tmp_path):
    target = tmp_path / "saved"
    tiny_model.save(target)
    tiny_model.save(target, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]
    reloaded = textgen.load(target)
    for loaded, original in zip(reloaded.keras_model.weights, tiny_model.keras_model.weights):
        np.testing.assert_array_equal(loaded.numpy(), original.numpy())


def run_textgen(*args, timeout=120):
    """The command line in a fresh process, so that a hang fails the test instead of stopping the suite."""
    return subprocess.run([sys.executable, "-m", "textgen", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def one_error_line(result, code=1):
    """The command failed with ``code`` and one line saying why, no traceback."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize("name", ["weights.npz", "manifest.json", "config.json", "tokenizer.json"])
def test_a_fifo_in_place_of_a_model_file_is_refused_without_hanging(model_copy, name):
    (model_copy / name).unlink()
    os.mkfifo(model_copy / name)
    for command in (["info", model_copy], ["sample", model_copy, "--length", "3", "--seed", "1"]):
        line = one_error_line(run_textgen(*command))
        assert f"{name} is not a regular file" in line or "not a textgen model directory" in line
    with pytest.raises(ModelDirError):
        model_dir.check_destination(model_copy)  # reads the manifest to tell a model from anything else


def test_weights_that_are_a_directory_are_one_line(model_copy):
    (model_copy / "weights.npz").unlink()
    (model_copy / "weights.npz").mkdir()
    assert "weights.npz is not a regular file" in one_error_line(run_textgen("info", model_copy))
    with pytest.raises(ModelDirError, match="not a regular file"):
        textgen.load(model_copy)


@pytest.mark.parametrize("name", ["manifest.json", "config.json"])
def test_deeply_nested_json_is_one_line(model_copy, name):
    deep = "[" * 200_000 + "]" * 200_000
    if name == "manifest.json":
        (model_copy / name).write_text(deep)
    else:
        rewrite_json(model_copy, name, lambda config: None)
        (model_copy / name).write_text('{"format": "textgen-model", "model": ' + deep + "}")
        manifest = json.loads((model_copy / "manifest.json").read_text())
        manifest["files"][name]["sha256"] = hashlib.sha256((model_copy / name).read_bytes()).hexdigest()
        (model_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelDirError, match="nested too deeply"):
        textgen.load(model_copy)
    assert "nested too deeply" in one_error_line(run_textgen("info", model_copy))


@pytest.mark.parametrize("change", [
    lambda manifest: manifest["corpus"].update(bytes="lots"),
    lambda manifest: manifest["metrics"].update(best={"epoch": 1}),
    lambda manifest: manifest.update(metrics=[], libraries="many", corpus=None),
])
def test_info_shows_malformed_manifest_values_as_unknown(model_copy, change):
    manifest = json.loads((model_copy / "manifest.json").read_text())
    change(manifest)
    (model_copy / "manifest.json").write_text(json.dumps(manifest))
    result = run_textgen("info", model_copy)
    assert result.returncode == 0, result.stderr
    assert "?" in result.stdout and result.stdout.startswith("model      2x16 LSTM")


def test_info_refuses_malformed_settings_in_one_line(model_copy):
    rewrite_json(model_copy, "config.json", lambda config: config.update(model=[]))
    assert "config.json has invalid settings" in one_error_line(run_textgen("info", model_copy))


def test_a_rewrite_removes_what_was_derived_from_the_old_weights(tiny_corpus, tmp_path):
    from textgen.lab.inspect import write_report

    out = tmp_path / "m"
    model = textgen.train(str(tiny_corpus), out=out, quiet=True, **TINY_SETTINGS)
    model.export()
    write_report(model.trace("ROMEO"), out / "inspect")
    (out / "inspect" / "notes.txt").write_text("mine")
    model.save(out, overwrite=True)  # the same weights: what was derived from them stays
    assert (out / "saved_model" / "saved_model.pb").is_file() and (out / "inspect" / "trace.html").is_file()

    textgen.train(str(tiny_corpus), out=out, quiet=True, overwrite=True, **{**TINY_SETTINGS, "seed": 8})
    assert not (out / "saved_model").exists()
    assert sorted(p.name for p in (out / "inspect").iterdir()) == ["notes.txt"]  # only the user's file is left
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    assert textgen.load(out).export() == out / "saved_model"  # and a fresh export is not refused


SAVE_AND_DIE = r"""
import os, sys
import textgen
from textgen import model_dir

renames, die_at = [0], int(sys.argv[3])
real_replace = os.replace

def replace(source, target):
    if str(target).endswith(("config.json", "tokenizer.json", "weights.npz", "manifest.json")):
        renames[0] += 1
        if renames[0] == die_at:
            os._exit(137)
    real_replace(source, target)

model_dir.os.replace = replace
settings = dict(layers=1, units=8, embedding_dim=4, seq_length=20, batch_size=4, max_steps=int(sys.argv[4]), seed=3)
textgen.train(sys.argv[1], out=sys.argv[2], quiet=True, overwrite=True, **settings)
"""


@pytest.mark.parametrize("first_save", [True, False], ids=["first save", "replacing a model"])
@pytest.mark.parametrize("die_at", [1, 2, 3, 4])
def test_a_kill_at_any_rename_of_a_save_leaves_a_run_that_resume_completes(tiny_corpus, tmp_path, first_save,
                                                                         die_at):
    out = tmp_path / "m"

    def save_and_die(die_at, steps):
        command = [sys.executable, "-c", SAVE_AND_DIE, str(tiny_corpus), str(out), str(die_at), str(steps)]
        return subprocess.run(command, capture_output=True, text=True, timeout=300)

    if not first_save:
        assert save_and_die(0, 4).returncode == 0
    died = save_and_die(die_at, 6)
    assert died.returncode == 137
    assert not (out / "manifest.json").exists()
    with pytest.raises(ModelDirError, match="unfinished training run"):
        model_dir.check_destination(out)
    assert textgen.train(out=out, resume=True, quiet=True).manifest["metrics"]["steps"] == 6
    assert textgen.load(out).manifest["metrics"]["steps"] == 6
    model_dir.check_destination(out, overwrite=True)  # and --overwrite is not refused either


def test_a_second_run_on_the_same_directory_is_refused_at_once(tiny_corpus, tmp_path):
    out = tmp_path / "m"
    with model_dir.writing(out):
        with pytest.raises(ModelDirError, match="another textgen run is writing this model directory"):
            textgen.train(str(tiny_corpus), out=out, quiet=True, **TINY_SETTINGS)
    assert not out.exists()  # the lock leaves no folder behind
    textgen.train(str(tiny_corpus), out=out, quiet=True, **TINY_SETTINGS)
