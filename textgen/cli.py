"""The ``textgen`` command: thin Click commands over the library.

Generated text goes to stdout; progress, warnings and errors go to stderr.
Exit codes: 0 success, 1 runtime error, 2 usage error, 75 a distributed run lost a
worker (restart with --resume), 130 interrupted.
Library modules are imported inside the commands so ``textgen --help`` answers
without loading TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import warnings

import click

from textgen.cluster_config import STRATEGIES
from textgen.config import CELL_TYPES, SCHEDULES, TOKENIZER_SAMPLE_BYTES, ModelConfig, SampleConfig, TrainConfig
from textgen.trace import QUANTITIES  # plain NumPy: --help stays fast

EXIT_INTERRUPTED = 130
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([smh]?)\s*$")
_BYTE_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(?:([kmgt])(i?))?b?\s*$", re.IGNORECASE)


class Duration(click.ParamType):
    """A time span: ``90`` or ``90s`` (seconds), ``15m``, ``2h``; returned in seconds."""

    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        match = _DURATION.match(str(value))
        if not match or float(match.group(1)) <= 0:
            self.fail(f"expected a positive duration such as 90s, 15m or 2h. Received: {value!r}", param, ctx)
        return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


class ByteSize(click.ParamType):
    """A number of bytes: ``500000``, ``100k``, ``100M``, ``2G`` (powers of 1000), ``64MiB`` (of 1024)."""

    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        match = _BYTE_SIZE.match(str(value))
        if match:
            unit, binary = (match.group(2) or "").lower(), bool(match.group(3))
            size = int(float(match.group(1)) * (1024 if binary else 1000) ** " kmgt".index(unit or " "))
            if size >= 1:
                return size
        self.fail(f"expected a positive size such as 500000, 100M or 2G. Received: {value!r}", param, ctx)


@contextlib.contextmanager
def library_errors():
    """Turn library errors into one-line messages with their exit codes, here and only here."""
    from textgen.errors import TextgenError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except TextgenError as exc:
            error = click.ClickException(str(exc))
            error.exit_code = exc.exit_code
            raise error from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        finally:
            for warning in caught:
                if issubclass(warning.category, UserWarning):
                    click.echo(f"warning: {warning.message}", err=True)


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


@cli.command()
@click.argument("corpus", nargs=-1)
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Model directory to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing textgen model (or unfinished run) at --out.")
@click.option("--resume", is_flag=True,
              help="Continue the run checkpointed in --out exactly, with its stored settings.")
@click.option("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every, show_default=True,
              help="Steps between checkpoints (also written at every epoch end).")
@click.option("--tokenizer", type=click.Choice(["char", "word", "bpe"]), default="char", show_default=True)
@click.option("--vocab-size", type=int, help="Vocabulary size (word, bpe; an upper bound for char).")
@click.option("--tokenizer-sample-bytes", type=ByteSize(), default=TOKENIZER_SAMPLE_BYTES, show_default="100M",
              help="Train the tokenizer on at most this much of the corpus, sampled evenly (e.g. 500k, 100M, 1G).")
@click.option("--cell", type=click.Choice(CELL_TYPES), default=ModelConfig.cell, show_default=True,
              help="Recurrent cell of every layer: LSTM, peephole LSTM, coupled input-forget gates, GRU, plain RNN.")
@click.option("--layers", type=int, default=ModelConfig.layers, show_default=True, help="Stacked recurrent layers.")
@click.option("--units", type=int, default=ModelConfig.units, show_default=True, help="Units per layer.")
@click.option("--embedding-dim", type=int, default=ModelConfig.embedding_dim, show_default=True)
@click.option("--dropout", type=float, default=ModelConfig.dropout, show_default=True, help="Dropout after each recurrent layer.")
@click.option("--seq-length", type=int, default=TrainConfig.seq_length, show_default=True, help="Tokens per training window.")
@click.option("--batch-size", type=int, default=TrainConfig.batch_size, show_default=True)
@click.option("--epochs", type=int, default=TrainConfig.epochs, show_default=True)
@click.option("--max-steps", type=int, help="Stop after this many optimizer steps.")
@click.option("--max-time", type=Duration(), help="Stop after this long, e.g. 300, 10m, 1h.")
@click.option("--patience", type=int, default=TrainConfig.patience, show_default=True,
              help="Stop after this many epochs without a better validation loss (0: never).")
@click.option("--learning-rate", type=float, default=TrainConfig.learning_rate, show_default=True)
@click.option("--schedule", type=click.Choice(SCHEDULES), default=TrainConfig.schedule, show_default=True,
              help="Learning rate: constant, or cosine decay to 10% by the first limit (steps, time, epochs).")
@click.option("--clipnorm", type=float, default=TrainConfig.clipnorm, show_default=True, help="Clip the gradient's global norm.")
@click.option("--val-fraction", type=float, default=TrainConfig.val_fraction, show_default=True,
              help="The last part of the corpus held out for validation.")
@click.option("--seed", type=int, help="Random seed (default: drawn at random, then printed and recorded).")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the corpus files.")
@click.option("--errors", type=click.Choice(["strict", "replace", "ignore"]), default="strict", show_default=True,
              help="What to do with bytes that do not decode.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="default", show_default=True,
              help="Train on one device, on this host's GPUs (mirrored), or on the hosts in TF_CONFIG (multiworker).")
@click.option("--devices", type=int,
              help="mirrored: how many GPUs (default all), or without a GPU, logical CPU devices (default 1).")
@click.option("--peer-timeout", type=Duration(), default="300s", show_default=True,
              help="multiworker: how long to wait for the other workers to start and for each step's "
                   "all-reduce.")
def train(corpus, out, overwrite, resume, checkpoint_every, tokenizer, vocab_size, tokenizer_sample_bytes, cell, layers, units, embedding_dim, dropout, seq_length,
          batch_size, epochs, max_steps, max_time, patience, learning_rate, schedule, clipnorm, val_fraction, seed,
          encoding, errors, strategy, devices, peer_timeout):
    """Train a model on CORPUS and write it to --out.

    CORPUS is any number of files, folders, globs or named corpora
    (python, tinyshakespeare); the default is the python corpus. With
    --resume, CORPUS may be left out: the run's own corpus is read again and
    must be unchanged.
    """
    with library_errors():
        from textgen.api import train as train_model

        train_model(list(corpus), out=out, overwrite=overwrite, resume=resume, checkpoint_every=checkpoint_every,
                    tokenizer=tokenizer, vocab_size=vocab_size, tokenizer_sample_bytes=tokenizer_sample_bytes,
                    cell=cell, layers=layers, units=units, embedding_dim=embedding_dim, dropout=dropout,
                    seq_length=seq_length, batch_size=batch_size, epochs=epochs, max_steps=max_steps,
                    max_time=max_time, patience=patience or None, learning_rate=learning_rate, schedule=schedule,
                    clipnorm=clipnorm, val_fraction=val_fraction, seed=seed, encoding=encoding, errors=errors,
                    strategy=strategy, devices=devices, peer_timeout=peer_timeout)


@cli.command()
@click.argument("model_dir", type=click.Path())
@click.option("--prompt", "-p", default="", help="Text to continue (default: start of a line).")
@click.option("--length", "-n", type=int, default=SampleConfig.length, show_default=True, help="Tokens to generate.")
@click.option("--temperature", "-t", type=float, default=SampleConfig.temperature, show_default=True, help="0 means greedy.")
@click.option("--top-k", type=int, default=0, show_default=True, help="Sample among the k likeliest (0: off).")
@click.option("--top-p", type=float, default=1.0, show_default=True, help="Nucleus sampling mass (1: off).")
@click.option("--num-samples", type=int, default=1, show_default=True, help="Samples, generated as one batch.")
@click.option("--stop", multiple=True, help="End a sample before this text (repeatable).")
@click.option("--seed", type=int, help="Random seed (default: drawn at random and printed).")
def sample(model_dir, prompt, length, temperature, top_k, top_p, num_samples, stop, seed):
    """Generate text from a trained model; the text goes to stdout."""
    with library_errors():
        import secrets

        from textgen.api import load

        model = load(model_dir)
        if seed is None:
            seed = secrets.randbelow(2**31)
            click.echo(f"seed: {seed}", err=True)
        # Text is printed as it is generated; on Ctrl-C what exists so far is
        # printed before exiting with 130.
        shown = [""] * num_samples
        stream = model.stream(prompt, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                              seed=seed, num_samples=num_samples, stop=list(stop))
        if num_samples == 1:
            click.echo(prompt, nl=False)
        try:
            for texts in stream:
                if num_samples == 1:
                    click.echo(texts[0][len(shown[0]):], nl=False)
                shown = texts
        finally:
            if num_samples == 1:
                click.echo("")
            else:
                click.echo("\n\n".join(prompt + text for text in shown))


@cli.command()
@click.argument("model_dir", type=click.Path())
@click.option("--out", "-o", type=click.Path(file_okay=False),
              help="Where to write the SavedModel (default: MODEL_DIR/saved_model); must not exist.")
def export(model_dir, out):
    """Export a model as a TensorFlow SavedModel: prompts in, generated text out."""
    with library_errors():
        from textgen.api import load

        path = load(model_dir).export(out)
        click.echo(f"saved {path}; load it with tf.saved_model.load('{path}')", err=True)


@cli.command("inspect")
@click.argument("model_dir", type=click.Path())
@click.option("--prompt", "-p", required=True, help="Text to read; every token of it is recorded.")
@click.option("--continue", "continuation", type=int, default=0, show_default=True,
              help="Also sample this many tokens after the prompt, and record them.")
@click.option("--temperature", "-t", type=float, default=SampleConfig.temperature, show_default=True,
              help="Temperature of the continuation; 0 means greedy.")
@click.option("--seed", type=int, help="Random seed of the continuation (default: drawn at random and printed).")
@click.option("--layer", type=int, default=0, show_default=True, help="Layer the page and PNG show first.")
@click.option("--quantity", type=click.Choice(QUANTITIES),
              help="Gate or state shown first (default: cell state, or hidden state for cells without one).")
@click.option("--unit", type=int, help="Unit shown first (default: the one that varies most over the text).")
@click.option("--out", "-o", type=click.Path(file_okay=False),
              help="Folder for trace.html, trace.png and trace.json (default: MODEL_DIR/inspect).")
@click.option("--overwrite", is_flag=True, help="Replace the report files already in --out.")
def inspect_command(model_dir, prompt, continuation, temperature, seed, layer, quantity, unit, out, overwrite):
    """See inside the model: every layer's gates and states, token by token.

    Writes a self-contained HTML page (the text coloured by one unit, with
    pickers for layer, gate or state, and unit), a PNG heatmap and the raw
    values as JSON. The text that was traced goes to stdout.
    """
    with library_errors():
        import secrets
        from pathlib import Path

        from textgen.api import load
        from textgen.inspect_report import check_destination, select, write_report

        model = load(model_dir)
        out = Path(out) if out else Path(model.path) / "inspect"
        check_destination(out, overwrite=overwrite)  # before the work, not after it
        if continuation and seed is None:
            seed = secrets.randbelow(2**31)
            click.echo(f"seed: {seed}", err=True)
        trace = model.trace(prompt, continuation=continuation, temperature=temperature, seed=seed)
        chosen = select(trace, layer, quantity, unit)
        paths = write_report(trace, out, layer=chosen.layer, quantity=chosen.quantity, unit=chosen.unit,
                             overwrite=overwrite)
        click.echo("".join(trace.tokens))
        click.echo(f"traced {len(trace.tokens)} tokens ({trace.generated_from} given, "
                   f"{len(trace.tokens) - trace.generated_from} generated) through {len(trace.layers)} "
                   f"{trace.cell} layer(s); showing layer {chosen.layer}, {chosen.quantity}, unit {chosen.unit}",
                   err=True)
        for path in paths.values():
            click.echo(f"wrote {path}", err=True)


@cli.command()
@click.argument("model_dir", type=click.Path())
@click.option("--text", "-p", required=True, help="Text the model reads; the step explained is one of its tokens.")
@click.option("--position", type=int, default=-1, show_default=True,
              help="Which token of --text to explain (0 is the first, -1 the last).")
@click.option("--layer", type=int, default=0, show_default=True)
@click.option("--unit", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as one JSON object.")
def explain(model_dir, text, position, layer, unit, as_json):
    """Walk through one unit's step by hand, with the model's own weights and states.

    Prints every weighted sum (with its largest terms), every sigmoid and
    tanh, what share of the long-term memory was kept, what was added, and
    what became the short-term memory.
    """
    with library_errors():
        import dataclasses

        from textgen.api import load
        from textgen.explain import explain_step, render

        explanation = explain_step(load(model_dir), text, position=position, layer=layer, unit=unit)
        if as_json:
            click.echo(json.dumps(dataclasses.asdict(explanation), sort_keys=True))
        else:
            click.echo(render(explanation))


@cli.command()
@click.argument("model_dir", type=click.Path())
@click.argument("text", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("--errors", type=click.Choice(["strict", "replace", "ignore"]), default="strict", show_default=True)
def evaluate(model_dir, text, as_json, encoding, errors):
    """Measure a model's loss on TEXT (files, folders, globs or named corpora)."""
    with library_errors():
        from textgen.api import load
        from textgen.corpus import open_corpus

        model = load(model_dir)
        source = open_corpus(list(text), encoding=encoding, errors=errors)
        result = model.evaluate(source.read_text())
        if as_json:
            click.echo(json.dumps(result, sort_keys=True))
        else:
            click.echo(f"loss {result['loss']:.4f} nats/token, {result['bits_per_char']:.4f} bits/char, "
                       f"perplexity {result['perplexity']:.2f} over {result['tokens']:,} tokens "
                       f"({result['characters']:,} characters)")


