"""A trained model in use: ``TextModel``, and ``load``, which reads one from its directory.

A ``TextModel`` holds a Keras sequence model with its tokenizer and settings.
It generates text (all at once, streamed as it is produced, or turn by turn in
a conversation), traces the gates and states behind it, measures its loss on
text, exports itself as a SavedModel and saves itself as a model directory. ``load`` rebuilds one from
a directory, checking every file first; ``textgen.training.run.train`` makes one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from textgen import model_dir
from textgen.backend import keras
from textgen.config import CELLS_CHARACTERS, MAX_LENGTH, SampleConfig, TrainConfig, check_int, fail
from textgen.errors import ConfigError, ModelDirError, TrainingError
from textgen.generation.conversation import Conversation
from textgen.generation.generator import Generator
from textgen.generation.request import SampleRequest
from textgen.generation.samples import Sample, SampleRun
from textgen.model.loss import Evaluator
from textgen.model.network import ModelStep, build_model, expected_shapes, named_weights
from textgen.model.settings import ModelConfig
from textgen.model.trace import Trace, record_trace
from textgen.tokenization.tokenizer import TextTokenizer

if TYPE_CHECKING:
    from textgen.lab.cells import CellReport


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

    def _check(self, prompt, stop, include_prompt, details, **settings) -> SampleRequest:
        """Check a generation request, and the options that shape its answer, before any work."""
        request = SampleRequest.check(prompt, stop, vocab_size=self.config.vocab_size, **settings)
        for name, value in (("include_prompt", include_prompt), ("details", details)):
            if not isinstance(value, bool):
                fail(f"{name} must be True or False", name, value)
        return request

    def generate(self, prompt: str | Sequence[str] = "", length: int = SampleConfig.length,
                 temperature: float = SampleConfig.temperature, top_k: int = 0, top_p: float = 1.0,
                 seed: int | None = None, num_samples: int = 1, stop: str | Sequence[str] | None = None,
                 include_prompt: bool = True, details: bool = False) -> str | list[str] | Sample | list[Sample]:
        """Continue ``prompt`` by up to ``length`` tokens.

        temperature 0 is greedy; top_k 0 and top_p 1 switch those filters off.
        Each sample ends before the first of the ``stop`` strings it produces.
        The same seed gives the same text (seeds are 0 to ``config.SEED_MAX``;
        None draws one). Returns a string, each prompt followed by its
        continuation (the continuation alone with ``include_prompt=False``);
        a list of strings when ``prompt`` is a list or ``num_samples`` > 1, all
        generated as one batch, prompt by prompt. ``details=True`` returns
        ``textgen.generation.samples.Sample`` objects instead, which hold the
        prompt, the text, every token with its log-probability and why the
        sample ended. Characters the tokenizer never saw are replaced and named
        in an ``UnknownTokenWarning``.
        """
        for result in self.stream(prompt, length=length, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                  num_samples=num_samples, stop=stop, include_prompt=include_prompt, details=details,
                                  chunk_tokens=length):  # one chunk; a bad length is refused first
            pass
        return result

    def stream(self, prompt: str | Sequence[str] = "", length: int = SampleConfig.length,
               temperature: float = SampleConfig.temperature, top_k: int = 0, top_p: float = 1.0,
               seed: int | None = None, num_samples: int = 1, stop: str | Sequence[str] | None = None,
               include_prompt: bool = True, details: bool = False,
               chunk_tokens: int = 32) -> Iterator[str | list[str] | Sample | list[Sample]]:
        """Generate as ``generate`` does, yielding what it would return so far after every ``chunk_tokens`` tokens.

        The arguments and what is yielded follow ``generate``'s rules, and the
        last item yielded equals what ``generate`` returns for the same
        arguments. Text is yielded only once no later stop string can take it
        back, so each item extends the one before and a caller may print the
        difference at once. The request is checked when ``stream`` is called.
        """
        request = self._check(prompt, stop, include_prompt, details, length=length, temperature=temperature,
                              top_k=top_k, top_p=top_p, seed=seed, num_samples=num_samples)
        check_int("chunk_tokens", chunk_tokens, 1, MAX_LENGTH)
        run = SampleRun(self.generator, self.tokenizer, request, chunk_tokens)
        return _shaped(run, single=isinstance(prompt, str) and num_samples == 1, include_prompt=include_prompt,
                       details=details)

    def conversation(self, length: int = SampleConfig.length, temperature: float = SampleConfig.temperature,
                     top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
                     chunk_tokens: int = 16) -> Conversation:
        """A ``Conversation`` with this model: turns of text, each continued from everything said before."""
        return Conversation(self.generator, self.tokenizer, self.config.vocab_size, chunk_tokens=chunk_tokens,
                            length=length, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)

    def trace(self, text: str, continuation: int = 0, temperature: float = SampleConfig.temperature,
              top_k: int = 0, top_p: float = 1.0, seed: int | None = None) -> Trace:
        """Every layer's gates and states for each token of ``text`` and of ``continuation`` sampled tokens.

        Returns a ``textgen.model.trace.Trace``: token texts, the index where sampled
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
            sample = self.generate(text, length=continuation, temperature=temperature, top_k=top_k, top_p=top_p,
                                   seed=seed, details=True)
            ids += sample.token_ids.tolist()
        strings = self.tokenizer.token_strings()
        layers = record_trace(ModelStep(self.keras_model, self.config), ids)
        return Trace(cell=self.config.cell, tokens=[strings[i] for i in ids], generated_from=given, layers=layers,
                     ids=[int(i) for i in ids])

    def find_cells(self, text: str | None = None, *, corpus=None, characters: int = CELLS_CHARACTERS, top: int = 3,
                   progress: Callable[[str], None] | None = None) -> CellReport:
        """Find the units that follow nameable features of a text (quotes, line position, brackets...).

        Reads the first ``characters`` characters of ``text``; else of the
        corpus ``corpus`` names (a named corpus such as ``"python"``, a file, a
        folder or a glob); else of the corpus this model was trained on, when
        its manifest records it and it can be read here without a download.
        ``characters`` is at most ``textgen.config.CELLS_MAX_CHARACTERS`` (20,000):
        the trace of T tokens holds layers x quantities x T x units float32
        numbers, about 470 MiB for the shipped 2 x 512 LSTMs at that length.
        Returns a ``textgen.lab.cells.CellReport`` with the ``top`` units per
        feature, their correlation on the first half of the text and on the
        held-out second half, a chance level, and every gate's saturation.
        ``progress``, if given, is called with a line before and after the trace.
        """
        from textgen.lab.cells import MAX_TOP, find_cells, text_to_read

        check_int("top", top, 1, MAX_TOP)  # before the trace, not after it
        text, source = text_to_read(text, corpus=corpus, characters=characters,
                                    trained_on=self.manifest.get("corpus"))
        if progress is not None:
            progress(f"reading {source}")
        trace = self.trace(text)
        if progress is not None:
            progress(f"traced {len(trace.tokens)} tokens through {len(trace.layers)} {trace.cell} layer(s)")
        name = None
        if self.path is not None:
            name = self.path.name if model_dir.is_shipped(self.path) else str(self.path)
        return find_cells(trace, top=top, model=name, source=source)

    def evaluate(self, text: str) -> dict:
        """Loss of the model on ``text``: nats per token, bits per character, perplexity."""
        if not isinstance(text, str):
            raise ConfigError(f"text must be a string. Received: text={type(text).__name__}")
        ids = self.tokenizer.encode(text)
        if len(ids) < 2:
            raise TrainingError(f"text is too short to evaluate: it needs at least 2 tokens. Received: tokens={len(ids)}")
        evaluator = Evaluator(self.keras_model, self.tokenizer.token_lengths(),
                              self.train_config.validation_window, self.train_config.batch_size)
        result = evaluator.evaluate(ids)
        return {"loss": result.loss, "bits_per_char": result.bits_per_char, "perplexity": result.perplexity,
                "tokens": result.tokens, "characters": result.characters}

    def export(self, path=None, *, overwrite: bool = False) -> Path:
        """Write a TensorFlow SavedModel that generates text by itself (see ``textgen.generation.export``).

        The default path is ``saved_model`` inside the model directory (a
        shipped model needs a path: it is read-only). An existing SavedModel
        there is replaced only with ``overwrite``.
        """
        from textgen.generation.export import export_saved_model

        if path is None and self.path is None:
            raise ConfigError("this model has no directory yet; pass a path. Received: path=None")
        path = model_dir.derived_output(self.path, model_dir.SAVED_MODEL_DIR, path) if path is None else Path(path)
        return export_saved_model(self, path, overwrite=overwrite)

    def save(self, path, *, overwrite: bool = False, corpus: dict | None = None, metrics: dict | None = None) -> Path:
        """Write this model to a model directory (atomically)."""
        weights = {name: var.numpy() for name, var in named_weights(self.keras_model, self.config).items()}
        settings = model_dir.Settings(self.config, self.tokenizer.level, self.train_config)
        corpus = corpus if corpus is not None else self.manifest.get("corpus", {})
        metrics = metrics if metrics is not None else self.manifest.get("metrics", {})
        self.path = model_dir.write_model_dir(path, settings=settings, tokenizer_json=self.tokenizer.to_json(),
                                              weights=weights, corpus=corpus, metrics=metrics, overwrite=overwrite)
        _, self.manifest = model_dir.read_manifest(self.path)
        return self.path


