"""The Python API: ``train`` a model into a directory, ``load`` it, use it.

Both return a ``TextModel``, which generates text, evaluates text, and gives
access to its Keras model and tokenizer. The command line is a thin layer
over these functions.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from textgen import modeldir
from textgen.backend import keras, tf
from textgen.config import (MAX_SAMPLES, TOKENIZER_LEVELS, TOKENIZER_SAMPLE_BYTES, ModelConfig, SampleConfig,
                            TrainConfig, check_tokenizer_sample_bytes)
from textgen.corpus import open_corpus
from textgen.data import TrainWindows, split_ids
from textgen.checkpoint import CheckpointManager
from textgen.distributed import DEFAULT_PEER_TIMEOUT, start_cluster
from textgen.errors import ConfigError, CorpusError, ModelDirError, TrainingError
from textgen.generate import Generator, cut_at_stop
from textgen.model import ModelStep, build_model, expected_shapes, named_weights
from textgen.progress import Progress
from textgen.shards import open_token_cache
from textgen.tokenizer import TextTokenizer
from textgen.trace import Trace, record_trace
from textgen.training import Evaluator, Trainer


class TextModel:
    """A trained language model with its tokenizer.

    Attributes: ``keras_model`` (the sequence model, logits (B, T, V)),
    ``tokenizer`` (a ``TextTokenizer``), ``config`` (``ModelConfig``),
    ``train_config``, ``manifest`` and ``path`` (None until saved).
    """

    def __init__(self, keras_model: keras.Model, config: ModelConfig, tokenizer: TextTokenizer,
                 train_config: TrainConfig | None = None, manifest: dict | None = None, path: Path | None = None):
        self.keras_model = keras_model
        self.config = config
        self.tokenizer = tokenizer
        self.train_config = train_config or TrainConfig()
        self.manifest = manifest or {}
        self.path = path
        self._generator = None

    def __repr__(self) -> str:
        c = self.config
        return (f"TextModel({c.layers}x{c.units} {c.cell.upper()}, embedding {c.embedding_dim}, "
                f"{self.tokenizer.level} vocabulary {c.vocab_size}, path={str(self.path)!r})")

    @property
    def generator(self) -> Generator:
        """The compiled generation loop, built on first use."""
        if self._generator is None:
            # With nothing to condition on, generation starts as if at the beginning of a line.
            newline = self.tokenizer.encode("\n").tolist()
            start_id = newline[0] if len(newline) == 1 else self.tokenizer.unk_id
            self._generator = Generator(ModelStep(self.keras_model, self.config), self.tokenizer.token_strings(),
                                        start_id)
        return self._generator

    def _request(self, prompt, length, temperature, top_k, top_p, seed, num_samples, stop):
        """Check a generation request and turn it into the loop's tensors."""
        settings = SampleConfig(length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                                num_samples=num_samples, seed=seed)
        if settings.top_k > self.config.vocab_size:
            raise ConfigError(f"top_k must be at most the vocabulary size ({self.config.vocab_size}). "
                              f"Received: top_k={top_k}")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(item, str) for item in prompts):
            raise ConfigError(f"prompt must be a string or a non-empty list of strings. Received: prompt={prompt!r}")
        rows = [item for item in prompts for _ in range(settings.num_samples)]
        if len(rows) > MAX_SAMPLES:
            raise ConfigError(f"at most {MAX_SAMPLES} rows (prompts x num_samples) per call. Received: rows={len(rows)}")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if not all(isinstance(item, str) for item in stops):
            raise ConfigError(f"stop must be a string or a list of strings. Received: stop={stop!r}")
        encoded = {item: self.tokenizer.encode_prompt(item) if item else [] for item in prompts}
        request = {
            "prompt_values": tf.constant([i for item in rows for i in encoded[item]], tf.int32),
            "prompt_row_lengths": tf.constant([len(encoded[item]) for item in rows], tf.int32),
            "length": tf.constant(settings.length, tf.int32),
            "temperature": tf.constant(settings.temperature, tf.float32),
            "top_k": tf.constant(settings.top_k, tf.int32), "top_p": tf.constant(settings.top_p, tf.float32),
            "seed": tf.constant(settings.seed if settings.seed is not None else secrets.randbits(62), tf.int64),
            "stop": tf.constant(stops, tf.string),
        }
        return rows, stops, request

    def _texts(self, ids: np.ndarray, produced: np.ndarray, stops: list[str]) -> list[str]:
        texts = [self.tokenizer.decode(row[:count]) for row, count in zip(ids, produced)]
        if stops:
            texts = [text.decode("utf-8") for text in cut_at_stop(tf.constant(texts, tf.string), stops).numpy()]
        return texts

    def generate(self, prompt: str | Sequence[str] = "", length: int = SampleConfig.length,
                 temperature: float = SampleConfig.temperature, top_k: int = 0, top_p: float = 1.0,
                 seed: int | None = None, num_samples: int = 1, stop: str | Sequence[str] | None = None,
                 include_prompt: bool = True) -> str | list[str]:
        """Continue ``prompt`` by up to ``length`` tokens.

        temperature 0 is greedy; top_k 0 and top_p 1 switch those filters off.
        Each sample ends before the first of the ``stop`` strings it produces.
        The same seed gives the same text. Returns a string, or a list of
        ``num_samples`` strings, all generated as one batch; a list of prompts
        gives a list of ``len(prompt) * num_samples`` strings, prompt by prompt.
        Characters the tokenizer never saw are replaced and named in an
        ``UnknownTokenWarning``.
        """
        rows, stops, request = self._request(prompt, length, temperature, top_k, top_p, seed, num_samples, stop)
        new_ids, produced = self.generator.generate(**request)
        texts = self._texts(new_ids.numpy(), produced.numpy(), stops)
        if include_prompt:
            texts = [item + text for item, text in zip(rows, texts)]
        return texts[0] if isinstance(prompt, str) and num_samples == 1 else texts

    def trace(self, text: str, continuation: int = 0, temperature: float = SampleConfig.temperature,
              top_k: int = 0, top_p: float = 1.0, seed: int | None = None) -> Trace:
        """Every layer's gates and states for each token of ``text`` and of ``continuation`` sampled tokens.

        Returns a ``textgen.trace.Trace``: token texts, the index where sampled
        tokens begin, and per layer a (T, U) array for each quantity the cell
        has (forget, input, output and candidate gates, cell and hidden
        state for an LSTM). An empty ``text`` starts where ``generate`` does.
        """
        if not isinstance(text, str):
            raise ConfigError(f"text must be a string. Received: text={text!r}")
        if isinstance(continuation, bool) or not isinstance(continuation, int) or continuation < 0:
            raise ConfigError(f"continuation must be a whole number of tokens >= 0. "
                              f"Received: continuation={continuation!r}")
        ids = list(self.tokenizer.encode_prompt(text)) if text else [self.generator.start_id]
        given = len(ids)
        if continuation:
            _, _, request = self._request(text, continuation, temperature, top_k, top_p, seed, 1, None)
            new_ids, produced = self.generator.generate(**request)
            ids += new_ids.numpy()[0, :int(produced.numpy()[0])].tolist()
        strings = self.tokenizer.token_strings()
        layers = record_trace(ModelStep(self.keras_model, self.config), ids)
        return Trace(cell=self.config.cell, tokens=[strings[i] for i in ids], generated_from=given, layers=layers,
                     ids=[int(i) for i in ids])

    def stream(self, prompt: str | Sequence[str] = "", length: int = SampleConfig.length,
               temperature: float = SampleConfig.temperature, top_k: int = 0, top_p: float = 1.0,
               seed: int | None = None, num_samples: int = 1, stop: str | Sequence[str] | None = None,
               chunk_tokens: int = 32) -> Iterator[list[str]]:
        """Generate as ``generate`` does, yielding every row's new text so far after each chunk.

        Text is yielded only once no later stop string can take it back, so a
        caller may print it at once. The last list yielded equals what
        ``generate(..., include_prompt=False)`` returns, as a list.
        """
        rows, stops, request = self._request(prompt, length, temperature, top_k, top_p, seed, num_samples, stop)
        hold_back = max((len(item) for item in stops), default=1) - 1
        logits, states, tails, done, produced = self.generator.begin(
            request["prompt_values"], request["prompt_row_lengths"], request["length"])
        texts, settled, start = [""] * len(rows), [False] * len(rows), 0
        while True:
            end = min(start + chunk_tokens, length)
            new_ids, logits, states, tails, done, produced = self.generator.sample(
                logits, states, tf.constant(start, tf.int32), tf.constant(end, tf.int32), request["length"],
                request["temperature"], request["top_k"], request["top_p"], request["seed"], request["stop"],
                tails, done, produced)
            chunk = new_ids.numpy()  # (B, T)
            # Only this chunk is decoded: each row keeps its ids up to the end of its first stop string.
            counts = np.clip(produced.numpy() - start, 0, chunk.shape[1])
            texts = [text if row_settled else text + self.tokenizer.decode(row[:count])
                     for text, row_settled, row, count in zip(texts, settled, chunk, counts)]
            start += chunk.shape[1]
            finished = done.numpy()
            newly_finished = [r for r in range(len(rows)) if finished[r] and not settled[r]]
            if stops and newly_finished:
                cut = cut_at_stop(tf.constant([texts[r] for r in newly_finished], tf.string), stops).numpy()
                for r, text in zip(newly_finished, cut):
                    texts[r] = text.decode("utf-8")
            settled = [bool(flag) for flag in finished]
            if finished.all():
                yield list(texts)
                return
            yield [text if row_done else text[: max(len(text) - hold_back, 0)]
                   for text, row_done in zip(texts, finished)]

    def evaluate(self, text: str) -> dict:
        """Loss of the model on ``text``: nats per token, bits per character, perplexity."""
        if not isinstance(text, str):
            raise ConfigError(f"text must be a string. Received: text={type(text).__name__}")
        ids = self.tokenizer.encode(text)
        if len(ids) < 2:
            raise TrainingError(f"text is too short to evaluate: it needs at least 2 tokens. Received: tokens={len(ids)}")
        evaluator = Evaluator(self.keras_model, self.tokenizer.token_lengths(),
                              self.train_config.seq_length, self.train_config.batch_size)
        result = evaluator.evaluate(ids)
        return {"loss": result.loss, "bits_per_char": result.bits_per_char, "perplexity": result.perplexity,
                "tokens": result.tokens, "characters": result.characters}

    def export(self, path=None) -> Path:
        """Write a TensorFlow SavedModel that generates text by itself (see ``textgen.export``).

        The default path is ``saved_model`` inside the model directory.
        """
        from textgen.export import SAVED_MODEL_DIR, export_saved_model

        if path is None:
            if self.path is None:
                raise ConfigError("this model has no directory yet; pass a path. Received: path=None")
            path = Path(self.path) / SAVED_MODEL_DIR
        return export_saved_model(self, path)

    def save(self, path, *, overwrite: bool = False, corpus: dict | None = None, metrics: dict | None = None) -> Path:
        """Write this model to a model directory (atomically)."""
        weights = {name: var.numpy() for name, var in named_weights(self.keras_model, self.config).items()}
        config = {"model": self.config.to_dict(), "tokenizer": {"level": self.tokenizer.level},
                  "training": self.train_config.to_dict()}
        corpus = corpus if corpus is not None else self.manifest.get("corpus", {})
        metrics = metrics if metrics is not None else self.manifest.get("metrics", {})
        self.path = modeldir.write_model_dir(path, config=config, tokenizer_json=self.tokenizer.to_json(),
                                             weights=weights, corpus=corpus, metrics=metrics, overwrite=overwrite)
        _, self.manifest = modeldir.read_manifest(self.path)
        return self.path


