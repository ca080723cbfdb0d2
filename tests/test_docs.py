"""Every example in README.md and docs/*.md runs, and prints what its page shows.

How pages mark their examples (a new example is picked up by this convention alone):

* ```console is a shell session. A line starting with "$ " is a command (a line ending in
  "\\" goes on on the next one); the lines after it, up to the next command, are what it
  prints. A command is expected to exit with 0, unless the next command is "$ echo $?",
  whose output line is the exit code expected. A command ending in " &" runs in the
  background until a "$ wait". "127.0.0.1:PORT" addresses and "--port PORT" options get free
  ports here (the same free port for the same PORT).
* ```python is a program, run as a script; an ```output block right after it shows what it
  prints.
* ```bash is for the README's two opening blocks only (install and run the main job; install
  and run the tests); tests/test_readme.py runs the first and checks the ```output block that
  follows them. A ```bash block anywhere else fails this test.
* Any other info string (text, json, ...) marks a block that is not an example: a synopsis, a
  file layout. A fence with no info string fails this test: every block says what it is.

How they are run: each page in a working directory of its own, its examples in page order.
The README runs first, in a fresh folder; each docs page starts from a copy of what the
README's examples left (their models), as a reader who did the README has. The token cache and
downloads go to a folder inside the working directory, and `tinyshakespeare` is served from a
loopback server. `textgen` is `python -m textgen`, with `textgen train` shrunk by the TINY
options it does not set itself (and `textgen experiment memory` by EXPERIMENT_TINY);
`textgen.train` in Python examples is shrunk the same way.

What is checked: the exit code of every command and program; the lines of shown output that
KEY_LINES lists, each of which must have a matching line in the real output (numbers are
wildcards where a tiny model prints other ones; "..." inside a line stands for any text); and
that `textgen sample` and `textgen inspect` print the prompt first (when they print one sample
as text). Generated text itself differs with a tiny model and is not compared.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

# Appended to `textgen train` (and `textgen.train`) unless the command sets the option itself,
# so an example keeps what it is about (its seed, its step limit, an odd batch size).
TINY = {"--layers": "1", "--units": "8", "--embedding-dim": "4", "--seq-length": "20", "--batch-size": "4",
        "--max-steps": "2", "--val-fraction": "0.001", "--seed": "3"}
EXPERIMENT_TINY = {"--tasks": "copy", "--distances": "10", "--cells": "lstm", "--seconds-per-run": "1s",
                   "--max-steps": "3", "--parameters": "600", "--no-plots": None}  # None: a flag
COMMAND_TIMEOUT = 300  # seconds for any one command; past it the command fails

_NUMBER = r"[+-]?\d[\d,]*(?:\.\d+)?(?:e[+-]?\d+)?"


def _pattern(line: str, numbers: bool) -> str:
    """A regex for a shown line: "..." is any text; with ``numbers``, any number stands for any other."""
    parts = []
    for piece in re.split(r"(\.\.\.)", line):
        if piece == "...":
            parts.append(".*")
        elif numbers:
            parts.append(_NUMBER.join(re.escape(text) for text in re.split(_NUMBER, piece)))
        else:
            parts.append(re.escape(piece))
    return "".join(parts)


def _exact(line):
    return _pattern(line, numbers=False)


def _shape(line):
    return _pattern(line, numbers=True)


def _saved(line):
    # The stop reason, steps and losses of a tiny run differ; where the model went does not.
    prefix, _, rest = line.partition("stopped by ")
    return _shape(prefix) + "stopped by .*" + re.escape("; saved " + rest.split("; saved ", 1)[1])


def _columns(line):
    return r"\s+".join(re.escape(word) for word in line.split())


def _label(line):
    return re.escape(line.split()[0]) + r" {2,}.*"


# The shown lines that are checked, by how they start, and how each is compared.
KEY_LINES = [
    (r"(Error|Usage|warning): ", _exact),
    (r"(\[worker \d+\] )?stopped by .*; saved ", _saved),
    (r"(\[worker \d+\] )?((corpus|token cache|tokenizer|seed|model|nothing to do): |(downloading|resuming|following) )",
     _shape),
    (r"(model|tokenizer|corpus|training|best|versions|format) {2,}", _label),  # textgen info
    (r"(saved|wrote) ", _exact),
    (r"(traced|loss) ", _shape),
    (r"(TextModel\(|\{'loss': )", _shape),
    (r"(LSTM|GRU|RNN|PEEPHOLE|CIFG) layer \d+, unit ", _shape),  # textgen explain
    (r"(input|forget|candidate|output|update|reset) \w = |    (x\.W|h_prev\.U|b|sum|new c) +=|    (kept|added) {2,}|    h = ",
     _shape),
    (r"(long|short)-term memory", _exact),
    (r"(SignatureDef key|The given SavedModel|Result for output key)", _exact),
    (r"task +D +cell", _columns),  # textgen experiment memory: column widths follow the values
    (r"(plain|file|dir),", _exact),  # shell completion's answers
]


def check_output(shown: list[str], stdout: str, stderr: str, where: str) -> None:
    actual = (stdout + "\n" + stderr).splitlines()
    if any(line.strip() not in ("", "...") for line in shown):
        assert stdout.strip() or stderr.strip(), f"{where}: printed nothing; the page shows output"
    for line in shown:
        for start, compare in KEY_LINES:
            if re.match(start, line):
                pattern = re.compile(compare(line))
                assert any(pattern.fullmatch(candidate) for candidate in actual), (
                    f"{where}: no line like {line!r}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
                break


# --- reading pages ------------------------------------------------------------


@dataclasses.dataclass
class Block:
    info: str
    body: str
    line: int


@dataclasses.dataclass
class Command:
    text: str  # as written, continuation lines included
    shown: list[str]
    line: int


@dataclasses.dataclass
class Example:
    kind: str  # console or python
    line: int
    commands: list[Command] = dataclasses.field(default_factory=list)
    code: str = ""
    shown: list[str] = dataclasses.field(default_factory=list)


def fenced_blocks(markdown: str) -> list[Block]:
    blocks, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        match = re.match(r"^(`{3,})(.*)$", lines[i])
        if not match:
            i += 1
            continue
        fence, start, body = match.group(1), i, []
        i += 1
        while i < len(lines) and lines[i].rstrip() != fence:
            body.append(lines[i])
            i += 1
        blocks.append(Block(match.group(2).strip(), "\n".join(body), start + 1))
        i += 1
    return blocks


def console_commands(block: Block) -> list[Command]:
    commands: list[Command] = []
    lines = block.body.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            text, start = line[2:], i
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text += "\n" + lines[i]
            commands.append(Command(text, [], block.line + 1 + start))
        else:
            assert commands, f"line {block.line + 1 + i}: a console block starts with a '$ ' command"
            commands[-1].shown.append(line)
        i += 1
    return commands


def examples(page: Path) -> list[Example]:
    found: list[Example] = []
    previous = None
    bash_blocks = 0
    for block in fenced_blocks(page.read_text(encoding="utf-8")):
        where = f"{page.relative_to(ROOT)}:{block.line}"
        assert block.info, f"{where}: a code block without an info string (console, python, output, text, ...)"
        kind = block.info.split()[0]
        if kind == "console":
            found.append(Example("console", block.line, commands=console_commands(block)))
        elif kind == "python":
            found.append(Example("python", block.line, code=block.body))
        elif kind == "output":
            assert previous in ("python", "bash"), f"{where}: an output block follows no python example"
            if previous == "python":
                found[-1].shown = block.body.splitlines()
        elif kind == "bash":
            bash_blocks += 1
            assert page == README and bash_blocks <= 2 and previous in (None, "bash"), (
                f"{where}: bash blocks are the README's two opening blocks only; use console or python")
        previous = kind
    return found


def test_every_page_follows_the_convention():
    for page in PAGES:
        for example in examples(page):
            assert example.kind != "console" or example.commands, f"{page}:{example.line}: a console block without commands"


def test_pages_show_no_machine_specific_paths():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for path in ("/tmp/", "/root/", "/home/", "/Users/"):
            assert path not in text, f"{page.name} shows a path of the machine it was written on: {path}"


def test_links_between_pages_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            path = (page.parent / target).resolve()
            assert path.exists(), f"{page.name} links to {target}, which does not exist"


def test_readme_is_a_front_door_to_every_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 250
    assert "textgen-lstm" in text and ">=3.10" in text
    for link in (page.relative_to(ROOT).as_posix() for page in PAGES[1:]):
        assert f"]({link})" in text, f"the README does not link {link}"


# --- running pages ------------------------------------------------------------


SHIM = '''\
"""`textgen` as the docs tests run it: `python -m textgen`, with training shrunk."""
import os
import sys

SHRINK = {shrink!r}
args = sys.argv[1:]
for command, options in SHRINK:
    if args[:len(command)] == command:
        given = {{arg.split("=", 1)[0] for arg in args}}
        if "--more-steps" in given:  # an increment stands for the step limit; both together are refused
            given.add("--max-steps")
        if "--init-from" in given:  # a fine-tuned model has its base's architecture
            given.update(("--layers", "--units", "--embedding-dim"))
        for option, value in options.items():
            if option not in given:
                args += [option] if value is None else [option, value]
        break
os.execv(sys.executable, [sys.executable, "-m", "textgen", *args])
'''

PRELUDE = '''\
import textgen as _textgen

_train = _textgen.train


def _tiny_train(*args, **kwargs):
    """textgen.train, shrunk by the docs tests: the tiny settings an example does not set itself."""
    for key, value in {tiny!r}.items():
        if key == "max_steps" and "more_steps" in kwargs:  # an increment stands for the step limit
            continue
        if key in ("layers", "units", "embedding_dim") and kwargs.get("init_from"):  # the base's architecture
            continue
        kwargs.setdefault(key, value)
    return _train(*args, **kwargs)


_textgen.train = _tiny_train
del _textgen
'''


def _python_value(value: str):
    try:
        return int(value)
    except ValueError:
        return float(value)


def make_bin(folder: Path) -> Path:
    """A folder for PATH: `textgen` runs the shim, `python` this interpreter."""
    folder.mkdir(parents=True, exist_ok=True)
    shrink = [(["train"], TINY), (["experiment", "memory"], EXPERIMENT_TINY)]
    (folder / "textgen_shim.py").write_text(SHIM.format(shrink=shrink), encoding="utf-8")
    for name, target in (("textgen", f'"{sys.executable}" "{folder / "textgen_shim.py"}"'),
                         ("python", f'"{sys.executable}"')):
        script = folder / name
        script.write_text(f'#!/bin/sh\nexec {target} "$@"\n', encoding="utf-8")
        script.chmod(0o755)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PageRun:
    """Runs one page's examples in ``workdir``, in order, failing at the first that does not hold."""

    def __init__(self, page: Path, workdir: Path, bindir: Path, env: dict):
        self.page, self.workdir = page, workdir
        self.env = {**env, "PATH": f"{bindir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
                    "TEXTGEN_CACHE_DIR": str(workdir / ".cache" / "textgen")}
        self.scripts = workdir.parent / f"{workdir.name}-scripts"
        self.scripts.mkdir(exist_ok=True)
        self.ports: dict[str, str] = {}
        self.background: list[tuple[subprocess.Popen, str]] = []
        self.seconds: list[tuple[float, str]] = []  # how long each command or program took

    def where(self, line: int) -> str:
        return f"{self.page.relative_to(ROOT)}:{line}"

    def run(self) -> None:
        try:
            for example in examples(self.page):
                if example.kind == "console":
                    self.console(example)
                else:
                    self.python(example)
            assert not self.background, f"{self.page.name}: background commands without a '$ wait'"
        finally:
            for process, _ in self.background:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)

    def _ports(self, text: str) -> str:
        def swap(match):
            port = self.ports.setdefault(match.group(1), str(free_port()))
            return f"127.0.0.1:{port}"

        def swap_option(match):
            port = self.ports.setdefault(match.group(1), str(free_port()))
            return f"--port {port}"

        return re.sub(r"--port (\d+)", swap_option, re.sub(r"127\.0\.0\.1:(\d+)", swap, text))

    def _finish(self, process: subprocess.Popen, where: str) -> tuple[int, str, str]:
        started = time.monotonic()
        try:
            stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT)
            self.seconds.append((time.monotonic() - started, where))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"{where}: ran past {COMMAND_TIMEOUT}s\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
        return process.returncode, stdout, stderr

    def console(self, example: Example) -> None:
        commands = example.commands
        for index, command in enumerate(commands):
            where = f"{self.where(command.line)}: $ {command.text}"
            if command.text.strip() == "echo $?":
                continue  # checked with the command before it
            if command.text.strip() == "wait":
                for process, started in self.background:
                    code, stdout, stderr = self._finish(process, started)
                    assert code == 0, f"{started}: exit {code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
                self.background = []
                continue
            text = self._ports(command.text)
            if text.rstrip().endswith("&"):
                process = subprocess.Popen(["bash", "-c", text.rstrip()[:-1]], cwd=self.workdir, env=self.env,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                           start_new_session=True)
                self.background.append((process, where))
                continue
            process = subprocess.Popen(["bash", "-c", text], cwd=self.workdir, env=self.env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, start_new_session=True)
            code, stdout, stderr = self._finish(process, where)
            following = commands[index + 1] if index + 1 < len(commands) else None
            expected = 0
            if following is not None and following.text.strip() == "echo $?":
                expected = int(following.shown[0])
                assert expected == 0 or any(line.startswith("Error:") for line in command.shown), (
                    f"{where}: a failing example shows its Error: line")
            assert code == expected, f"{where}: exit {code}, expected {expected}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
            check_output(command.shown, stdout, stderr, where)
            self._check_prompt(command, stdout, where)

    def _check_prompt(self, command: Command, stdout: str, where: str) -> None:
        try:
            words = shlex.split(command.text.replace("\\\n", " "))
        except ValueError:
            return
        if words[:2] not in (["textgen", "sample"], ["textgen", "inspect"]) or "--prompt" not in words:
            return
        # Text that does not start with the one prompt: several samples, JSON lines, a file, a prompt loop.
        if ({"--num-samples", "--format", "--output", "-o", "--interactive", "-i"} & set(words)
                or words.count("--prompt") > 1):
            return
        prompt = words[words.index("--prompt") + 1]
        assert "\n".join(command.shown).startswith(prompt), f"{where}: the page's output does not start with the prompt"
        assert stdout.startswith(prompt), f"{where}: the output does not start with the prompt\n{stdout}"

    def python(self, example: Example) -> None:
        where = self.where(example.line)
        tiny = {option[2:].replace("-", "_"): _python_value(value) for option, value in TINY.items()}
        script = self.scripts / f"example_{example.line}.py"
        script.write_text(PRELUDE.format(tiny=tiny) + "\n" + self._ports(example.code) + "\n", encoding="utf-8")
        process = subprocess.Popen([sys.executable, str(script)], cwd=self.workdir, env=self.env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        code, stdout, stderr = self._finish(process, where)
        assert code == 0, f"{where}: exit {code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        check_output(example.shown, stdout, stderr, where)


@pytest.fixture(scope="module")
def docs_env(tmp_path_factory, loopback_server, tinyshakespeare_bytes):
    loopback_server.body = tinyshakespeare_bytes
    env = {key: value for key, value in os.environ.items()
           if key.lower() not in ("http_proxy", "https_proxy", "all_proxy", "tf_config")}
    env.update(no_proxy="*", TEXTGEN_TINYSHAKESPEARE_URL=loopback_server.url("/tinyshakespeare.txt"))
    return make_bin(tmp_path_factory.mktemp("bin")), env


def _run_page(page: Path, workdir: Path, bindir: Path, env: dict):
    """Run a page; return the exception that stopped it, or None, and the seconds it took."""
    started, run = time.monotonic(), PageRun(page, workdir, bindir, env)
    try:
        run.run()
    except BaseException as exc:  # pytest.fail raises a BaseException too; re-raised by the page's test
        return exc, time.monotonic() - started, run.seconds
    return None, time.monotonic() - started, run.seconds


@pytest.fixture(scope="module")
def page_runs(request, tmp_path_factory, docs_env):
    """The README's examples, then the selected docs pages, two at a time (each is mostly one process).

    Returns {page: future of (failure or None, seconds)}; the README's result is ready.
    """
    bindir, env = docs_env
    base = tmp_path_factory.mktemp("pages")
    readme_dir = base / "README"
    readme_dir.mkdir()
    done = concurrent.futures.Future()
    done.set_result(_run_page(README, readme_dir, bindir, env))
    runs = {README: done}
    selected = [item.callspec.params["page"] for item in request.session.items
                if item.originalname == "test_docs_page_examples" and hasattr(item, "callspec")]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for page in selected:
            if done.result()[0] is not None:
                failed = concurrent.futures.Future()
                failed.set_result((RuntimeError(f"the README's examples failed, and the pages start from them: "
                                                f"{done.result()[0]}"), 0.0, []))
                runs[page] = failed
                continue
            workdir = base / page.stem
            shutil.copytree(readme_dir, workdir, symlinks=True)
            runs[page] = pool.submit(_run_page, page, workdir, bindir, env)
        yield runs
        for future in runs.values():
            future.cancel()


def _outcome(runs, page):
    failure, seconds, commands = runs[page].result()
    print(f"{page.name}: {seconds:.0f}s" + "".join(f"\n  {took:5.1f}s  {where[:110]}" for took, where in commands))
    if failure is not None:
        raise failure


def test_readme_examples(page_runs):
    _outcome(page_runs, README)


@pytest.mark.parametrize("page", PAGES[1:], ids=lambda page: page.name)
def test_docs_page_examples(page, page_runs):
    _outcome(page_runs, page)
