"""Token ids -> training and evaluation windows.

A window is ``seq_length + 1`` consecutive ids; the input is its first
``seq_length`` ids and the target the same ids shifted by one, so every
position is trained to predict the next token.

Training windows start at a random offset each epoch and are shuffled, and
both come from a generator seeded with (seed, epoch) alone. The batch at
(epoch, step) is therefore a pure function of those numbers, which is what an
exact resume needs.
"""

from __future__ import annotations

import numpy as np

from textgen.errors import TrainingError


def split_ids(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split ids into (train, validation): validation is the last ``val_fraction``."""
    val_count = int(round(len(ids) * val_fraction))
    if val_count < 2:
        raise TrainingError(
            f"the validation split holds {val_count} tokens, too few to measure a loss; "
            f"use more text or a larger --val-fraction. Received: tokens={len(ids)}"
        )
    return ids[: len(ids) - val_count], ids[len(ids) - val_count :]


class TrainWindows:
    """Shuffled batches of training windows, addressed by (epoch, step)."""

    def __init__(self, ids: np.ndarray, seq_length: int, batch_size: int, seed: int):
        self.ids = np.ascontiguousarray(ids, dtype=np.int32)
        self.seq_length = seq_length
        self.batch_size = batch_size
        self.seed = seed
        windows = (len(self.ids) - 1) // seq_length
        if windows < batch_size:
            raise TrainingError(
                f"the training split gives {windows} windows of {seq_length + 1} tokens, fewer than one batch "
                f"of {batch_size}; use a smaller --batch-size or --seq-length, or more text. "
                f"Received: training_tokens={len(self.ids)}"
            )
        self._epoch = None
        self._starts = None

    def _epoch_starts(self, epoch: int) -> np.ndarray:
        if self._epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            # A new offset each epoch lets windows straddle last epoch's borders.
            offset = int(rng.integers(0, self.seq_length))
            count = (len(self.ids) - 1 - offset) // self.seq_length
            if count < self.batch_size:
                offset, count = 0, (len(self.ids) - 1) // self.seq_length
            starts = offset + np.arange(count, dtype=np.int64) * self.seq_length
            self._starts = starts[rng.permutation(count)]
            self._epoch = epoch
        return self._starts

    def steps_in_epoch(self, epoch: int) -> int:
        """Whole batches in this epoch; the windows left over are skipped."""
        return len(self._epoch_starts(epoch)) // self.batch_size

    def batch(self, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets of one batch: two (B, T) int32 arrays."""
        starts = self._epoch_starts(epoch)[step * self.batch_size : (step + 1) * self.batch_size]
        windows = self.ids[starts[:, None] + np.arange(self.seq_length + 1)]  # (B, T + 1)
        return windows[:, :-1], windows[:, 1:]


def eval_batches(ids: np.ndarray, seq_length: int, batch_size: int):
    """Cover ids with non-overlapping windows so every target counts once.

    Yields (x, y, weights), each (B, T); padding has weight 0, so every batch
    has the same shape and a compiled evaluation step is traced once.
    """
    ids = np.asarray(ids, dtype=np.int32)
    targets = len(ids) - 1
    if targets < 1:
        return
    count = -(-targets // seq_length)  # ceil
    padded = np.zeros(count * seq_length + 1, dtype=np.int32)
    padded[: len(ids)] = ids
    weights = np.zeros(count * seq_length, dtype=np.float32)
    weights[:targets] = 1.0
    x_all = padded[:-1].reshape(count, seq_length)
    y_all = padded[1:].reshape(count, seq_length)
    w_all = weights.reshape(count, seq_length)
    for first in range(0, count, batch_size):
        x, y, w = x_all[first : first + batch_size], y_all[first : first + batch_size], w_all[first : first + batch_size]
        if len(x) < batch_size:
            fill = batch_size - len(x)
            x = np.concatenate([x, np.zeros((fill, seq_length), np.int32)])
            y = np.concatenate([y, np.zeros((fill, seq_length), np.int32)])
            w = np.concatenate([w, np.zeros((fill, seq_length), np.float32)])
        yield x, y, w
