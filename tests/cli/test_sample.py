"""textgen sample for people and for scripts: checked before writing, JSON lines, files, many prompts, a prompt loop."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from textgen.cli.main import cli
from textgen.config import SEED_MAX


@pytest.fixture
def runner():
    return CliRunner()


def sample(runner, model_dir, *args, **kwargs):
    return runner.invoke(cli, ["sample", str(model_dir), *args], **kwargs)


def one_error_line(result):
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    return len(errors) == 1 and "Traceback" not in result.output


def refused(runner, model_dir, tmp_path, args, code, message):
    """Run ``args`` (with {missing} and {taken} paths) and check that it was refused and wrote nothing at all."""
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    values = {"missing": str(tmp_path / "missing"), "taken": str(taken)}
    result = sample(runner, model_dir, *args.format(**values).split())
    assert result.exit_code == code, result.output
    assert message in result.stderr and one_error_line(result)
    assert result.stdout == ""
    assert taken.read_text() == "mine" and sorted(path.name for path in tmp_path.iterdir()) == ["taken.txt"]


@pytest.mark.parametrize("option, value", [
    ("--length", "-5"), ("--length", "0"), ("--temperature", "nan"), ("--top-k", "999"), ("--top-p", "0"),
    ("--num-samples", "5000"), ("--seed", "-1"), ("--seed", str(SEED_MAX + 1)),
])
def test_a_setting_out_of_range_is_refused_and_writes_nothing_at_all(runner, tiny_model_dir, tmp_path, option,
                                                                      value):
    refused(runner, tiny_model_dir, tmp_path, f"{option} {value}", 2,
            f"Received: {option[2:].replace('-', '_')}={value}")


@pytest.mark.parametrize("args, message", [
    ("--num-samples 4096 --length 100000", "Received: tokens=409604096"),
    ("--prompt a --prompt b --num-samples 3000", "Received: rows=6000"),
    ("--logprobs", "Received: format='text'"),
    ("--interactive --stop x", "Received: stop=('x',)"),
    ("--interactive --format jsonl", "Received: format='jsonl'"),
])
def test_a_request_too_large_or_options_that_do_not_go_together_write_nothing(runner, tiny_model_dir, tmp_path,
                                                                              args, message):
    refused(runner, tiny_model_dir, tmp_path, args, 2, message)


def test_files_that_cannot_be_read_or_written_are_refused_before_any_work(runner, tiny_model_dir, tmp_path):
    refused(runner, tiny_model_dir, tmp_path, "--prompt-file {missing}", 1, "Received: prompt_file=")
    refused(runner, tiny_model_dir, tmp_path, "--output {taken}", 1, "--overwrite")
    refused(runner, tiny_model_dir, tmp_path, "--output {missing}/out.txt", 1, "Received: output=")


# Runs textgen in a child and reports its exit code, stdout size and peak memory, alone.
MEASURE = r"""
import resource, subprocess, sys
result = subprocess.run([sys.executable, "-m", "textgen", *sys.argv[1:]], capture_output=True, timeout=600)
print(result.returncode, len(result.stdout), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
"""


def test_a_huge_request_is_refused_before_it_allocates_or_writes(tiny_model_dir):
    """The tester's case: 100,000,000 samples took 2.4 GB and wrote 199,999,999 newlines before exiting 2."""
    result = subprocess.run([sys.executable, "-c", MEASURE, "sample", str(tiny_model_dir),
                             "--num-samples", "100000000"], capture_output=True, text=True, timeout=900)
    code, stdout_bytes, peak_megabytes = map(int, result.stdout.split())
    assert (code, stdout_bytes) == (2, 0)
    assert peak_megabytes < 1500  # textgen with TensorFlow loaded takes about 700 MB here


def test_the_samples_of_many_prompts_are_one_batch_prompt_by_prompt(runner, tiny_model, tiny_model_dir, tmp_path):
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("JULIET:\n\nO Romeo\n")
    result = sample(runner, tiny_model_dir, "-p", "ROMEO:", "--prompt-file", str(prompt_file), "--num-samples", "2",
                    "-n", "20", "--seed", "6", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    prompts = ["ROMEO:", "JULIET:", "", "O Romeo"]
    assert [record["prompt"] for record in records] == [prompt for prompt in prompts for _ in range(2)]
    expected = tiny_model.generate(prompts, length=20, seed=6, num_samples=2, include_prompt=False)
    assert [record["text"] for record in records] == expected  # the very batch the Python API runs
    text = sample(runner, tiny_model_dir, "-p", "ROMEO:", "--prompt-file", str(prompt_file), "--num-samples", "2",
                  "-n", "20", "--seed", "6")
    rows = [record["prompt"] for record in records]
    assert text.stdout == "\n\n".join(prompt + continuation for prompt, continuation in zip(rows, expected)) + "\n"


def test_jsonl_gives_each_sample_with_its_settings_stop_reason_and_log_probabilities(runner, tiny_model,
                                                                                     tiny_model_dir):
    result = sample(runner, tiny_model_dir, "-p", "ROMEO:", "--num-samples", "4", "-n", "60", "--stop", "\n",
                    "--stop", "e", "--temperature", "0.9", "--top-k", "20", "--seed", "3", "--format", "jsonl",
                    "--logprobs")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(record["index"] for record in records) == [0, 1, 2, 3]
    samples = tiny_model.generate("ROMEO:", length=60, stop=["\n", "e"], temperature=0.9, top_k=20, seed=3,
                                  num_samples=4, details=True)
    for record in records:
        expected = samples[record["index"]]
        assert record["text"] == expected.text and record["seed"] == 3
        assert record["settings"] == {"length": 60, "temperature": 0.9, "top_k": 20, "top_p": 1.0, "stop": ["\n", "e"]}
        assert record["stop_reason"] in ("stop", "length") and record["stop_reason"] == expected.stop_reason
        assert record["stop_string"] == expected.stop_string
        assert [token["text"] for token in record["tokens"]] == expected.tokens
        assert record["logprob"] == pytest.approx(sum(token["logprob"] for token in record["tokens"]), abs=1e-4)
        assert record["logprob"] == pytest.approx(expected.logprob, abs=1e-5) and record["logprob"] < 0
    plain = json.loads(sample(runner, tiny_model_dir, "-n", "5", "--seed", "1", "--format", "jsonl").stdout)
    assert "tokens" not in plain and plain["num_tokens"] == 5 and plain["stop_reason"] == "length"


def test_each_json_line_is_written_as_its_sample_finishes(tiny_model, capsys):
    from textgen.cli.sample_output import SampleOutput, write_samples

    stream = tiny_model.stream(["ROMEO:"] * 6, length=200, stop="\n", seed=2, chunk_tokens=4, details=True)
    seen = []

    def watched():
        for samples in stream:
            # Everything written so far is exactly the samples finished before this chunk.
            seen.append(capsys.readouterr().out)
            yield samples

    write_samples(watched(), ["ROMEO:"] * 6, SampleOutput(None, False), jsonl=True, tokens=False)
    seen.append(capsys.readouterr().out)
    lines_per_chunk = [len(out.splitlines()) for out in seen]
    assert sum(lines_per_chunk) == 6 and lines_per_chunk[-1] < 6  # not all at the end
    assert sum(1 for count in lines_per_chunk if count) > 1  # they came out chunk after chunk


def test_output_writes_the_file_atomically_and_never_over_one_without_overwrite(runner, tiny_model_dir, tmp_path):
    arguments = ["-p", "ROMEO:", "-n", "30", "--seed", "2", "--format", "jsonl"]
    printed = sample(runner, tiny_model_dir, *arguments).stdout
    out = tmp_path / "samples.jsonl"
    written = sample(runner, tiny_model_dir, *arguments, "-o", str(out))
    assert written.exit_code == 0 and written.stdout == "" and f"wrote {out}" in written.stderr
    assert out.read_text() == printed
    out.write_text("mine")
    refused = sample(runner, tiny_model_dir, *arguments, "-o", str(out))
    assert refused.exit_code == 1 and "--overwrite" in refused.stderr and out.read_text() == "mine"
    replaced = sample(runner, tiny_model_dir, "-p", "ROMEO:", "-n", "30", "--seed", "2", "-o", str(out),
                      "--overwrite")
    assert replaced.exit_code == 0 and out.read_text() == sample(runner, tiny_model_dir, "-p", "ROMEO:", "-n", "30",
                                                                 "--seed", "2").stdout
    folder = tmp_path / "folder"
    folder.mkdir()
    into_folder = sample(runner, tiny_model_dir, "-o", str(folder), "--overwrite")
    assert into_folder.exit_code == 2 and "is a directory" in into_folder.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["folder", "samples.jsonl"]


def interrupted_after(chunks):
    """TextModel.stream, cut by a Ctrl-C after ``chunks`` chunks."""
    from textgen.text_model import TextModel

    real = TextModel.stream

    def stream(self, *args, **kwargs):
        items = real(self, *args, **kwargs)

        def cut():
            for index, item in enumerate(items):
                if index == chunks:
                    raise KeyboardInterrupt
                yield item
        return cut()
    return stream


def test_ctrl_c_writes_what_exists_and_marks_unfinished_samples(runner, tiny_model_dir, tmp_path, monkeypatch):
    from textgen.text_model import TextModel

    monkeypatch.setattr(TextModel, "stream", interrupted_after(1))  # seed 4: two samples stop within 32 tokens
    arguments = ["-p", "ROMEO:", "--num-samples", "3", "-n", "300", "--stop", "\n", "--seed", "4", "--format", "jsonl"]
    result = sample(runner, tiny_model_dir, *arguments)
    assert result.exit_code == 130 and "interrupted" in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(record["index"] for record in records) == [0, 1, 2]
    assert {record["stop_reason"] for record in records} == {"stop", "interrupted"}
    out = tmp_path / "out.jsonl"
    to_file = sample(runner, tiny_model_dir, *arguments, "-o", str(out))
    assert to_file.exit_code == 130 and not out.exists() and "not written" in to_file.stderr


def test_interactive_turns_carry_on_and_commands_change_the_settings(runner, tiny_model, tiny_model_dir):
    typed = "\n".join(["ROMEO:", "/temperature 0", "/top-k 99999", "/frobnicate", "/length x", "", "/show",
                       "/temperature 0.8", "/reset", "ROMEO:", "/settings"]) + "\n"
    result = sample(runner, tiny_model_dir, "--interactive", "--seed", "9", "-n", "25", input=typed)
    assert result.exit_code == 0, result.output
    first = tiny_model.generate("ROMEO:", length=25, seed=9, include_prompt=False)
    greedy = tiny_model.generate("ROMEO:" + first, length=25, temperature=0, include_prompt=False)
    # Turns: the first, the greedy one that went on from it, /show, and the first again after /reset.
    assert result.stdout == f"{first}\n{greedy}\nROMEO:{first}{greedy}\n{first}\n"
    errors = [line for line in result.stderr.splitlines() if "Error:" in line]
    assert len(errors) == 3 and "Received: top_k=99999" in errors[0]
    assert "Received: command='/frobnicate'" in errors[1] and "Received: length='x'" in errors[2]
    assert "temperature: 0.8, top-k: 0," in result.stderr.splitlines()[-2]  # /settings; the bad top-k was refused


def test_ctrl_c_in_a_continuation_ends_it_and_the_loop_goes_on(runner, tiny_model_dir, monkeypatch):
    import os
    import signal

    from textgen.generation.conversation import Conversation

    real = Conversation._turn

    def turn_with_ctrl_c(self, run, text):
        for index, piece in enumerate(real(self, run, text)):
            if index == 1:
                os.kill(os.getpid(), signal.SIGINT)  # as the terminal sends it, during the continuation
            yield piece

    monkeypatch.setattr(Conversation, "_turn", turn_with_ctrl_c)
    result = sample(runner, tiny_model_dir, "-i", "--seed", "1", "-n", "100000", input="ROMEO:\n/show\n")
    assert result.exit_code == 0, result.output
    continuation, shown = result.stdout.split("\n")[:2]
    assert 0 < len(continuation) < 100 and "stopped" in result.stderr
    assert shown == "ROMEO:" + continuation  # the conversation holds exactly what was printed
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