def _shaped(run: SampleRun, single: bool, include_prompt: bool, details: bool):
    """What ``generate`` returns, for each list of samples ``run`` yields: samples or texts, one or a list."""
    for samples in run:
        items = samples if details else [sample.prompt + sample.text if include_prompt else sample.text
                                         for sample in samples]
        yield items[0] if single else items


def load(path) -> TextModel:
    """Load a model directory, or a shipped model by name (``"shakespeare"``), checking every file before use.

    An existing path wins over a shipped model's name. The model is rebuilt
    from validated settings with textgen's own code and the weights are read
    as plain float32 arrays: nothing in the directory is executed or unpickled.
    """
    files = read_model_files(path)
    model = build_model(files.settings.model)
    for name, variable in named_weights(model, files.settings.model).items():
        variable.assign(files.weights[name])
    return TextModel(model, files.settings.model, files.tokenizer, files.settings.training, files.manifest,
                     files.path)


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """A model directory's contents, checked and read, before any Keras model is built from them."""

    path: Path
    manifest: dict
    settings: model_dir.Settings
    tokenizer: TextTokenizer
    weights: dict[str, np.ndarray]


def read_model_files(path) -> ModelFiles:
    """Check and read the model directory (or shipped model) ``path``: what ``load`` builds a model from."""
    path, manifest = model_dir.read_manifest(path)
    settings = model_dir.read_settings(path)
    tokenizer = TextTokenizer.from_json(model_dir.read_text_file(path, model_dir.TOKENIZER_FILE))
    if settings.tokenizer_level != tokenizer.level or tokenizer.vocab_size != settings.model.vocab_size:
        raise ModelDirError(f"tokenizer.json does not match config.json. "
                            f"Received: level={settings.tokenizer_level!r}, vocab_size={tokenizer.vocab_size}")
    weights = model_dir.decode_weights(path / model_dir.WEIGHTS_FILE, expected_shapes(settings.model))
    return ModelFiles(path, manifest, settings, tokenizer, weights)
