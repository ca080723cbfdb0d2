"""A training run from start to end: ``train`` (the Python API) and ``run_training`` (what it and the CLI call).

``run_training`` reads top to bottom: start the strategy, plan the run
(fresh, resumed or follower: ``textgen.training.plan``), read the corpus,
learn or take the tokenizer, build the token cache and the model, run the
loop (``textgen.training.loop``) with checkpoints, and write the model
directory. It returns the trained ``TextModel``.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Sequence

from textgen import model_dir
from textgen.backend import keras
from textgen.config import (SAMPLE_LENGTH, SAMPLE_TEMPERATURES, Limits, TrainConfig, WatchConfig, apply_preset,
                            default_learning_rate, draw_seed, parse_duration, parse_size)
from textgen.data.corpus import open_corpus, texts_file
from textgen.data.token_cache import open_token_cache
from textgen.data.windows import TrainWindows, split_ids
from textgen.errors import ConfigError, TrainingError
from textgen.model.network import build_model, grow_vocabulary, named_weights
from textgen.model.settings import ModelConfig
from textgen.text_model import TextModel, load
from textgen.tokenization.rules import SAMPLE_BYTES, TokenizerSettings
from textgen.tokenization.tokenizer import TextTokenizer
from textgen.training import budget
from textgen.training.checkpoints import CheckpointManager
from textgen.training.distributed import start_cluster
from textgen.training.loop import LoopState, Trainer
from textgen.training.plan import NEW_TOKENS_LIMIT, TrainRequest, plan_run
from textgen.training.progress import Progress
from textgen.training.tf_config import DEFAULT_PEER_TIMEOUT, ClusterSettings
from textgen.training.watch import Watch, check_callbacks

_M, _T = ModelConfig, TrainConfig  # defaults are read from the settings classes, the one place they live


def train(corpus: str | Sequence[str] | None = None, *, out, texts: str | Sequence[str] | None = None,
          init_from: str | None = None, tokenizer: str = "char", vocab_size: int | None = None,
          tokenizer_sample_bytes: int | str = SAMPLE_BYTES,
          cell: str = _M.cell, layers: int | None = None, units: int | None = None, embedding_dim: int | None = None,
          dropout: float = _M.dropout, seq_length: int = _T.seq_length, val_seq_length: int | None = None,
          batch_size: int | None = None,
          epochs: int | None = None, max_steps: int | None = None, max_time: float | str | None = None,
          more_steps: int | None = None, more_time: float | str | None = None, patience: int = _T.patience,
          learning_rate: float | None = None, schedule: str | None = None,
          clipnorm: float = _T.clipnorm, val_fraction: float = _T.val_fraction, seed: int | None = None,
          checkpoint_every: int | None = _T.checkpoint_every, encoding: str = "utf-8", errors: str = "strict",
          overwrite: bool = False, resume: bool = False, log=None, quiet: bool = False,
          strategy: str = "default", devices: int | None = None,
          peer_timeout: float | str = DEFAULT_PEER_TIMEOUT, preset: str | None = None,
          sample_every: int | None = None, sample_temperatures: Sequence[float] = SAMPLE_TEMPERATURES,
          sample_length: int = SAMPLE_LENGTH, tensorboard: str | None = None, callbacks=None) -> TextModel:
    """Train a model on a corpus and write it to the directory ``out``.

    ``corpus`` is a path, folder, glob or named corpus, or a list of them
    (default: the ``python`` corpus). Settings and ``out`` are checked before
    any work, so a typo never costs a training run. Checkpoints go to
    ``out/checkpoints`` every ``checkpoint_every`` steps and at every epoch
    end; ``resume=True`` continues the run found there exactly, with its
    stored settings. Progress goes to ``log`` (default: stderr at call time),
    or nowhere with ``quiet``. On Ctrl-C the work so far is saved and
    ``KeyboardInterrupt`` is raised again.

    The run stops at its first limit. ``epochs`` (default 20), ``max_steps``
    and ``max_time`` are totals for the whole run: resumed, its earlier
    sessions count, time included. ``more_steps`` and ``more_time`` continue
    a resumed run by that much from where it stands. On resume, each limit
    given replaces the stored one of its kind and the others stay; a run
    that a limit already stops has nothing to do, says so, writes nothing,
    and the model saved in ``out`` is returned.

    The tokenizer learns from at most ``tokenizer_sample_bytes`` of the
    corpus (an evenly spread sample of a larger one). The corpus is then
    tokenized once into an on-disk token cache (``textgen.data.token_cache``),
    reused by any later run on the same corpus with the same tokenizer, and
    training reads its windows from there: memory does not grow with the corpus.

    ``strategy`` trains on one device (``default``), on this host's GPUs or
    ``devices`` logical CPU devices (``mirrored``), or on the hosts of
    ``TF_CONFIG`` (``multiworker``, waiting up to ``peer_timeout`` seconds for
    its peers); see ``textgen.training.distributed``. ``batch_size`` is the
    global batch. Only the chief writes ``out``; every other worker takes the
    chief's settings (and, resuming, its checkpoint) and returns a model whose
    ``path`` is None.

    Durations (``max_time``, ``more_time``, ``peer_timeout``) are seconds or strings such
    as ``"90s"``, ``"10m"``, ``"2h"``, and ``tokenizer_sample_bytes`` a number
    or a string such as ``"500k"``, ``"100M"``, ``"64MiB"``: the spellings the
    command line takes, read by the same parsers (``textgen.config``).
    ``patience=0`` never stops early.

    ``texts`` (a string, or a list of strings joined by newlines) trains on
    text held in memory instead of ``corpus``: it is written once to a file in
    the cache named by its sha256 (``textgen.data.corpus.texts_file``) and read
    like any corpus file, with the same validation split and exact resume.

    ``init_from`` fine-tunes a trained model (a model directory, or a shipped
    model's name such as ``"shakespeare"``): the run keeps its architecture,
    tokenizer and weights, adds the tokens of the corpus that its vocabulary
    lacks as new embedding rows and output columns (every existing one keeps
    its values), and records the model and its manifest's sha256 in the
    settings. Settings that would change the weights' shapes are refused.
    ``learning_rate`` defaults to ``textgen.config.LEARNING_RATE`` from
    scratch and to ``FINE_TUNE_LEARNING_RATE`` when fine-tuning.

    ``preset`` names a recipe from ``textgen.config.PRESETS``. ``"budget"``
    validates in 256-token windows and, for a fresh run with a ``max_time``,
    puts the scaling study's choice for that time and the vocabulary
    (``textgen.training.budget``) in place of ``layers``, ``units``,
    ``embedding_dim``, ``batch_size``, ``learning_rate`` and ``schedule``
    left at None. Without a preset, settings left at None take their
    defaults: a constant learning rate, and validation windows ``seq_length``
    tokens long.

    Watching the run (none of it changes the weights it trains, and a
    resumed run may add or drop any of it): ``sample_every`` N prints, at
    every N-th validation, a sample of ``sample_length`` tokens from the
    model being trained at each of ``sample_temperatures``, to ``log``
    (default stderr; with ``quiet`` too), seeded with the run's seed.
    ``tensorboard`` is a folder for TensorBoard event files: training and
    validation loss, learning rate and tokens/s. ``callbacks`` is a list of
    callables, each called at every validation with a dict of
    ``textgen.training.watch.METRIC_KEYS`` (step, epoch, train_loss,
    val_loss, val_bits_per_char, learning_rate, tokens_per_second,
    seconds); one that returns False stops the run after that validation,
    which is then saved like any other (stop reason ``"callback"``). An
    exception a callback raises propagates once the run is checkpointed
    there, and ``resume=True`` continues from it. In a multiworker run only
    the chief samples, writes events and calls callbacks.
    """
    watch = WatchConfig(sample_every=sample_every, sample_temperatures=sample_temperatures,
                        sample_length=sample_length, tensorboard=tensorboard)
    callbacks = check_callbacks(callbacks)
    if texts is not None:
        if corpus is not None:
            raise ConfigError(f"give corpus or texts, not both. Received: corpus={corpus!r}")
        corpus = str(texts_file(texts))
    given = {"layers": layers, "units": units, "embedding_dim": embedding_dim, "batch_size": batch_size,
             "learning_rate": learning_rate, "schedule": schedule}
    # Settings left at None take their defaults, or the budget preset's choice.
    left_open = frozenset(name for name, value in given.items() if value is None)
    shape = {name: given[name] for name in ("layers", "units", "embedding_dim") if given[name] is not None}
    if learning_rate is None:
        learning_rate = default_learning_rate(fine_tuning=init_from is not None and not resume)
    chosen = apply_preset(preset, schedule=schedule, val_seq_length=val_seq_length)
    durations = {name: parse_duration(value, name) for name, value in (("max_time", max_time),
                                                                       ("more_time", more_time)) if value is not None}
    request = TrainRequest(
        out=Path(out), inputs=tuple(str(item) for item in ([corpus] if isinstance(corpus, (str, Path))
                                                             else list(corpus or []))),
        model=ModelConfig(cell=cell, dropout=dropout, **shape),
        training=TrainConfig(seq_length=seq_length, val_seq_length=chosen["val_seq_length"],
                             batch_size=_T.batch_size if batch_size is None else batch_size,
                             patience=patience, learning_rate=learning_rate, schedule=chosen["schedule"] or _T.schedule,
                             clipnorm=clipnorm, val_fraction=val_fraction,
                             seed=seed if seed is not None else draw_seed(), checkpoint_every=checkpoint_every),
        tokenizer=TokenizerSettings(tokenizer, vocab_size,
                                    parse_size(tokenizer_sample_bytes, "tokenizer_sample_bytes")),
        encoding=encoding, errors=errors, overwrite=overwrite, resume=resume,
        cluster=ClusterSettings(strategy, devices, parse_duration(peer_timeout, "peer_timeout")),
        limits=Limits(epochs=epochs, max_steps=max_steps, more_steps=more_steps, **durations), init_from=init_from,
        preset=preset, left_open=left_open)
    return run_training(request, log=log, quiet=quiet, watch=watch, callbacks=callbacks)


def run_training(request: TrainRequest, *, log=None, quiet: bool = False, watch: WatchConfig | None = None,
                 callbacks=()) -> TextModel:
    """Run the training ``request`` asks for and return the trained model (see ``train``).

    ``watch`` and ``callbacks`` watch the run (see ``train``); they are not
    part of the request, whose settings a resumed run reads back. The model
    directory is held for this run alone while it trains; a follower writes
    only to its scratch folder and holds nothing.
    """
    # First: a strategy's devices and collectives are fixed before TensorFlow runs anything.
    cluster = start_cluster(request.cluster)
    follower = cluster is not None and not cluster.is_chief
    with contextlib.nullcontext() if follower else model_dir.writing(request.out):
        return _run(request, cluster, follower, log, quiet, watch or WatchConfig(), tuple(callbacks))


def _run(request: TrainRequest, cluster, follower: bool, log, quiet: bool, watch_config: WatchConfig,
         callbacks: tuple) -> TextModel:
    stream = None if quiet else (log or sys.stderr)
    progress = Progress(stream=cluster.progress_stream(stream) if cluster else stream)
    # A follower's checkpoints are thrown away at the end; one bundle at a time is enough.
    checkpoints = CheckpointManager(cluster.scratch_dir(), keep=1) if follower else CheckpointManager(request.out)
    plan = plan_run(request, cluster=cluster, checkpoints=checkpoints, progress=progress)
    if plan.kind == "finished":  # a limit already stops this run, and its model is saved: nothing to do
        return load(request.out)

    source = open_corpus(plan.inputs, encoding=plan.encoding, errors=plan.errors, output=request.out)
    progress.message(f"corpus: {source.description}, {source.total_bytes:,} bytes")
    corpus_sha256 = source.sha256()
    plan.check_corpus(corpus_sha256)
    extension = None
    if plan.base is not None and plan.tokenizer is None:
        tokenizer, extension = _extend_tokenizer(plan.base.tokenizer, source, plan.tokenizer_settings)
        progress.message(f"vocabulary: {plan.base.tokenizer.vocab_size} tokens from the base model, "
                         f"{extension.describe()}")
    else:
        tokenizer = plan.tokenizer or _learn_tokenizer(source, plan.tokenizer_settings, progress)
    if request.preset == "budget" and plan.kind == "fresh" and plan.base is None:
        plan.model, plan.training = _budget_choice(plan, tokenizer, request.left_open, progress)
    if cluster is not None:
        cluster.check_batch_size(plan.training.batch_size)
    config = plan.model.with_vocab(tokenizer.vocab_size)
    if cluster is not None and not follower:  # the other workers are waiting in ``plan_run`` for this
        cluster.share_plan({**plan.record(config, {"sha256": corpus_sha256}), "loop": plan.loop,
                            "tokenizer": tokenizer.to_json()}, plan.arrays)
    # The ids live on disk; ``ids`` reads them lazily, a batch at a time.
    ids = open_token_cache(source, tokenizer, corpus_sha256=corpus_sha256, log=progress.message).tokens()
    progress.message(f"tokenizer: {tokenizer.level}, vocabulary {tokenizer.vocab_size}, {len(ids):,} tokens")
    train_ids, val_ids = split_ids(ids, plan.training.val_fraction)
    windows = TrainWindows(train_ids, plan.training.seq_length, plan.training.batch_size, plan.training.seed)

    progress.message(f"seed: {plan.training.seed}")
    keras.utils.set_random_seed(plan.training.seed)
    with cluster.scope() if cluster else contextlib.nullcontext():
        model = build_model(config)
    progress.message(f"model: {config.layers}x{config.units} {config.cell.upper()}, embedding {config.embedding_dim}, "
                     f"{config.parameter_count():,} parameters")
    corpus_info = {"description": source.description, "files": len(source.files), "bytes": source.total_bytes,
                   "sha256": corpus_sha256, "tokens": int(len(ids)),
                   "tokenizer_sample_bytes": plan.tokenizer_settings.sample_bytes}
    if extension is not None:
        corpus_info["new_tokens"] = {"count": len(extension.added), "share": round(extension.added_share, 6)}
    record, tokenizer_json = plan.record(config, corpus_info), tokenizer.to_json()

    def save_checkpoint(trainer: Trainer) -> None:
        checkpoints.save(trainer.state.steps, trainer.state_arrays(), {**record, "loop": trainer.state.to_dict()},
                         tokenizer_json)

    text_model = TextModel(model, config, tokenizer, plan.training)
    watch = None
    if not follower and (watch_config != WatchConfig() or callbacks):
        # Samples were asked for: they are shown even with ``quiet``, which silences progress only.
        watch = Watch(watch_config, callbacks, text_model=text_model, seed=plan.training.seed,
                      message=progress.message if progress.stream is not None else _line_writer(log or sys.stderr),
                      first_step=LoopState.from_dict(plan.loop).steps if plan.loop is not None else 0)
    trainer = Trainer(model, config, plan.training, tokenizer.token_lengths(), progress, save_checkpoint,
                      cluster=cluster, watch=watch)
    if plan.loop is not None:
        trainer.restore(plan.arrays, plan.loop)
    else:
        if plan.base is not None:  # the base's weights; only the new tokens keep this model's initialisation
            variables = named_weights(model, config)
            grown = grow_vocabulary(plan.base.files.weights, {name: v.numpy() for name, v in variables.items()})
            for name, variable in variables.items():
                variable.assign(grown[name])
        checkpoints.remove_all()  # a fresh run (with --overwrite) starts without the old run's bundles
    checkpoints.clean_leftovers()
    try:
        result = trainer.fit(windows, val_ids)
    finally:
        if watch is not None:
            watch.close()
    if result.steps == 0:
        if result.stop_reason == "interrupted":
            raise KeyboardInterrupt
        raise TrainingError("training stopped before any step finished; nothing was saved. Received: steps=0")

    # Interrupted before the first validation, the model keeps its latest
    # weights: unmeasured work is still work the user should not lose.
    metrics = {"best": result.best, "history": result.history, "steps": result.steps, "tokens": result.tokens,
               "seconds": round(result.seconds, 2), "tokens_per_second": round(result.tokens_per_second, 1),
               "stop_reason": result.stop_reason, "train_curve": result.curve}
    path = text_model.save(cluster.scratch_dir() / "model" if follower else request.out, overwrite=True,
                           corpus=corpus_info, metrics=metrics)
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


def _line_writer(stream):
    def write(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()
    return write


def _extend_tokenizer(base: TextTokenizer, source, settings: TokenizerSettings):
    """The base model's tokenizer with what the corpus (or an evenly spread sample of it) needs added.

    The vocabulary grows to ``settings.vocab_size`` tokens at most, or by
    NEW_TOKENS_LIMIT when that is not given.
    """
    chunks = source.iter_text() if source.total_bytes <= settings.sample_bytes else \
        source.iter_sample(settings.sample_bytes)
    return base.extended(chunks, settings.vocab_size or base.vocab_size + NEW_TOKENS_LIMIT)


def _budget_choice(plan, tokenizer: TextTokenizer, left_open, progress) -> tuple[ModelConfig, TrainConfig]:
    """The model and training settings the budget preset chooses for this corpus and time limit, said in one line."""
    if plan.training.max_time is None:
        progress.message("budget preset: no --max-time, so the model and recipe stay as given or by default")
        return plan.model, plan.training
    choice = budget.choose(plan.training.max_time, tokenizer.vocab_size)
    model, training, line = budget.apply(choice, plan.model, plan.training, left_open)
    progress.message(line)
    return model, training


def _learn_tokenizer(source, settings: TokenizerSettings, progress) -> TextTokenizer:
    """A tokenizer learned from the corpus, or from an evenly spread sample of a large one."""
    if source.total_bytes > settings.sample_bytes:
        progress.message(f"tokenizer: learning from an evenly spread sample of {settings.sample_bytes:,} bytes")
    return TextTokenizer.train_on_corpus(source, level=settings.level, vocab_size=settings.vocab_size,
                                         sample_bytes=settings.sample_bytes)
