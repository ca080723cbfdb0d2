"""The README's quick start runs, on a tiny configuration, exactly as written, and prints what the README shows."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

from test_docs import check_output, fenced_blocks

README = Path(__file__).resolve().parents[1] / "README.md"
# Appended to the README's train command: the same job, shrunk to seconds.
TINY = ["--layers", "1", "--units", "8", "--embedding-dim", "4", "--seq-length", "20", "--batch-size", "4",
        "--max-steps", "2", "--val-fraction", "0.001", "--seed", "3"]


def readme_blocks():
    return fenced_blocks(README.read_text(encoding="utf-8"))


def textgen_commands(block: str) -> list[list[str]]:
    line = block.replace("\\\n", " ")
    return [shlex.split(part.strip()) for part in line.split("&&") if part.strip().startswith("textgen ")]


def run(args, cwd, env=None):
    result = subprocess.run([sys.executable, "-m", "textgen", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    return result


def test_readme_opens_with_the_main_job_and_the_test_command():
    blocks = readme_blocks()
    assert blocks[0].info == "bash" and blocks[1].info == "bash"
    assert "pip install -e ." in blocks[0].body and "textgen train" in blocks[0].body
    assert "textgen sample" in blocks[0].body
    assert blocks[1].body.strip() == 'pip install -e ".[test]" && pytest -q'
    # What the main job prints comes next, in an output block.
    assert blocks[2].info == "output"


def test_quick_start_trains_on_the_default_corpus_and_samples(tmp_path):
    blocks = readme_blocks()
    commands = textgen_commands(blocks[0].body)
    assert [c[1] for c in commands] == ["sample", "train", "sample"]
    shipped, train, sample = commands
    # A token cache of its own, so the run writes it as the README's first run does.
    env = {**os.environ, "TEXTGEN_CACHE_DIR": str(tmp_path / ".cache" / "textgen")}
    # Right after the install, before anything is trained: a model that ships with textgen.
    assert shipped[2] == "shakespeare" and not (tmp_path / "shakespeare").exists()
    first = run(shipped[1:], tmp_path, env)
    shipped_prompt = shipped[shipped.index("--prompt") + 1]
    assert first.stdout.startswith(shipped_prompt) and len(first.stdout) == len(shipped_prompt) + 200 + 1
    assert blocks[2].body.startswith(shipped_prompt)
    trained = run(train[1:] + TINY, tmp_path, env)
    assert "corpus: python" in trained.stderr and "bits/char" in trained.stderr
    sampled = run(sample[1:], tmp_path, env)
    prompt = sample[sample.index("--prompt") + 1]
    assert sampled.stdout.startswith(prompt) and len(sampled.stdout) > len(prompt) + 100
    shown = blocks[2].body.splitlines()
    check_output(shown, sampled.stdout, trained.stderr + sampled.stderr, "README.md, what the main job prints")
    assert any(line.startswith(prompt) for line in shown), "the README shows the sample"
    loaded = subprocess.run(
        [sys.executable, "-c", "import textgen; m = textgen.load('models/my-python'); "
                               "print(m.generate('def ', length=20, temperature=0.8, seed=1))"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.startswith("def ") and len(loaded.stdout) == len("def ") + 20 + 1
