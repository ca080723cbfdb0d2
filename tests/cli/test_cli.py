"""The command line: thin commands, documented exit codes, text on stdout only."""

import json
import shutil

import pytest
from click.testing import CliRunner

from textgen.cli.main import cli


@pytest.fixture
def runner():
    return CliRunner()


def tiny_train_args(corpus, out):
    return ["train", str(corpus), "--out", str(out), "--layers", "1", "--units", "8", "--embedding-dim", "4",
            "--seq-length", "20", "--batch-size", "8", "--max-steps", "3", "--seed", "1"]


def test_help_lists_the_commands(runner):
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "sample", "evaluate", "info"):
        assert command in result.output


def test_train_then_sample_then_info(runner, tiny_corpus, tmp_path):
    out = tmp_path / "m"
    trained = runner.invoke(cli, tiny_train_args(tiny_corpus, out))
    assert trained.exit_code == 0, trained.output
    assert trained.stdout == ""  # progress and logs go to stderr
    assert "bits/char" in trained.stderr
    sampled = runner.invoke(cli, ["sample", str(out), "--prompt", "ROMEO:", "--length", "25", "--seed", "4"])
    assert sampled.exit_code == 0, sampled.output
    assert sampled.stdout.startswith("ROMEO:") and len(sampled.stdout) == len("ROMEO:") + 25 + 1
    again = runner.invoke(cli, ["sample", str(out), "--prompt", "ROMEO:", "--length", "25", "--seed", "4"])
    assert again.stdout == sampled.stdout
    info = runner.invoke(cli, ["info", str(out)])
    assert info.exit_code == 0 and "1x8 LSTM" in info.stdout and "seed 1" in info.stdout
    as_json = json.loads(runner.invoke(cli, ["info", str(out), "--json"]).stdout)
    assert as_json["config"]["model"]["units"] == 8


def test_sample_without_seed_prints_the_seed_it_drew(runner, tiny_model_dir):
    result = runner.invoke(cli, ["sample", str(tiny_model_dir), "--length", "5"])
    assert result.exit_code == 0
    seed = int(result.stderr.split("seed: ")[1].split()[0])
    replay = runner.invoke(cli, ["sample", str(tiny_model_dir), "--length", "5", "--seed", str(seed)])
    assert replay.stdout == result.stdout


def test_num_samples_prints_each_sample(runner, tiny_model_dir):
    result = runner.invoke(cli, ["sample", str(tiny_model_dir), "-p", "O", "-n", "10", "--num-samples", "3",
                                 "--seed", "2"])
    assert result.exit_code == 0
    assert len(result.stdout.rstrip("\n").split("\n\n")) >= 3


