"""Shipped models: found by name wherever a model directory is taken, never written to, and intact.

Most tests stand a tiny model in for the shipped ones by pointing
``shipped_root`` at a folder of copies; the last ones check the real models
that ship in the package.
"""

import json
import shutil

import pytest
from click.testing import CliRunner

import textgen
from textgen import model_dir
from textgen.cli.completion import model_directories
from textgen.cli.main import cli
from textgen.errors import ModelDirError

SHIPPED_NAMES = ("python", "shakespeare")


@pytest.fixture
def shipped(tmp_path, tiny_model_dir, monkeypatch):
    """A shipped root holding one tiny model named "bard"; the working directory is elsewhere."""
    root = tmp_path / "pretrained"
    root.mkdir()
    shutil.copytree(tiny_model_dir, root / "bard", ignore=shutil.ignore_patterns(model_dir.CHECKPOINTS_DIR))
    (root / "bard" / model_dir.RECIPE_FILE).write_text("how bard was made\n")
    (root / "README.md").write_text("not a model\n")
    shutil.copytree(tiny_model_dir, root / "my-own")  # a user's model trained into the same folder
    monkeypatch.setattr(model_dir, "shipped_root", lambda: root)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return root


def test_a_shipped_name_loads_and_samples_like_its_folder(shipped):
    by_name = textgen.load("bard")
    by_path = textgen.load(shipped / "bard")
    assert by_name.path == (shipped / "bard")
    assert by_name.generate("RO", length=30, seed=3) == by_path.generate("RO", length=30, seed=3)


def test_an_existing_path_wins_over_a_shipped_name(shipped, tiny_model_dir, tmp_path):
    other = tmp_path / "work" / "bard"
    shutil.copytree(tiny_model_dir, other)
    assert model_dir.locate("bard") == other.relative_to(tmp_path / "work")
    assert textgen.load("bard").path.resolve() == other.resolve()


def test_an_unknown_name_is_refused_with_the_shipped_names(shipped):
    with pytest.raises(ModelDirError, match=r"nor a shipped model of that name \(shipped: bard\)"):
        textgen.load("bardd")


def test_the_command_line_takes_shipped_names(shipped):
    runner = CliRunner()
    sampled = runner.invoke(cli, ["sample", "bard", "--prompt", "RO", "--length", "20", "--seed", "2"])
    assert sampled.exit_code == 0, sampled.output
    assert sampled.stdout == textgen.load(shipped / "bard").generate("RO", length=20, seed=2) + "\n"
    info = runner.invoke(cli, ["info", "bard"])
    assert info.exit_code == 0 and "vocabulary" in info.stdout


def test_nothing_is_written_into_a_shipped_model(shipped, tmp_path):
    before = sorted(path.name for path in (shipped / "bard").iterdir())
    runner = CliRunner()
    refused = runner.invoke(cli, ["export", "bard"])
    assert refused.exit_code == 1
    assert "shipped with textgen and is not written to; pass --out" in refused.stderr
    assert "Traceback" not in refused.output
    refused_inspect = runner.invoke(cli, ["inspect", "bard", "--prompt", "ROMEO"])
    assert refused_inspect.exit_code == 1 and "pass --out" in refused_inspect.stderr
    with pytest.raises(ModelDirError, match="pass --out"):
        textgen.load("bard").export()
    assert sorted(path.name for path in (shipped / "bard").iterdir()) == before
    assert not model_dir.is_shipped(shipped / "my-own")  # a user's model beside them is written as any other
    exported = runner.invoke(cli, ["export", "bard", "--out", str(tmp_path / "served")])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "served" / "saved_model.pb").is_file()


def test_training_into_a_shipped_model_is_refused(shipped, tiny_corpus):
    runner = CliRunner()
    result = runner.invoke(cli, ["train", str(tiny_corpus), "--init-from", "bard", "--out", str(shipped / "bard"),
                                 "--max-steps", "1"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output


def test_the_models_command_lists_each_shipped_model(shipped):
    runner = CliRunner()
    listed = runner.invoke(cli, ["models", "--json"])
    assert listed.exit_code == 0, listed.output
    (entry,) = json.loads(listed.stdout)
    manifest = json.loads((shipped / "bard" / model_dir.MANIFEST_FILE).read_text())
    assert entry["name"] == "bard"
    assert entry["val_loss"] == manifest["metrics"]["best"]["val_loss"]
    assert entry["bytes"] == sum((shipped / "bard" / name).stat().st_size
                                 for name in (*model_dir.DATA_FILES, model_dir.MANIFEST_FILE))
    shown = runner.invoke(cli, ["models"])
    assert shown.stdout.startswith("bard ") and "MB" in shown.stdout and "val loss" in shown.stdout


def test_a_corrupt_shipped_model_is_refused_when_listed(shipped):
    weights = shipped / "bard" / model_dir.WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code != 0 and "sha256" in result.stderr


def test_completion_offers_shipped_names_unless_a_path_is_meant(shipped):
    offered = [item.value for item in model_directories(None, None, "ba")]
    assert offered == ["bard"]
    assert [item.value for item in model_directories(None, None, "./ba")] == []


# The real shipped models: present in the package, every sha256 right, and they generate.

@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_each_real_shipped_model_is_installed_intact_and_samples(name):
    models = model_dir.shipped_models()
    assert name in models, f"the shipped model {name!r} is missing from {model_dir.shipped_root()}"
    path, manifest = model_dir.read_manifest(name)  # verifies every file's sha256
    assert path == models[name]
    assert not (path / model_dir.CHECKPOINTS_DIR).exists()
    assert (path / model_dir.RECIPE_FILE).is_file()
    size = sum((path / file).stat().st_size for file in (*model_dir.DATA_FILES, model_dir.MANIFEST_FILE))
    assert size < 16 * 1024 * 1024
    model = textgen.load(name)
    text = model.generate("\n", length=40, seed=1, include_prompt=False)
    assert len(text) == 40  # one character per token
    assert text == model.generate("\n", length=40, seed=1, include_prompt=False)
    assert manifest["metrics"]["best"]["val_loss"] < 2.0
