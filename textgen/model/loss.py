"""The one loss every part of textgen measures: cross-entropy of each next token, and its evaluation on text.

``token_loss`` is what training minimises, what validation and
``TextModel.evaluate`` report, what the replicas of a distributed run sum,
and what the memory experiment trains on, so all of them measure the same
number. ``Evaluator`` runs it over token ids in compiled batches.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from textgen.backend import keras, tf
from textgen.data.windows import eval_batches
from textgen.errors import TrainingError

LN2 = math.log(2.0)


def token_loss(targets, logits):
    """Nats of each target token under the logits: targets (..., ) int, logits (..., V) -> (...), e.g. (B, T)."""
    return keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)


@dataclasses.dataclass
class Evaluation:
    """Loss of a model on some text: nats per token, bits per character."""

    loss: float
    bits_per_char: float
    tokens: int
    characters: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)


class Evaluator:
    """Computes the loss of a model on token ids, in compiled batches."""

    def __init__(self, model: keras.Model, token_lengths: np.ndarray, seq_length: int, batch_size: int):
        self.model = model
        self.seq_length = seq_length
        self.batch_size = batch_size
        self._lengths = tf.constant(np.asarray(token_lengths, np.float32))  # (V,)
        self._step = tf.function(self._batch_sums, jit_compile=True, reduce_retracing=True)

    def _batch_sums(self, x, y, weights):
        logits = self.model(x, training=False)  # (B, T, V)
        nats = token_loss(y, logits)  # (B, T)
        chars = tf.gather(self._lengths, y)
        return tf.reduce_sum(nats * weights), tf.reduce_sum(chars * weights)

    def evaluate(self, ids) -> Evaluation:
        """Loss over every next-token prediction in ``ids`` (an array or lazy ``TokenShards``), batch by batch."""
        total_nats = 0.0
        total_chars = 0.0
        for x, y, w in eval_batches(ids, self.seq_length, self.batch_size):
            nats, chars = self._step(x, y, w)
            total_nats += float(nats)
            total_chars += float(chars)
        tokens = max(len(ids) - 1, 0)
        if tokens == 0:
            raise TrainingError(f"text is too short to evaluate: it needs at least 2 tokens. Received: tokens={len(ids)}")
        loss = total_nats / tokens
        bits_per_char = total_nats / LN2 / max(total_chars, 1.0)
        return Evaluation(loss, bits_per_char, tokens, int(total_chars))
