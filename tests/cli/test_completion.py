"""Shell completion, run through Click's own mechanism: the variables a shell sets, and bash itself."""

import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from textgen.cli.main import cli


@pytest.fixture
def workdir(tmp_path, tiny_model_dir, monkeypatch):
    """A folder as a user has it: two models (one under models/), a folder of notes, a text file."""
    shutil.copytree(tiny_model_dir, tmp_path / "shakespeare")
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "tiny")
    (tmp_path / "models" / "notes").mkdir()
    (tmp_path / "scratch").mkdir()
    (tmp_path / ".hidden-model").mkdir()
    shutil.copytree(tiny_model_dir, tmp_path / ".hidden-model" / "m")
    (tmp_path / "tiny.txt").write_text("text")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def complete(shell, words, current=None):
    """What ``textgen`` answers the shell completing ``words`` (the last one being typed), one line each."""
    cword = len(words) - 1
    env = {"_TEXTGEN_COMPLETE": f"{shell}_complete", "COMP_WORDS": " ".join(words),
           "COMP_CWORD": words[-1] if shell == "fish" else str(cword)}
    result = CliRunner().invoke(cli, [], prog_name="textgen", env=env)
    assert result.exit_code == 0, result.output
    return [line for line in result.stdout.splitlines() if line]  # no candidate: one empty line


@pytest.mark.parametrize("words, expected", [
    (["textgen", "sa"], ["plain,sample"]),
    (["textgen", "co"], ["plain,corpora"]),
    (["textgen", "train", "--more"], ["plain,--more-steps", "plain,--more-time"]),
    (["textgen", "explain", "x", "--pr"], ["plain,--prompt"]),
    (["textgen", "corpora", "--fetch", "t"], ["plain,tinyshakespeare"]),
])
def test_commands_options_and_choices_complete(words, expected):
    assert complete("bash", words) == expected


@pytest.mark.parametrize("command", ["sample", "export", "info", "evaluate", "inspect", "explain", "cells"])
def test_a_model_directory_completes_to_folders_that_hold_a_model(workdir, command):
    # Folders first, then the shipped models' names; the folder "shakespeare" hides the shipped model's name.
    assert complete("bash", ["textgen", command, ""]) == ["plain,models/tiny", "plain,shakespeare", "plain,python"]
    assert complete("bash", ["textgen", command, "models/"]) == ["plain,models/tiny"]
    assert complete("bash", ["textgen", command, "sh"]) == ["plain,shakespeare"]
    assert complete("bash", ["textgen", command, "py"]) == ["plain,python"]
    assert complete("bash", ["textgen", command, "sc"]) == []  # a folder without a model
    assert complete("bash", ["textgen", command, ".h"]) == ["plain,.hidden-model/m"]


@pytest.mark.parametrize("command", [["train"], ["evaluate", "shakespeare"]])
def test_a_corpus_completes_to_the_named_corpora_and_to_files(workdir, command):
    # The file item lets the shell complete paths itself; it comes first (bash starts its list afresh there).
    assert complete("bash", ["textgen", *command, "t"]) == ["file,t", "plain,tinyshakespeare"]
    assert complete("bash", ["textgen", *command, "p"]) == ["file,p", "plain,python"]


def test_zsh_and_fish_get_the_same_candidates_in_their_formats(workdir):
    assert complete("zsh", ["textgen", "info", "models/"]) == ["plain", "models/tiny", "_"]
    assert complete("fish", ["textgen", "info", "models/"]) == ["plain,models/tiny"]
    assert complete("zsh", ["textgen", "train", "tiny"]) == [
        "file", "tiny", "_", "plain", "tinyshakespeare",
        "Tiny Shakespeare, 1.1 MB of plays (downloaded once from GitHub and cached)"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash here")
def test_bash_completes_with_the_script_the_docs_tell_users_to_source(workdir):
    bindir = workdir / "bin"
    bindir.mkdir()
    (bindir / "textgen").write_text(f'#!/bin/sh\nexec "{sys.executable}" -X importtime -m textgen "$@"\n')
    (bindir / "textgen").chmod(0o755)
    script = """
        eval "$(_TEXTGEN_COMPLETE=bash_source textgen 2>/dev/null)"
        for line in "textgen sam" "textgen info models/" "textgen train --max-t"; do
            COMP_WORDS=($line); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=()
            _textgen_completion textgen
            echo "${COMPREPLY[*]}"
        done
    """
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "--norc", "-c", script], cwd=workdir, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["sample", "models/tiny", "--max-time"]
    # Every Tab runs textgen: it answers without loading TensorFlow (-X importtime lists each import).
    assert "import time:" in result.stderr and "tensorflow" not in result.stderr
