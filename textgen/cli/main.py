"""The ``textgen`` command group: its commands, gathered from one module per family, and its entry point.

Generated text goes to stdout; progress, warnings and errors go to stderr.
Exit codes: 0 success, 1 runtime error, 2 usage error, 75 a distributed run
lost a worker (restart with --resume), 130 interrupted (``textgen.cli.edge``).
Every command imports the library only when it runs, so ``textgen --help``
answers without loading TensorFlow.
"""

from __future__ import annotations

import logging
import sys

import click

from textgen.cli.corpora import corpora
from textgen.cli.lab import cells, experiment, explain, inspect_command, plot
from textgen.cli.serve import serve
from textgen.cli.train import train
from textgen.cli.use import evaluate, export, info, models, sample


def _setup_logging() -> None:
    """Show textgen's own log lines (downloads, warnings) on stderr, and no one else's."""
    logger = logging.getLogger("textgen")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="textgen-lstm", prog_name="textgen")
def cli():
    """Train stacked LSTM text generators, sample them, and inspect them."""
    _setup_logging()


for command in (train, sample, export, evaluate, info, models, serve, corpora, inspect_command, cells, explain, plot,
                experiment):
    cli.add_command(command)


def main():
    """Console-script entry point."""
    cli(prog_name="textgen")
