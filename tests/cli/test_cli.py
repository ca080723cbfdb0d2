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


@pytest.mark.parametrize("options", [["--vocab-size", "1000000", "--units", "1024"], ["--units", "8000"]])
def test_a_model_too_large_for_its_vocabulary_is_refused_before_the_corpus_is_read(runner, tiny_corpus, tmp_path,
                                                                                     options):
    # The tiny corpus has 37 characters; the model is refused for the vocabulary the options allow.
    result = runner.invoke(cli, ["train", str(tiny_corpus), "--out", str(tmp_path / "m"), "--max-steps", "1",
                                 *options])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: model would have more than 500,000,000 parameters with a vocabulary of")
    assert "corpus:" not in result.stderr and not (tmp_path / "m").exists()


def test_a_warning_is_shown_when_it_happens_not_when_the_command_ends(runner, tiny_corpus, tmp_path):
    from textgen.training.checkpoints import CheckpointManager

    out = tmp_path / "m"
    assert runner.invoke(cli, tiny_train_args(tiny_corpus, out)).exit_code == 0
    # A newer bundle that is broken: resuming warns about it, then goes on from the one before.
    manager = CheckpointManager(out)
    arrays, progress, tokenizer_json = manager.load_latest()
    manager.save(99, arrays, {**progress, "loop": {**progress["loop"], "steps": 99}}, tokenizer_json)
    (out / "checkpoints" / "ckpt-0000000099" / "state.npz").write_bytes(b"broken")
    result = runner.invoke(cli, ["train", "--out", str(out), "--resume", "--max-steps", "5"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    warned = [i for i, line in enumerate(lines) if line.startswith("warning: checkpoint ckpt-0000000099 is unusable")]
    assert len(warned) == 1
    assert warned[0] < lines.index(f"resuming from step 3 in {out / 'checkpoints'}")


def every_command(command=cli, path=("textgen",)):
    """(path, command) for the group and every command under it."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from every_command(sub, (*path, name))


def test_every_option_of_every_command_has_help_and_one_long_name():
    import click

    for path, command in every_command():
        for param in command.params:
            if isinstance(param, click.Option):
                where = f"{' '.join(path)} {param.opts}"
                assert param.help, f"{where} has no help text"
                long_names = [name for name in param.opts + param.secondary_opts if name.startswith("--")]
                assert len(long_names) == 1, f"{where}: an alias documents nowhere what it is"


def test_explain_takes_a_prompt_like_every_other_command(runner, tiny_model_dir):
    result = runner.invoke(cli, ["explain", str(tiny_model_dir), "--prompt", "ROMEO:"])
    assert result.exit_code == 0, result.output
    old = runner.invoke(cli, ["explain", str(tiny_model_dir), "--text", "ROMEO:"])
    assert old.exit_code == 2 and "No such option '--text'" in old.output


def test_the_memory_experiment_replaces_earlier_results_only_with_overwrite(runner, tmp_path):
    out = tmp_path / "memory"
    out.mkdir()
    for name in ("results.json", "accuracy.png"):
        (out / name).write_text("an earlier experiment")
    tiny = ["experiment", "memory", "--tasks", "copy", "--distances", "4", "--cells", "lstm", "--seconds-per-run",
            "1", "--max-steps", "2", "--parameters", "600", "--batch-size", "4", "--no-plots", "--out", str(out)]
    refused = runner.invoke(cli, tiny)
    assert refused.exit_code == 1 and "results.json already exists; pass --overwrite" in refused.stderr
    assert (out / "results.json").read_text() == "an earlier experiment"
    replaced = runner.invoke(cli, [*tiny, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((out / "results.json").read_text())["settings"]["tasks"] == ["copy"]
    assert not (out / "accuracy.png").exists()  # the earlier experiment's plot would pass for this one's


def test_train_json_prints_only_the_final_metrics_on_stdout_and_quiet_silences_progress(runner, tiny_corpus,
                                                                                          tmp_path):
    out = tmp_path / "m"
    result = runner.invoke(cli, tiny_train_args(tiny_corpus, out) + ["--json", "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics == json.loads(runner.invoke(cli, ["info", str(out), "--json"]).stdout)["manifest"]["metrics"]
    assert metrics["steps"] == 3 and metrics["stop_reason"] == "max_steps" and metrics["best"]["val_loss"] > 0
    assert result.stderr == ""
    # Errors still show when quiet.
    failed = runner.invoke(cli, tiny_train_args(tiny_corpus, out) + ["--quiet"])
    assert failed.exit_code == 1 and failed.stderr.startswith("Error: a textgen model already exists there")
    # Without --quiet, progress goes to stderr and stdout holds the JSON alone.
    loud = runner.invoke(cli, ["train", "--out", str(out), "--resume", "--more-steps", "2", "--json"])
    assert loud.exit_code == 0, loud.output
    assert json.loads(loud.stdout)["steps"] == 5 and "resuming from step 3" in loud.stderr
