"""``textgen sample --interactive``: a prompt loop in the terminal over a ``Conversation``.

Each line read is either a command (``/temperature 0.5``, ``/reset``,
``/help``, ...) or text for the model to continue from everything said so
far. Continuations go to stdout; the prompt mark, messages and errors go to
stderr. Ctrl-C during a continuation ends that continuation at the next
chunk and the loop goes on; Ctrl-C at the prompt drops the line; Ctrl-D
(end of input) or ``/quit`` leaves with exit code 0.
"""

from __future__ import annotations

import signal

import click

from textgen.cli.edge import library_errors

# Commands that change a setting: the setting, and how its value is read.
SETTING_COMMANDS = {"/temperature": ("temperature", float), "/top-k": ("top_k", int), "/top-p": ("top_p", float),
                    "/length": ("length", int), "/seed": ("seed", int)}

HELP = """\
Type text and press Enter: the model reads it after everything said so far and continues.
An empty line lets the model go on. A line starting with // sends the text from its second slash.
  /temperature T   sampling temperature (0 is greedy)
  /top-k K         sample among the K likeliest tokens (0: off)
  /top-p P         nucleus sampling mass (1: off)
  /length N        tokens per continuation
  /seed N          random seed, 0 to 2147483647
  /settings        show the settings
  /show            print the conversation so far
  /reset           forget the conversation and start a new one
  /help            this list
  /quit            leave (as Ctrl-D does)
Ctrl-C stops a continuation; Ctrl-D leaves."""


def _settings_line(settings) -> str:
    return (f"length: {settings.length}, temperature: {settings.temperature}, top-k: {settings.top_k}, "
            f"top-p: {settings.top_p}, seed: {settings.seed}")


def converse(conversation) -> None:
    """Run the prompt loop until the end of input or ``/quit``."""
    click.echo(f"interactive; /help lists the commands, Ctrl-D leaves. {_settings_line(conversation.settings)}",
               err=True)
    while True:
        click.echo("> ", err=True, nl=False)
        try:
            line = input()
        except EOFError:
            click.echo("", err=True)
            return
        except KeyboardInterrupt:
            click.echo("", err=True)
            continue
        try:
            with library_errors():
                if line.startswith("/") and not line.startswith("//"):
                    if not _command(conversation, line):
                        return
                else:
                    _turn(conversation, line[1:] if line.startswith("//") else line)
        except click.ClickException as error:
            error.show()


def _turn(conversation, text: str) -> None:
    """Continue the conversation after ``text``, printing the continuation as it comes; Ctrl-C ends it early."""
    pieces = conversation.say(text)  # checked here, before anything is printed
    interrupted = []
    previous = signal.getsignal(signal.SIGINT)
    # Ctrl-C only raises a flag, read between chunks: the conversation then holds exactly the
    # pieces printed, and a KeyboardInterrupt can never land halfway through keeping one.
    signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        for piece in pieces:
            click.echo(piece, nl=False)
            if interrupted:
                break
    finally:
        pieces.close()
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    click.echo("")  # the line break before the next prompt is the terminal's, not the text's
    if interrupted:
        click.echo("stopped", err=True)


def _command(conversation, line: str) -> bool:
    """Carry out one command; False means leave."""
    name, _, argument = line.strip().partition(" ")
    argument = argument.strip()
    if name == "/quit":
        return False
    if name == "/help":
        click.echo(HELP, err=True)
    elif name == "/settings":
        click.echo(_settings_line(conversation.settings), err=True)
    elif name == "/show":
        click.echo(conversation.text)
    elif name == "/reset":
        conversation.reset()
        click.echo("a new conversation", err=True)
    elif name in SETTING_COMMANDS:
        setting, kind = SETTING_COMMANDS[name]
        try:
            value = kind(argument)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise click.ClickException(f"{name} needs {what}. Received: {setting}={argument!r}") from None
        conversation.update(**{setting: value})
        click.echo(_settings_line(conversation.settings), err=True)
    else:
        raise click.ClickException(f"unknown command; /help lists them. Received: command={name!r}")
    return True
