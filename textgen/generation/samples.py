"""Samples as they are generated: what each row of a request became, and the run that makes them chunk by chunk.

``SampleRun`` drives the generation loop (``Generator.begin``, then ``sample``
calls of ``chunk_tokens`` tokens each) and after every call turns the ids
into one ``Sample`` per row: the text so far, the tokens with their
log-probabilities and, once the row has finished, why it stopped.
``TextModel.generate`` keeps the last of these lists, ``TextModel.stream``
yields each one, and a ``Conversation`` carries a run's state into its
next turn.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from textgen.backend import tf
from textgen.generation.generator import Generator
from textgen.generation.request import SampleRequest
from textgen.generation.sampling import cut_at_stop

# Why a sample ended: it reached ``length`` tokens, or it produced one of its stop strings.
# INTERRUPTED is for callers that stop a run before a sample ends (textgen sample on Ctrl-C).
STOP_LENGTH = "length"
STOP_STRING = "stop"
INTERRUPTED = "interrupted"


def _short_float(value) -> float:
    """A float32 as the shortest decimal that reads back as the same float32 (for JSON)."""
    return float(str(np.float32(value)))


@dataclasses.dataclass(frozen=True, eq=False)
class Sample:
    """One row of a request: its prompt, the text generated after it, its tokens and their log-probabilities.

    ``text`` is the continuation alone, ending before the first stop string.
    ``token_ids`` and ``logprobs`` (read-only arrays, (n,) int32 and (n,)
    float32) hold every token drawn for this row, up to and including the one
    that completed the stop string, so ``logprob``, their sum, is the
    log-probability the model gave exactly this sample: its text, then its
    stop. Each is log p(token | prompt and the tokens before it) under the
    model's own distribution, the softmax of its logits before temperature,
    top-k and top-p reshape it, in nats (natural log; see
    ``sampling.log_probability``). ``stop_reason`` is "length" or "stop"
    (then ``stop_string`` says which), or None while the sample is being
    generated, when ``text`` holds back the characters a stop string could
    still take back.
    """

    index: int  # the row in the request: prompt by prompt, num_samples each
    prompt: str
    text: str
    token_ids: np.ndarray
    logprobs: np.ndarray
    stop_reason: str | None
    stop_string: str | None
    request: SampleRequest = dataclasses.field(repr=False)
    vocabulary: Sequence[str] = dataclasses.field(repr=False)  # every token's text, by id

    @property
    def seed(self) -> int:
        """The request's seed: the same request with it gives this sample again."""
        return self.request.settings.seed

    @property
    def logprob(self) -> float:
        """The log-probability of all the tokens: the sum of ``logprobs``, in nats."""
        return float(np.sum(self.logprobs, dtype=np.float64))

    @property
    def tokens(self) -> list[str]:
        """The text of each token in ``token_ids``."""
        return [self.vocabulary[i] for i in self.token_ids.tolist()]

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sample):
            return NotImplemented
        return ((self.index, self.prompt, self.text, self.stop_reason, self.stop_string, self.request)
                == (other.index, other.prompt, other.text, other.stop_reason, other.stop_string, other.request)
                and np.array_equal(self.token_ids, other.token_ids) and np.array_equal(self.logprobs, other.logprobs))

    def __repr__(self) -> str:
        return (f"Sample(index={self.index}, prompt={self.prompt!r}, text={self.text!r}, tokens={len(self.token_ids)}, "
                f"logprob={self.logprob:.4f}, stop_reason={self.stop_reason!r}, stop_string={self.stop_string!r})")

    def to_dict(self, tokens: bool = False) -> dict:
        """The sample as plain values, as ``textgen sample --format jsonl`` writes it; ``tokens`` adds each token."""
        record = {"index": self.index, "prompt": self.prompt, "text": self.text, "seed": self.seed,
                  "settings": self.request.sample_settings(), "stop_reason": self.stop_reason,
                  "stop_string": self.stop_string, "num_tokens": len(self.token_ids),
                  "logprob": round(self.logprob, 6)}
        if tokens:
            record["tokens"] = [{"text": text, "logprob": _short_float(score)}
                                for text, score in zip(self.tokens, self.logprobs.tolist())]
        return record