@cli.command()
@click.argument("model_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and settings as JSON.")
def info(model_dir, as_json):
    """Describe a model directory: settings, corpus, metrics, versions."""
    with library_errors():
        from textgen import modeldir

        path, manifest = modeldir.read_manifest(model_dir)
        config = modeldir.read_config(path)
        if as_json:
            click.echo(json.dumps({"config": config, "manifest": manifest}, indent=2, sort_keys=True))
            return
        model, training = config.get("model", {}), config.get("training", {})
        metrics, corpus = manifest.get("metrics", {}), manifest.get("corpus", {})
        best = metrics.get("best") or {}
        lines = [
            f"model      {model.get('layers')}x{model.get('units')} {str(model.get('cell', 'lstm')).upper()}, embedding {model.get('embedding_dim')}, "
            f"dropout {model.get('dropout')}",
            f"tokenizer  {config.get('tokenizer', {}).get('level')}, vocabulary {model.get('vocab_size')}",
            f"corpus     {corpus.get('description')}, {corpus.get('bytes', 0):,} bytes, {corpus.get('tokens', 0):,} tokens",
            f"training   seed {training.get('seed')}, {metrics.get('steps')} steps in {metrics.get('seconds')}s, "
            f"{metrics.get('tokens_per_second')} tokens/s, stopped by {metrics.get('stop_reason')}",
        ]
        if best:
            lines.append(f"best       val loss {best['val_loss']:.4f} nats/token, "
                         f"{best['val_bits_per_char']:.4f} bits/char (epoch {best['epoch']}, step {best['step']})")
        libraries = manifest.get("libraries", {})
        lines.append("versions   " + ", ".join(f"{k} {v}" for k, v in sorted(libraries.items())))
        lines.append(f"format     {manifest.get('format')} v{manifest.get('format_version')}, "
                     f"created {manifest.get('created')}")
        click.echo("\n".join(lines))