def load(path) -> TextModel:
    """Load a model directory, checking every file before use.

    The model is rebuilt from validated settings with textgen's own code and
    the weights are read as plain float32 arrays: nothing in the directory is
    executed or unpickled.
    """
    path, manifest = modeldir.read_manifest(path)
    raw = modeldir.read_config(path)
    unknown = sorted(set(raw) - {"format", "model", "tokenizer", "training"})
    if unknown:
        raise ModelDirError(f"config.json has unknown sections. Received: key={unknown[0]!r}")
    try:
        config = ModelConfig.from_dict(raw.get("model"))
        train_config = TrainConfig.from_dict(raw.get("training", {}))
    except ConfigError as exc:
        raise ModelDirError(f"config.json has invalid settings: {exc}") from None
    tokenizer = TextTokenizer.from_json(modeldir.read_text_file(path, modeldir.TOKENIZER_FILE))
    level = raw.get("tokenizer", {}).get("level") if isinstance(raw.get("tokenizer"), dict) else None
    if level != tokenizer.level or tokenizer.vocab_size != config.vocab_size:
        raise ModelDirError(f"tokenizer.json does not match config.json. "
                            f"Received: level={level!r}, vocab_size={tokenizer.vocab_size}")
    arrays = modeldir.decode_weights(path / modeldir.WEIGHTS_FILE, expected_shapes(config))
    model = build_model(config)
    for name, variable in named_weights(model, config).items():
        variable.assign(arrays[name])
    return TextModel(model, config, tokenizer, train_config, manifest, path)


