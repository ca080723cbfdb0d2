"""The ``textgen`` command: thin Click commands over the library.

Generated text goes to stdout; progress, warnings and errors go to stderr.
Exit codes: 0 success, 1 runtime error, 2 usage error, 75 a distributed run lost a
worker (restart with --resume), 130 interrupted.
Library modules are imported inside the commands so ``textgen --help`` answers
without loading TensorFlow. The commands that look inside a model or compare
cells (``inspect``, ``explain``, ``experiment``) live in ``textgen.cli_lab``,
and what all commands share in ``textgen.cli_common``; both are added here.
"""

from __future__ import annotations

import json
import logging
import sys

import click

from textgen.cluster_config import STRATEGIES
from textgen.cli_common import ByteSize, Duration, library_errors
from textgen.cli_lab import LAB_COMMANDS
from textgen.config import CELL_TYPES, PRESETS, SCHEDULES, TOKENIZER_SAMPLE_BYTES, ModelConfig, SampleConfig, TrainConfig

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
@click.option("--val-seq-length", type=int,
              help="Tokens per validation window, each scored from an empty state (default: --seq-length).")
@click.option("--batch-size", type=int, default=TrainConfig.batch_size, show_default=True)
@click.option("--epochs", type=int, default=TrainConfig.epochs, show_default=True)
@click.option("--max-steps", type=int, help="Stop after this many optimizer steps.")
@click.option("--max-time", type=Duration(), help="Stop after this long, e.g. 300, 10m, 1h.")
@click.option("--patience", type=int, default=TrainConfig.patience, show_default=True,
              help="Stop after this many epochs without a better validation loss (0: never).")
@click.option("--learning-rate", type=float, default=TrainConfig.learning_rate, show_default=True)
@click.option("--schedule", type=click.Choice(SCHEDULES), show_default=TrainConfig.schedule,
              help="Learning rate: constant, or cosine decay to 10% by the first limit (steps, time, epochs).")
@click.option("--clipnorm", type=float, default=TrainConfig.clipnorm, show_default=True, help="Clip the gradient's global norm.")
@click.option("--val-fraction", type=float, default=TrainConfig.val_fraction, show_default=True,
              help="The last part of the corpus held out for validation.")
@click.option("--preset", type=click.Choice(list(PRESETS)),
              help="A named recipe for the options not given. budget: --schedule cosine --val-seq-length 256, "
                   "the best model within a --max-time.")
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
          val_seq_length, batch_size, epochs, max_steps, max_time, patience, learning_rate, schedule, clipnorm,
          val_fraction, preset, seed,
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
                    seq_length=seq_length, val_seq_length=val_seq_length, batch_size=batch_size, epochs=epochs,
                    max_steps=max_steps, max_time=max_time, patience=patience or None, learning_rate=learning_rate,
                    schedule=schedule,
                    clipnorm=clipnorm, val_fraction=val_fraction, seed=seed, encoding=encoding, errors=errors,
                    strategy=strategy, devices=devices, peer_timeout=peer_timeout, preset=preset)


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

        from textgen.text_model import load

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
        from textgen.text_model import load

        path = load(model_dir).export(out)
        click.echo(f"saved {path}; load it with tf.saved_model.load('{path}')", err=True)


@cli.command()
@click.argument("model_dir", type=click.Path())
@click.argument("text", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("--errors", type=click.Choice(["strict", "replace", "ignore"]), default="strict", show_default=True)
def evaluate(model_dir, text, as_json, encoding, errors):
    """Measure a model's loss on TEXT (files, folders, globs or named corpora)."""
    with library_errors():
        from textgen.text_model import load
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


def main():
    """Console-script entry point."""
    cli(prog_name="textgen")


for command in LAB_COMMANDS:
    cli.add_command(command)