class CommaList(click.ParamType):
    """A comma-separated list, ``10,50,100``; items converted by ``item`` (str or int)."""

    name = "list"

    def __init__(self, item=str):
        self.item = item

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            return list(value)
        items = [part.strip() for part in str(value).split(",") if part.strip()]
        try:
            return [self.item(part) for part in items]
        except ValueError:
            self.fail(f"expected a comma-separated list of {self.item.__name__} values. Received: {value!r}", param, ctx)


@cli.group()
def experiment():
    """Controlled experiments on the recurrent cells."""


@experiment.command("memory")
@click.option("--distances", type=CommaList(int), default="10,50,100,200", show_default=True,
              help="Dependency distances D, in tokens.")
@click.option("--tasks", type=CommaList(), default="copy,brackets,quote", show_default=True)
@click.option("--cells", type=CommaList(), default="rnn,gru,lstm", show_default=True)
@click.option("--seconds-per-run", type=Duration(), default="20s", show_default=True,
              help="CPU time each model trains for (this process, all threads; compiling not counted).")
@click.option("--max-steps", type=int, default=5000, show_default=True, help="Step cap for each model.")
@click.option("--parameters", "--units-budget", "parameters", type=int, default=23_000, show_default=True,
              help="Parameter count every model is sized to, as closely as whole units allow.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--loss", "loss_on", type=click.Choice(["dependent", "all"]), default="dependent", show_default=True,
              help="Train on the dependent positions only, or on every next token.")