_M, _T = ModelConfig, TrainConfig  # defaults are read from the settings classes, the one place they live


def train(corpus: str | Sequence[str] | None = None, *, out, tokenizer: str = "char", vocab_size: int | None = None,
          tokenizer_sample_bytes: int = TOKENIZER_SAMPLE_BYTES,
          cell: str = _M.cell, layers: int = _M.layers, units: int = _M.units, embedding_dim: int = _M.embedding_dim,
          dropout: float = _M.dropout, seq_length: int = _T.seq_length, batch_size: int = _T.batch_size,
          epochs: int = _T.epochs, max_steps: int | None = None, max_time: float | None = None,
          patience: int | None = _T.patience, learning_rate: float = _T.learning_rate, schedule: str = _T.schedule,
          clipnorm: float = _T.clipnorm, val_fraction: float = _T.val_fraction, seed: int | None = None,
          checkpoint_every: int | None = _T.checkpoint_every, encoding: str = "utf-8", errors: str = "strict",
          overwrite: bool = False, resume: bool = False, log=None, quiet: bool = False,
          strategy: str = "default", devices: int | None = None,
          peer_timeout: float = DEFAULT_PEER_TIMEOUT) -> TextModel:
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
    """
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
        train_config = TrainConfig(seq_length=seq_length, batch_size=batch_size, epochs=epochs,
                                   max_steps=max_steps, max_time=max_time, patience=patience,
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
