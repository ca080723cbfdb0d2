"""A trained model in use: ``TextModel``, and ``load``, which reads one from its directory.

A ``TextModel`` holds a Keras sequence model with its tokenizer and settings.
It generates text (all at once, or streamed as it is produced), traces the
gates and states behind it, measures its loss on text, exports itself as a
SavedModel and saves itself as a model directory. ``load`` rebuilds one from
a directory, checking every file first; ``textgen.training.run.train`` makes one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from textgen import model_dir
from textgen.backend import keras, tf
from textgen.config import MAX_SAMPLES, SampleConfig, TrainConfig, draw_seed
from textgen.errors import ConfigError, ModelDirError, TrainingError
from textgen.generation.generator import Generator
from textgen.generation.sampling import cut_at_stop
from textgen.model.loss import Evaluator
from textgen.model.network import ModelStep, build_model, expected_shapes, named_weights
from textgen.model.settings import ModelConfig
from textgen.model.trace import Trace, record_trace
from textgen.tokenization.tokenizer import TextTokenizer


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
            "seed": tf.constant(settings.seed if settings.seed is not None else draw_seed(), tf.int64),
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
                              self.train_config.validation_window, self.train_config.batch_size)
        result = evaluator.evaluate(ids)
        return {"loss": result.loss, "bits_per_char": result.bits_per_char, "perplexity": result.perplexity,
                "tokens": result.tokens, "characters": result.characters}

    def export(self, path=None, *, overwrite: bool = False) -> Path:
        """Write a TensorFlow SavedModel that generates text by itself (see ``textgen.generation.export``).

        The default path is ``saved_model`` inside the model directory. An
        existing SavedModel there is replaced only with ``overwrite``.
        """
        from textgen.generation.export import export_saved_model

        if path is None:
            if self.path is None:
                raise ConfigError("this model has no directory yet; pass a path. Received: path=None")
            path = Path(self.path) / model_dir.SAVED_MODEL_DIR
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


def load(path) -> TextModel:
    """Load a model directory, checking every file before use.

    The model is rebuilt from validated settings with textgen's own code and
    the weights are read as plain float32 arrays: nothing in the directory is
    executed or unpickled.
    """
    path, manifest = model_dir.read_manifest(path)
    settings = model_dir.read_settings(path)
    tokenizer = TextTokenizer.from_json(model_dir.read_text_file(path, model_dir.TOKENIZER_FILE))
    if settings.tokenizer_level != tokenizer.level or tokenizer.vocab_size != settings.model.vocab_size:
        raise ModelDirError(f"tokenizer.json does not match config.json. "
                            f"Received: level={settings.tokenizer_level!r}, vocab_size={tokenizer.vocab_size}")
    arrays = model_dir.decode_weights(path / model_dir.WEIGHTS_FILE, expected_shapes(settings.model))
    model = build_model(settings.model)
    for name, variable in named_weights(model, settings.model).items():
        variable.assign(arrays[name])
    return TextModel(model, settings.model, tokenizer, settings.training, manifest, path)
