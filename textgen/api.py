"""The Python API's training entry point: ``train`` a model into a directory.

``train`` checks its settings, reads the corpus, learns the tokenizer, builds
the token cache and the model, runs the training loop (resumable, and
distributed when asked) and writes the model directory; it returns a
``TextModel``. That class and ``load``, which reads a model directory back,
live in ``textgen.text_model`` and are re-exported here, so ``textgen.api``
remains the one place to import the whole API from. The command line is a
thin layer over these functions.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from textgen import modeldir
from textgen.backend import keras
from textgen.config import (TOKENIZER_LEVELS, TOKENIZER_SAMPLE_BYTES, ModelConfig, TrainConfig, apply_preset,
                            check_tokenizer_sample_bytes)
from textgen.corpus import open_corpus
from textgen.data import TrainWindows, split_ids
from textgen.checkpoint import CheckpointManager
from textgen.distributed import DEFAULT_PEER_TIMEOUT, start_cluster
from textgen.errors import ConfigError, CorpusError, ModelDirError, TrainingError
from textgen.model import build_model
from textgen.progress import Progress
from textgen.shards import open_token_cache
from textgen.text_model import TextModel, load
from textgen.tokenizer import TextTokenizer
from textgen.training import Trainer

__all__ = ["TextModel", "load", "train"]


_M, _T = ModelConfig, TrainConfig  # defaults are read from the settings classes, the one place they live


def train(corpus: str | Sequence[str] | None = None, *, out, tokenizer: str = "char", vocab_size: int | None = None,
          tokenizer_sample_bytes: int = TOKENIZER_SAMPLE_BYTES,
          cell: str = _M.cell, layers: int = _M.layers, units: int = _M.units, embedding_dim: int = _M.embedding_dim,
          dropout: float = _M.dropout, seq_length: int = _T.seq_length, val_seq_length: int | None = None,
          batch_size: int = _T.batch_size,
          epochs: int = _T.epochs, max_steps: int | None = None, max_time: float | None = None,
          patience: int | None = _T.patience, learning_rate: float = _T.learning_rate, schedule: str | None = None,
          clipnorm: float = _T.clipnorm, val_fraction: float = _T.val_fraction, seed: int | None = None,
          checkpoint_every: int | None = _T.checkpoint_every, encoding: str = "utf-8", errors: str = "strict",
          overwrite: bool = False, resume: bool = False, log=None, quiet: bool = False,
          strategy: str = "default", devices: int | None = None,
          peer_timeout: float = DEFAULT_PEER_TIMEOUT, preset: str | None = None) -> TextModel:
    """Train a model on a corpus and write it to the directory ``out``.

    ``corpus`` is a path, folder, glob or named corpus, or a list of them
    (default: the ``python`` corpus). Settings and ``out`` are checked before
    any work, so a typo never costs a training run. Checkpoints go to
    ``out/checkpoints`` every ``checkpoint_every`` steps and at every epoch
    end; ``resume=True`` continues the run found there exactly, with its
    stored settings (``max_steps`` and ``max_time``, if given, replace the
    stored limits). Progress goes to ``log`` (default: stderr at call time),
    or nowhere with ``quiet``. On Ctrl-C the work so far is saved and
    ``KeyboardInterrupt`` is raised again.

    The tokenizer learns from at most ``tokenizer_sample_bytes`` of the
    corpus (an evenly spread sample of a larger one). The corpus is then
    tokenized once into an on-disk token cache (``textgen.shards``), reused
    by any later run on the same corpus with the same tokenizer, and training
    reads its windows from there: memory does not grow with the corpus.

    ``strategy`` trains on one device (``default``), on this host's GPUs or
    ``devices`` logical CPU devices (``mirrored``), or on the hosts of
    ``TF_CONFIG`` (``multiworker``, waiting up to ``peer_timeout`` seconds for
    its peers); see ``textgen.distributed``. ``batch_size`` is the global
    batch. Only the chief writes ``out``; every other worker takes the chief's
    settings (and, resuming, its checkpoint) and returns a model whose
    ``path`` is None.

    ``preset`` names a recipe from ``textgen.config.PRESETS`` (``"budget"``:
    cosine ``schedule`` and 256-token validation windows) whose settings apply
    where ``schedule`` and ``val_seq_length`` are left at None; without one,
    the learning rate is constant and validation windows are ``seq_length``
    tokens long.
    """
    chosen = apply_preset(preset, schedule=schedule, val_seq_length=val_seq_length)
    schedule, val_seq_length = chosen["schedule"] or _T.schedule, chosen["val_seq_length"]
    # First: a strategy's devices and collectives are fixed before TensorFlow runs anything.
    cluster = start_cluster(strategy, devices=devices, peer_timeout=peer_timeout)
    follower = cluster is not None and not cluster.is_chief  # takes the chief's settings, writes to scratch
    stream = None if quiet else (log or sys.stderr)
    progress = Progress(stream=cluster.progress_stream(stream) if cluster else stream)
    # A follower's checkpoints are thrown away at the end; one bundle at a time is enough.
    checkpoints = CheckpointManager(cluster.scratch_dir(), keep=1) if follower else CheckpointManager(out)
    inputs = [corpus] if isinstance(corpus, (str, Path)) else list(corpus or [])
    inputs = [str(item) for item in inputs]
    if follower:  # waits while the chief reads its corpus and trains the tokenizer
        stored, arrays = cluster.share_plan()
        tokenizer_json = stored.pop("tokenizer")
    elif resume:
        arrays, stored, tokenizer_json = checkpoints.load_latest()
    if resume or follower:
        try:
            config = ModelConfig.from_dict(stored["model_config"])
            limits = {key: value for key, value in (("max_steps", max_steps), ("max_time", max_time))
                      if value and not follower}
            train_config = TrainConfig.from_dict({**stored["train_config"], **limits})
        except (KeyError, TypeError, ConfigError) as exc:
            raise ModelDirError(f"the checkpoint's settings are unusable: {exc}. Received: out='{out}'") from None
        text_tokenizer = TextTokenizer.from_json(tokenizer_json)
        inputs = inputs or stored["corpus"]["inputs"]
        encoding, errors = stored["corpus"]["encoding"], stored["corpus"]["errors"]
        tokenizer_sample_bytes = stored["corpus"].get("tokenizer_sample_bytes", tokenizer_sample_bytes)
        if follower:
            progress.message(f"following the chief's run from step {(stored['loop'] or {}).get('steps', 0)}")
        else:
            _check_writable(Path(out))
            progress.message(f"resuming from step {stored['loop']['steps']} in {checkpoints.root}")
    else:
        if tokenizer not in TOKENIZER_LEVELS:
            raise ConfigError(f"tokenizer must be one of {', '.join(TOKENIZER_LEVELS)}. "
                              f"Received: tokenizer={tokenizer!r}")
        check_tokenizer_sample_bytes(tokenizer_sample_bytes)
        train_config = TrainConfig(seq_length=seq_length, val_seq_length=val_seq_length, batch_size=batch_size,
                                   epochs=epochs, max_steps=max_steps, max_time=max_time, patience=patience,
                                   learning_rate=learning_rate, schedule=schedule, clipnorm=clipnorm, val_fraction=val_fraction,
                                   seed=seed if seed is not None else secrets.randbelow(2**31),
                                   checkpoint_every=checkpoint_every)
        shape = dict(cell=cell, layers=layers, units=units, embedding_dim=embedding_dim, dropout=dropout)
        ModelConfig(vocab_size=2, **shape)  # check the shape settings before reading any text
        modeldir.check_destination(out, overwrite=overwrite)
        _check_writable(Path(out))
    if cluster is not None:
        cluster.check_batch_size(train_config.batch_size)

    source = open_corpus(inputs, encoding=encoding, errors=errors)
    progress.message(f"corpus: {source.description}, {source.total_bytes:,} bytes")
    corpus_sha256 = source.sha256()
    if (resume or follower) and corpus_sha256 != stored["corpus"]["sha256"]:
        raise CorpusError(f"the corpus differs from the one this run was trained on (sha256 {corpus_sha256[:12]}... "
                          f"instead of {stored['corpus']['sha256'][:12]}...). Received: corpus={inputs}")
    if not (resume or follower):
        if source.total_bytes > tokenizer_sample_bytes:
            progress.message(f"tokenizer: learning from an evenly spread sample of {tokenizer_sample_bytes:,} bytes")
        text_tokenizer = TextTokenizer.train_on_corpus(source, level=tokenizer, vocab_size=vocab_size,
                                                       sample_bytes=tokenizer_sample_bytes)
        config = ModelConfig(vocab_size=text_tokenizer.vocab_size, **shape)
    if cluster is not None and not follower:  # the other workers are waiting in ``share_plan`` for this
        cluster.share_plan({"model_config": config.to_dict(), "train_config": train_config.to_dict(),
                            "corpus": {"sha256": corpus_sha256, "inputs": _resolved(inputs), "encoding": encoding,
                                       "errors": errors, "tokenizer_sample_bytes": tokenizer_sample_bytes},
                            "loop": stored["loop"] if resume else None, "tokenizer": text_tokenizer.to_json()},
                           arrays if resume else None)
    # The ids live on disk; ``ids`` reads them lazily, a batch at a time.
    ids = open_token_cache(source, text_tokenizer, corpus_sha256=corpus_sha256, log=progress.message).tokens()
    progress.message(f"tokenizer: {text_tokenizer.level}, vocabulary {text_tokenizer.vocab_size}, "
                     f"{len(ids):,} tokens")
    train_ids, val_ids = split_ids(ids, train_config.val_fraction)
    windows = TrainWindows(train_ids, train_config.seq_length, train_config.batch_size, train_config.seed)

    progress.message(f"seed: {train_config.seed}")
    keras.utils.set_random_seed(train_config.seed)
    with cluster.scope() if cluster else contextlib.nullcontext():
        model = build_model(config)
    progress.message(f"model: {config.layers}x{config.units} {config.cell.upper()}, embedding {config.embedding_dim}, "
                     f"{config.parameter_count():,} parameters")
    corpus_info = {"description": source.description, "files": len(source.files), "bytes": source.total_bytes,
                   "sha256": corpus_sha256, "tokens": int(len(ids)),
                   "tokenizer_sample_bytes": tokenizer_sample_bytes}
    # Paths are stored resolved, so --resume works from any working directory.
    stored_inputs = _resolved(inputs)
    stored_settings = {"model_config": config.to_dict(), "train_config": train_config.to_dict(),
                       "corpus": {**corpus_info, "inputs": stored_inputs, "encoding": encoding, "errors": errors}}
    tokenizer_json = text_tokenizer.to_json()

    def save_checkpoint(trainer: Trainer) -> None:
        checkpoints.save(trainer.state.steps, trainer.state_arrays(),
                         {**stored_settings, "loop": trainer.state.to_dict()}, tokenizer_json)

    trainer = Trainer(model, config, train_config, text_tokenizer.token_lengths(), progress, save_checkpoint,
                      cluster=cluster)
    if (resume or follower) and stored.get("loop") is not None:
        trainer.restore(arrays, stored["loop"])
    else:
        checkpoints.remove_all()  # a fresh run (with --overwrite) starts without the old run's bundles
    checkpoints.clean_leftovers()
    result = trainer.fit(windows, val_ids)
    if result.steps == 0:
        if result.stop_reason == "interrupted":
            raise KeyboardInterrupt
        raise TrainingError("training stopped before any step finished; nothing was saved. Received: steps=0")

    # Interrupted before the first validation, the model keeps its latest
    # weights: unmeasured work is still work the user should not lose.
    text_model = TextModel(model, config, text_tokenizer, train_config)
    metrics = {"best": result.best, "history": result.history, "steps": result.steps, "tokens": result.tokens,
               "seconds": round(result.seconds, 2), "tokens_per_second": round(result.tokens_per_second, 1),
               "stop_reason": result.stop_reason}
    path = text_model.save(cluster.scratch_dir() / "model" if follower else out, overwrite=True, corpus=corpus_info,
                           metrics=metrics)
    if follower:  # written like the chief's, then thrown away: only the chief's model is kept
        cluster.remove_scratch()
        text_model.path, path = None, "nothing (the chief saves the model)"
    elif result.stop_reason != "interrupted":
        checkpoints.keep_latest_only()
    best = result.best
    measured = (f"best val loss {best['val_loss']:.4f} nats/token, {best['val_bits_per_char']:.4f} bits/char"
                if best else "not validated")
    progress.message(f"stopped by {result.stop_reason} after {result.steps} steps in {result.seconds:.0f}s "
                     f"({result.tokens_per_second:,.0f} tokens/s); {measured}; saved {path}")
    if result.stop_reason == "interrupted":
        raise KeyboardInterrupt
    return text_model


def _resolved(inputs: list[str]) -> list[str]:
    """Corpus inputs with paths made absolute, so --resume works from any working directory."""
    return [str(Path(item).resolve()) if Path(item).exists() else item for item in inputs]


def _check_writable(out: Path) -> None:
    """Fail now, not after an hour of training, if ``out`` cannot be written.

    The probe goes to ``out`` or, if it does not exist yet, to its nearest
    existing parent, so a run that fails early leaves no empty folder behind.
    """
    probe_dir = out
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    try:
        with tempfile.NamedTemporaryFile(prefix=".tmp-probe-", dir=probe_dir):
            pass
    except OSError as exc:
        raise ModelDirError(f"cannot write to the output directory: {exc.strerror or exc}. "
                            f"Received: out='{out}'") from None
