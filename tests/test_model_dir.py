import json
import os
import shutil

import numpy as np
import pytest

import textgen
from textgen import model_dir
from textgen.errors import ModelDirError


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
    import hashlib

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