def test_evaluate_prints_loss_and_json(runner, tiny_model_dir, tiny_corpus):
    result = runner.invoke(cli, ["evaluate", str(tiny_model_dir), str(tiny_corpus), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["bits_per_char"] > 0 and figures["tokens"] > 1000
    plain = runner.invoke(cli, ["evaluate", str(tiny_model_dir), str(tiny_corpus)])
    assert "bits/char" in plain.stdout


@pytest.mark.parametrize("args, code, message", [
    (["sample", "{model}", "--temperature", "-1"], 2, "temperature"),
    (["sample", "{model}", "--temperature", "nan"], 2, "temperature"),
    (["sample", "{model}", "--temperature", "inf"], 2, "temperature"),
    (["sample", "{model}", "--length", "0"], 2, "length"),
    (["sample", "{model}", "--length", "-5"], 2, "length"),
    (["sample", "{model}", "--length", "999999999"], 2, "length"),
    (["sample", "{model}", "--top-k", "100000"], 2, "top_k"),
    (["sample", "{model}", "--top-p", "0"], 2, "top_p"),
    (["sample", "{model}", "--top-p", "1.5"], 2, "top_p"),
    (["sample", "{missing}"], 1, "no model directory"),
    (["train", "{missing}", "--out", "{out}"], 1, "no such file"),
    (["train", "{corpus}", "--out", "{out}", "--units", "0"], 2, "units"),
    (["train", "{corpus}", "--out", "{out}", "--max-time", "soon"], 2, "duration"),
    (["train", "{corpus}", "--out", "{out}", "--tokenizer", "letters"], 2, "letters"),
    (["train", "{corpus}", "--out", "{out}", "--preset", "fastest"], 2, "fastest"),
    (["train", "{corpus}", "--out", "{out}", "--val-seq-length", "0"], 2, "Received: val_seq_length=0"),
    (["evaluate", "{model}", "{missing}"], 1, "no such file"),
    (["info", "{missing}"], 1, "no model directory"),
    (["frobnicate"], 2, "No such command"),
])
def test_errors_are_one_line_with_documented_exit_codes(runner, tiny_model_dir, tiny_corpus, tmp_path,
                                                        args, code, message):
    values = {"model": str(tiny_model_dir), "missing": str(tmp_path / "missing"), "out": str(tmp_path / "out"),
              "corpus": str(tiny_corpus)}
    result = runner.invoke(cli, [a.format(**values) for a in args])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1


def test_train_never_writes_into_a_folder_that_is_not_a_model(runner, tiny_corpus, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    result = runner.invoke(cli, tiny_train_args(tiny_corpus, precious) + ["--overwrite"])
    assert result.exit_code == 1
    assert "not a textgen model" in result.stderr
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]


def test_train_refuses_to_replace_a_model_without_overwrite(runner, tiny_corpus, tiny_model_dir, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(tiny_model_dir, out)
    before = (out / "weights.npz").read_bytes()
    result = runner.invoke(cli, tiny_train_args(tiny_corpus, out))
    assert result.exit_code == 1 and "--overwrite" in result.stderr
    assert (out / "weights.npz").read_bytes() == before
    replaced = runner.invoke(cli, tiny_train_args(tiny_corpus, out) + ["--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert (out / "weights.npz").read_bytes() != before


def test_unknown_prompt_characters_give_a_warning_on_stderr(runner, tiny_model_dir):
    result = runner.invoke(cli, ["sample", str(tiny_model_dir), "-p", "€uro", "-n", "5", "--seed", "1"])
    assert result.exit_code == 0
    assert "warning:" in result.stderr and "€" in result.stderr
    assert result.stdout.startswith("€uro")


def test_bad_utf8_corpus_names_the_file_and_offset(runner, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello world\n" * 10 + b"\xff\xfe broken")
    result = runner.invoke(cli, ["train", str(bad), "--out", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "bad.txt" in result.stderr and "120" in result.stderr and "--errors" in result.stderr


def _make_inputs(tmp_path, tiny_model_dir):
    """Build every bad input of the matrix; returns name -> path."""
    inputs = {}
    (tmp_path / "empty.txt").write_text("")
    inputs["empty"] = tmp_path / "empty.txt"
    (tmp_path / "short.txt").write_text("shorter than one batch of windows\n" * 30)
    inputs["short"] = tmp_path / "short.txt"
    (tmp_path / "binary.bin").write_bytes(b"\x7fELF\x00\x01\x02" * 100)
    inputs["binary"] = tmp_path / "binary.bin"
    (tmp_path / "no_text").mkdir()
    (tmp_path / "no_text" / "image.png").write_bytes(b"\x89PNG\x00\x00" * 50)
    inputs["no_text"] = tmp_path / "no_text"
    for name in ("partial", "corrupt", "newer"):
        shutil.copytree(tiny_model_dir, tmp_path / name)
        inputs[name] = tmp_path / name
    (inputs["partial"] / "weights.npz").unlink()
    (inputs["corrupt"] / "config.json").write_text('{"format": "textgen-model"}')
    manifest = json.loads((inputs["newer"] / "manifest.json").read_text())
    manifest["format_version"] = 99
    (inputs["newer"] / "manifest.json").write_text(json.dumps(manifest))
    return inputs


@pytest.mark.parametrize("command, case, message", [
    ("train", "empty", "empty"),
    ("train", "short", "fewer than one batch"),
    ("train", "binary", "binary"),
    ("train", "no_text", "no text files"),
    ("sample", "partial", "partial"),
    ("sample", "corrupt", "sha256"),
    ("sample", "newer", "newer textgen"),
    ("info", "partial", "partial"),
])
def test_bad_input_matrix_exits_1_with_one_line_and_writes_nothing(runner, tiny_model_dir, tmp_path,
                                                                   command, case, message):
    inputs = _make_inputs(tmp_path, tiny_model_dir)
    out = tmp_path / "out"
    args = [command, str(inputs[case])] + (["--out", str(out)] if command == "train" else [])
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    result = runner.invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert not out.exists()
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_one_huge_line_without_newlines_trains(runner, tmp_path):
    huge = tmp_path / "one_line.txt"
    huge.write_text("to be or not to be that is the question " * 50_000)  # 2 MB, no newline
    result = runner.invoke(cli, ["train", str(huge), "--out", str(tmp_path / "m"), "--layers", "1", "--units", "8",
                                 "--embedding-dim", "4", "--seq-length", "20", "--batch-size", "8",
                                 "--max-steps", "2", "--val-fraction", "0.01"])
    assert result.exit_code == 0, result.output


def test_export_replaces_a_savedmodel_only_with_overwrite(runner, tiny_model_dir, tmp_path):
    out = tmp_path / "sm"
    assert runner.invoke(cli, ["export", str(tiny_model_dir), "--out", str(out)]).exit_code == 0
    refused = runner.invoke(cli, ["export", str(tiny_model_dir), "--out", str(out)])
    assert refused.exit_code == 1 and "pass --overwrite" in refused.stderr and "Traceback" not in refused.output
    again = runner.invoke(cli, ["export", str(tiny_model_dir), "--out", str(out), "--overwrite"])
    assert again.exit_code == 0, again.output
    assert (out / "saved_model.pb").is_file()
