"""textgen sample --interactive in a real terminal (tmux): type, read, change a setting, Ctrl-C, Ctrl-D."""

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed: .ci/run installs it with apt-get where it can")

STARTUP_SECONDS = 300  # TensorFlow's import and the first compiled chunk, on a busy 2-core machine
STEP_SECONDS = 120


class Terminal:
    """One tmux session on a server of its own, running ``command`` in a 160x50 pane that stays after it exits."""

    def __init__(self, command: str):
        self.socket = f"textgen-test-{uuid.uuid4().hex[:12]}"
        self.tmux("start-server", ";", "set-option", "-g", "history-limit", "50000", ";",
                  "new-session", "-d", "-s", "t", "-x", "160", "-y", "50", command, ";",
                  "set-option", "-t", "t", "remain-on-exit", "on")

    def tmux(self, *args) -> str:
        return subprocess.run(["tmux", "-L", self.socket, "-f", os.devnull, *args], check=True, capture_output=True,
                              text=True, timeout=60).stdout

    def screen(self) -> str:
        """Everything the pane has shown, wrapped lines joined, trailing spaces dropped."""
        text = self.tmux("capture-pane", "-p", "-J", "-t", "t", "-S", "-", "-E", "-")
        return "\n".join(line.rstrip() for line in text.splitlines()).rstrip("\n")

    def type(self, *keys) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def wait_for(self, what, seconds: float = STEP_SECONDS, exit: bool = False) -> str:
        """Wait until ``what(screen)`` holds; return the screen. The program must stay alive unless ``exit``."""
        deadline = time.monotonic() + seconds
        while True:
            screen = self.screen()
            if what(screen):
                return screen
            if time.monotonic() > deadline or (not exit and self.pane("pane_dead") == "1"):
                pytest.fail(f"the terminal never showed what was awaited; it shows:\n{screen[-3000:]}")
            time.sleep(0.2)

    def pane(self, field: str) -> str:
        return self.tmux("display-message", "-p", "-t", "t", f"#{{{field}}}").strip()

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=60)


def at_prompt(screen: str) -> bool:
    """The loop waits for a line: the last thing on the screen is its "> " mark."""
    return screen.splitlines()[-1:] == [">"]


def test_a_session_in_a_real_terminal(tiny_model, tiny_model_dir):
    # The shell reports the exit code on the screen: tmux 3.3a's #{pane_dead_status} is sometimes left empty.
    command = (f"TF_CPP_MIN_LOG_LEVEL=3 {shlex.quote(sys.executable)} -m textgen sample "
               f"{shlex.quote(str(tiny_model_dir))} --interactive --seed 1 --length 30; echo textgen exited with $?")
    terminal = Terminal(command)
    try:
        terminal.wait_for(lambda screen: "/help lists the commands" in screen and at_prompt(screen), STARTUP_SECONDS)

        # Type a prompt, see its continuation: the model's text, as the Python API gives it.
        terminal.type("ROMEO:", "Enter")
        screen = terminal.wait_for(lambda screen: "> ROMEO:\n" in screen and at_prompt(screen), STARTUP_SECONDS)
        shown = screen.split("> ROMEO:\n", 1)[1].rsplit("\n>", 1)[0]
        expected = tiny_model.generate("ROMEO:", length=30, seed=1, include_prompt=False)
        assert shown == "\n".join(line.rstrip() for line in expected.split("\n"))

        # Change settings.
        terminal.type("/temperature 0.5", "Enter")
        terminal.wait_for(lambda screen: "temperature: 0.5," in screen and at_prompt(screen))
        terminal.type("/length 1000000", "Enter")
        terminal.wait_for(lambda screen: "length: 1000000, temperature: 0.5," in screen and at_prompt(screen))

        # Ctrl-C during a long continuation stops it, not the program.
        terminal.type("JULIET:", "Enter")
        terminal.wait_for(lambda screen: len(screen.split("> JULIET:\n", 1)[-1]) > 40 and "> JULIET:\n" in screen)
        terminal.type("C-c")
        screen = terminal.wait_for(lambda screen: "\nstopped" in screen and at_prompt(screen))
        assert len(screen.split("> JULIET:\n", 1)[1]) < 500_000  # far short of 1,000,000 tokens
        assert "textgen exited" not in screen

        # The loop is alive and keeps its settings.
        terminal.type("/settings", "Enter")
        terminal.wait_for(lambda screen: screen.count("length: 1000000, temperature: 0.5,") == 2 and at_prompt(screen))

        # Ctrl-D leaves, with exit code 0.
        terminal.type("C-d")
        screen = terminal.wait_for(lambda screen: re.search(r"textgen exited with \d+", screen), exit=True)
        assert re.search(r"textgen exited with \d+", screen).group() == "textgen exited with 0"
    finally:
        terminal.close()