@click.option("--forget-bias", type=float,
              help="Initial bias of the gate that keeps the state (lstm forget gate, gru update gate); "
                   "default: the model's own initialisation, U(-1/sqrt(units), 1/sqrt(units)).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "-o", type=click.Path(file_okay=False), default="memory-experiment", show_default=True,
              help="Directory for results.json, table.txt and the PNG plots.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots (and the need for matplotlib).")
def memory(distances, tasks, cells, seconds_per_run, max_steps, parameters, batch_size, loss_on, forget_bias, seed,
           out, no_plots):
    """Train rnn, gru and lstm on tasks that need a memory of D steps; print the accuracy table.

    Every model has about the same parameter count and trains for the same
    CPU time; accuracy is measured at the position that depends on the
    symbol D tokens earlier. Also measures how the gradient reaching the
    hidden state k steps back shrinks with k. Progress goes to stderr.
    """
    with library_errors():
        from textgen.experiment import MemorySettings, run_memory_experiment

        settings = MemorySettings(tasks=tuple(tasks), distances=tuple(distances), cells=tuple(cells),
                                  seconds_per_run=seconds_per_run, max_steps=max_steps, parameters=parameters,
                                  batch_size=batch_size, loss_on=loss_on, forget_bias=forget_bias, seed=seed)
        result = run_memory_experiment(settings, out=out, plots=not no_plots,
                                       progress=lambda line: click.echo(line, err=True))
        click.echo(result["table"])
        click.echo(f"wrote {out}", err=True)


def main():
    """Console-script entry point."""
    cli(prog_name="textgen")