class SampleRun:
    """One request run through the generation loop ``chunk_tokens`` tokens at a time.

    Iterating it yields, after each chunk, the list of every row's ``Sample``
    so far, and ends once every row has finished; what earlier lists showed
    is never taken back. Prompts are encoded (and unknown characters warned
    about) when the run is made. ``carried`` starts the run from the
    (logits, states) an earlier run left rather than the zero state, and
    ``offset`` is the number of tokens drawn before it (token t of row r of
    this run is drawn at position offset + t of the stream of (seed, r)). After each chunk
    ``logits`` (B, V) and ``states`` (S, B, U) hold the state after the
    prompts and every token drawn so far.
    """

    def __init__(self, generator: Generator, tokenizer, request: SampleRequest, chunk_tokens: int,
                 carried=None, offset: int = 0):
        self.generator, self.tokenizer, self.request = generator, tokenizer, request
        self.chunk_tokens, self.carried, self.offset = chunk_tokens, carried, offset
        self.rows = request.rows
        encoded = {item: tokenizer.encode_prompt(item) if item else [] for item in request.prompts}
        self._prompt_values = tf.constant([i for item in self.rows for i in encoded[item]], tf.int32)
        self._prompt_lengths = tf.constant([len(encoded[item]) for item in self.rows], tf.int32)
        self._vocabulary = tokenizer.token_strings()
        self.logits = self.states = None

    def __iter__(self) -> Iterator[list[Sample]]:
        settings, stops, offset = self.request.settings, list(self.request.stop), self.offset
        length, batch = settings.length, len(self.rows)
        # The loop's settings, in the order of generator.SAMPLING_SPECS; ``length`` counts from the offset too.
        loop = (tf.constant(offset + length, tf.int32), tf.constant(settings.temperature, tf.float32),
                tf.constant(settings.top_k, tf.int32), tf.constant(settings.top_p, tf.float32),
                tf.constant(settings.seed, tf.int64), tf.constant(stops, tf.string))
        logits, states, tails, done, produced = self.generator.begin(
            self._prompt_values, self._prompt_lengths, loop[0], self.carried)
        self.logits, self.states = logits, states
        # Every row's ids and scores, filled chunk by chunk: a Sample holds read-only views of
        # its row's filled part, which no later chunk changes. (B, length) each.
        ids = np.zeros((batch, length), np.int32)
        scores = np.zeros((batch, length), np.float32)
        texts = [""] * batch
        finished: list[Sample | None] = [None] * batch
        # A stop string could still take back this many characters of an unfinished row.
        hold_back = max((len(item) for item in stops), default=1) - 1
        t = 0
        while True:
            end = min(t + self.chunk_tokens, length)
            new_ids, new_scores, logits, states, tails, done, produced = self.generator.sample(
                logits, states, tf.constant(offset + t, tf.int32), tf.constant(offset + end, tf.int32), *loop, tails,
                done, produced)
            self.logits, self.states = logits, states
            chunk = new_ids.numpy()  # (B, n)
            drawn = chunk.shape[1]
            ids[:, t:t + drawn] = chunk
            scores[:, t:t + drawn] = new_scores.numpy()
            # Each row keeps its ids up to the end of its first stop string.
            ends = produced.numpy() - offset  # (B,)
            kept = np.clip(ends - t, 0, drawn)
            for row in range(batch):
                if finished[row] is None:
                    texts[row] += self.tokenizer.decode(chunk[row, :kept[row]])
            t += drawn
            flags = done.numpy()
            newly = [row for row in range(batch) if flags[row] and finished[row] is None]
            cut = [texts[row] for row in newly]
            if stops and newly:
                cut = [text.decode("utf-8") for text in cut_at_stop(tf.constant(cut, tf.string), stops).numpy()]
            for row, text in zip(newly, cut):
                stop_string = next((item for item in stops if item and texts[row].startswith(item, len(text))), None)
                finished[row] = self._sample(row, text, ids, scores, min(int(ends[row]), t),
                                             STOP_STRING if stop_string is not None else STOP_LENGTH, stop_string)
            yield [finished[row] or self._sample(row, texts[row][:max(len(texts[row]) - hold_back, 0)], ids, scores,
                                                 t, None, None)
                   for row in range(batch)]
            if flags.all():
                return

    def _sample(self, row, text, ids, scores, count, stop_reason, stop_string) -> Sample:
        token_ids, logprobs = ids[row, :count], scores[row, :count]
        token_ids.flags.writeable = logprobs.flags.writeable = False
        return Sample(row, self.rows[row], text, token_ids, logprobs, stop_reason, stop_string, self.request,
                      self._vocabulary)
