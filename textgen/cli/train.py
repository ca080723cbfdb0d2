"""``textgen train``: the options of a training run, built into the library's settings objects.

The command only turns options into a ``TrainRequest`` (each settings object
checks itself) and hands it to ``textgen.training.run.run_training``; the
library imports when the command runs, so ``textgen --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from textgen.cli.completion import corpus_inputs, model_directories
from textgen.cli.edge import library_errors
from textgen.cli.options import ByteSize, CommaList, Duration, setting_option
from textgen.config import (FINE_TUNE_LEARNING_RATE, LEARNING_RATE, PRESETS, SAMPLE_LENGTH, SAMPLE_TEMPERATURES,
                            SCHEDULES, Limits, TrainConfig, WatchConfig, apply_preset, default_learning_rate,
                            draw_seed)
from textgen.data.corpus import ERROR_POLICIES
from textgen.model.cells import CELL_TYPES
from textgen.model.settings import ModelConfig
from textgen.tokenization.rules import LEVELS, SAMPLE_BYTES, TokenizerSettings
from textgen.training.budget import CHOOSABLE
from textgen.training.tf_config import DEFAULT_PEER_TIMEOUT, STRATEGIES, ClusterSettings


@click.command()
@click.argument("corpus", nargs=-1, shell_complete=corpus_inputs)
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Model directory to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing textgen model (or unfinished run) at --out.")
@click.option("--resume", is_flag=True,
              help="Continue the run checkpointed in --out exactly, with its stored settings.")
@click.option("--init-from", metavar="MODEL", shell_complete=model_directories,
              help="Fine-tune this model (a model directory or a shipped model's name): its architecture, "
                   "tokenizer and weights, with the corpus's new tokens added.")
@setting_option("--checkpoint-every", settings=TrainConfig, help="Steps between checkpoints (also at every epoch end).")
@click.option("--tokenizer", type=click.Choice(LEVELS), default=TokenizerSettings.level, show_default=True,
              help="Tokens: characters, words, or byte-pair-encoding subwords.")
@click.option("--vocab-size", type=int, help="Vocabulary size (word, bpe; an upper bound for char).")
@click.option("--tokenizer-sample-bytes", type=ByteSize(), default=SAMPLE_BYTES, show_default="100M",
              help="Train the tokenizer on at most this much of the corpus, sampled evenly (e.g. 500k, 100M, 1G).")
@click.option("--cell", type=click.Choice(CELL_TYPES), default=ModelConfig.cell, show_default=True,
              help="Recurrent cell of every layer: LSTM, peephole LSTM, coupled input-forget gates, GRU, plain RNN.")
@setting_option("--layers", settings=ModelConfig, help="Stacked recurrent layers.")
@setting_option("--units", settings=ModelConfig, help="Units per layer.")
@setting_option("--embedding-dim", settings=ModelConfig, help="Size of each token's embedding vector.")
@setting_option("--dropout", settings=ModelConfig, help="Dropout after each recurrent layer.")
@setting_option("--seq-length", settings=TrainConfig, help="Tokens per training window.")
@click.option("--val-seq-length", type=int,
              help="Tokens per validation window, each scored from an empty state (default: --seq-length).")
@setting_option("--batch-size", settings=TrainConfig, help="Windows per step (with a strategy: the global batch).")
@click.option("--epochs", type=int, show_default=str(TrainConfig.epochs),
              help="Passes over the training split, at most, in all (with --resume: a new total).")
@click.option("--max-steps", type=int,
              help="Stop once the run has taken this many optimizer steps in all (with --resume: a new total).")
@click.option("--max-time", type=Duration(),
              help="Stop once the run has trained this long in all, e.g. 300, 10m, 1h (with --resume: a new total, "
                   "earlier sessions counted).")
@click.option("--more-steps", type=int, help="With --resume: train this many steps more than the run has taken.")
@click.option("--more-time", type=Duration(),
              help="With --resume: train this much longer than the run has trained, e.g. 10m.")
@setting_option("--patience", settings=TrainConfig,
                help="Stop after this many epochs without a better validation loss (0: never).")
@click.option("--learning-rate", type=float, show_default=f"{LEARNING_RATE:g}; fine-tuning: {FINE_TUNE_LEARNING_RATE:g}",
              help="Adam's learning rate (with --schedule cosine: its peak).")
@click.option("--schedule", type=click.Choice(SCHEDULES), show_default=TrainConfig.schedule,
              help="Learning rate: constant, or cosine decay to 10% by the first limit (steps, time, epochs).")
@setting_option("--clipnorm", settings=TrainConfig, help="Clip the gradient's global norm.")
@setting_option("--val-fraction", settings=TrainConfig, help="The last part of the corpus held out for validation.")
@click.option("--preset", type=click.Choice(list(PRESETS)),
              help="A named recipe for the options not given. budget: --val-seq-length 256, and the model, "
                   "batch, learning rate and schedule that the scaling study found best for --max-time and the "
                   "vocabulary (docs/scaling.md).")
@click.option("--seed", type=int, help="Random seed (default: drawn at random, then printed and recorded).")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the corpus files.")
@click.option("--errors", type=click.Choice(ERROR_POLICIES), default="strict", show_default=True,
              help="What to do with bytes that do not decode.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=ClusterSettings.strategy, show_default=True,
              help="Train on one device, on this host's GPUs (mirrored), or on the hosts in TF_CONFIG (multiworker).")
@click.option("--devices", type=int,
              help="mirrored: how many GPUs (default all), or without a GPU, logical CPU devices (default 1).")
@click.option("--peer-timeout", type=Duration(), default=f"{DEFAULT_PEER_TIMEOUT:g}s", show_default=True,
              help="multiworker: how long to wait for the other workers to start and for each step's "
                   "all-reduce.")
@click.option("--sample-every", type=int, metavar="N",
              help="At every N-th validation, print samples of the model being trained to stderr.")
@click.option("--sample-temperatures", type=CommaList(float), default=",".join(f"{t:g}" for t in SAMPLE_TEMPERATURES),
              show_default=True, help="With --sample-every: one sample at each of these temperatures.")
@click.option("--sample-length", type=int, default=SAMPLE_LENGTH, show_default=True,
              help="With --sample-every: tokens per sample.")
@click.option("--tensorboard", type=click.Path(file_okay=False), metavar="DIR",
              help="Write TensorBoard event files to DIR: training and validation loss, learning rate, tokens/s.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the run's final metrics as one JSON object on stdout, and nothing else there.")
@click.option("--quiet", "-q", is_flag=True, help="Print no progress; warnings and errors still go to stderr.")
def train(corpus, out, overwrite, resume, init_from, checkpoint_every, tokenizer, vocab_size, tokenizer_sample_bytes, cell,
          layers, units, embedding_dim, dropout, seq_length, val_seq_length, batch_size, epochs, max_steps, max_time,
          more_steps, more_time, patience, learning_rate, schedule, clipnorm, val_fraction, preset, seed, encoding,
          errors, strategy, devices, peer_timeout, sample_every, sample_temperatures, sample_length, tensorboard,
          as_json, quiet):
    """Train a model on CORPUS and write it to --out.

    CORPUS is any number of files, folders, globs or named corpora
    (python, tinyshakespeare); the default is the python corpus.
    --init-from fine-tunes a trained model on CORPUS instead. With
    --resume, CORPUS may be left out: the run's own corpus is read again and
    must be unchanged. --epochs, --max-steps and --max-time are totals for
    the whole run; --more-steps and --more-time continue a resumed run by
    that much. Progress goes to stderr, and so do the samples of
    --sample-every; with --json, the final metrics go to stdout. Watching a
    run (--sample-every, --tensorboard) never changes what it trains, and a
    resumed run may add or drop it.
    """
    with library_errors():
        from textgen.training.plan import TrainRequest
        from textgen.training.run import run_training

        context = click.get_current_context()
        left_open = frozenset(name for name in CHOOSABLE
                              if context.get_parameter_source(name) is click.core.ParameterSource.DEFAULT)
        chosen = apply_preset(preset, schedule=schedule, val_seq_length=val_seq_length)
        if learning_rate is None:
            learning_rate = default_learning_rate(fine_tuning=init_from is not None and not resume)
        request = TrainRequest(
            out=Path(out), inputs=corpus, overwrite=overwrite, resume=resume, encoding=encoding, errors=errors,
            model=ModelConfig(cell=cell, layers=layers, units=units, embedding_dim=embedding_dim, dropout=dropout),
            training=TrainConfig(
                seq_length=seq_length, val_seq_length=chosen["val_seq_length"], batch_size=batch_size,
                patience=patience, learning_rate=learning_rate, schedule=chosen["schedule"] or TrainConfig.schedule,
                clipnorm=clipnorm, val_fraction=val_fraction, seed=seed if seed is not None else draw_seed(),
                checkpoint_every=checkpoint_every),
            tokenizer=TokenizerSettings(tokenizer, vocab_size, tokenizer_sample_bytes),
            cluster=ClusterSettings(strategy, devices, peer_timeout),
            limits=Limits(epochs=epochs, max_steps=max_steps, max_time=max_time, more_steps=more_steps,
                          more_time=more_time),
            init_from=init_from, preset=preset, left_open=left_open)
        if quiet:  # textgen's own log lines (downloads) are progress too
            logging.getLogger("textgen").setLevel(logging.WARNING)
        watch = WatchConfig(sample_every=sample_every, sample_temperatures=sample_temperatures,
                            sample_length=sample_length, tensorboard=tensorboard)
        model = run_training(request, quiet=quiet, watch=watch)
        if as_json:
            click.echo(json.dumps(model.manifest.get("metrics", {}), sort_keys=True))
