"""The README's quick start runs, on a tiny configuration, exactly as written."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
# Appended to the README's train command: the same job, shrunk to seconds.
TINY = ["--layers", "1", "--units", "8", "--embedding-dim", "4", "--seq-length", "20", "--batch-size", "4",
        "--max-steps", "2", "--val-fraction", "0.001", "--seed", "3"]


def first_code_block(markdown: str) -> str:
    return re.search(r"```(?:bash|sh)?\n(.*?)```", markdown, re.S).group(1)


def textgen_commands(block: str) -> list[list[str]]:
    line = block.replace("\\\n", " ")
    return [shlex.split(part.strip()) for part in line.split("&&") if part.strip().startswith("textgen ")]


def run(args, cwd):
    result = subprocess.run([sys.executable, "-m", "textgen", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def test_readme_opens_with_the_main_job_and_the_test_command():
    markdown = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", markdown, re.S)
    assert "pip install -e ." in blocks[0] and "textgen train" in blocks[0] and "textgen sample" in blocks[0]
    assert blocks[1].strip() == 'pip install -e ".[test]" && pytest -q'


def test_quick_start_trains_on_the_default_corpus_and_samples(tmp_path):
    commands = textgen_commands(first_code_block(README.read_text(encoding="utf-8")))
    assert [c[1] for c in commands] == ["train", "sample"]
    train, sample = commands
    trained = run(train[1:] + TINY, tmp_path)
    assert "corpus: python" in trained.stderr and "bits/char" in trained.stderr
    sampled = run(sample[1:], tmp_path)
    prompt = sample[sample.index("--prompt") + 1]
    assert sampled.stdout.startswith(prompt) and len(sampled.stdout) > len(prompt) + 100
    loaded = subprocess.run(
        [sys.executable, "-c", "import textgen; m = textgen.load('models/python'); "
                               "print(m.generate('def ', length=20, temperature=0.8, seed=1))"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.startswith("def ") and len(loaded.stdout) == len("def ") + 20 + 1
