"""Token ids -> training and evaluation windows.

A window is ``seq_length + 1`` consecutive ids; the input is its first
``seq_length`` ids and the target the same ids shifted by one, so every
position is trained to predict the next token.

Ids come as a lazy 1-D sequence: in training, the ``TokenShards`` of the
on-disk token cache (``textgen.data.token_cache``), whatever the corpus size; a NumPy
array works the same way. Only ``np.asarray(ids[a:b])`` reads, so splitting
ids, numbering windows and shuffling them hold nothing that grows with the
corpus: a batch reads its own ``batch_size`` windows and nothing else.

Each epoch, windows start at a random offset in [0, seq_length) and are
visited in the order of a keyed pseudo-random permutation of their indices (a
Feistel network on the smallest power-of-4 domain that holds them, walking
the cycle until it lands inside). Offset and keys come from (seed, epoch)
alone, so the batch at (epoch, step) is a pure function of those numbers,
which is what an exact resume needs, and it is computed in O(batch) time and
memory, with no per-epoch permutation array.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Iterator

import numpy as np

from textgen.errors import TrainingError

# Batches read ahead of the one training: enough to hide a slow read, few enough to hold little memory.
READ_AHEAD = 2
_ROUNDS = 6  # Feistel rounds: 4 make a pseudo-random permutation; 2 more are cheap
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)  # splitmix64's finalizer constants
_MIX_2 = np.uint64(0x94D049BB133111EB)


def split_ids(ids, val_fraction: float):
    """Split ids into (train, validation): validation is the last ``val_fraction``.

    Both parts are slices of ``ids``, so for ``TokenShards`` nothing is read.
    """
    val_count = int(round(len(ids) * val_fraction))
    if val_count < 2:
        raise TrainingError(
            f"the validation split holds {val_count} tokens, too few to measure a loss; "
            f"use more text or a larger --val-fraction. Received: tokens={len(ids)}"
        )
    return ids[: len(ids) - val_count], ids[len(ids) - val_count :]


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 arrays: every input bit moves every output bit."""
    values = (values ^ (values >> np.uint64(30))) * _MIX_1
    values = (values ^ (values >> np.uint64(27))) * _MIX_2
    return values ^ (values >> np.uint64(31))


def permute(indices: np.ndarray, count: int, keys: np.ndarray) -> np.ndarray:
    """Where a keyed permutation of [0, count) sends ``indices`` (each in [0, count)).

    A balanced Feistel network on 2 * h bits, with 4**h the smallest power of
    4 >= count (at most 4 * count), is a bijection of [0, 4**h) for any round
    keys; applied again to values that land at or above ``count``, it walks
    each value's cycle until it comes back inside, which makes it a bijection
    of [0, count) (cycle-walking). ``keys`` holds one uint64 per round.
    """
    half_bits = max(1, ((count - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half_bits) - 1)
    shift = np.uint64(half_bits)

    def feistel(values: np.ndarray) -> np.ndarray:
        left, right = values >> shift, values & mask
        for key in keys:
            left, right = right, left ^ (_mix(right ^ key) & mask)
        return (left << shift) | right

    values = feistel(np.asarray(indices, dtype=np.uint64))
    outside = values >= np.uint64(count)
    while outside.any():  # on average fewer than 4 passes, since 4**h < 4 * count
        values[outside] = feistel(values[outside])
        outside = values >= np.uint64(count)
    return values.astype(np.int64)


class TrainWindows:
    """Shuffled batches of training windows over lazy ids, addressed by (epoch, step)."""

    def __init__(self, ids, seq_length: int, batch_size: int, seed: int):
        self.ids = ids
        self.seq_length = seq_length
        self.batch_size = batch_size
        self.seed = seed
        windows = (len(ids) - 1) // seq_length
        if windows < batch_size:
            raise TrainingError(
                f"the training split gives {windows} windows of {seq_length + 1} tokens, fewer than one batch "
                f"of {batch_size}; use a smaller --batch-size or --seq-length, or more text. "
                f"Received: training_tokens={len(ids)}"
            )
        self._epoch = None
        self._layout = None

    def _epoch_layout(self, epoch: int) -> tuple[int, int, np.ndarray]:
        """(offset, window count, Feistel round keys) of an epoch; a few numbers, cached."""
        if self._epoch != epoch:
            state = np.random.SeedSequence([self.seed, epoch]).generate_state(1 + _ROUNDS, dtype=np.uint64)
            # A new offset each epoch lets windows straddle last epoch's borders.
            offset = int(state[0] % np.uint64(self.seq_length))
            count = (len(self.ids) - 1 - offset) // self.seq_length
            if count < self.batch_size:
                offset, count = 0, (len(self.ids) - 1) // self.seq_length
            self._layout = (offset, count, state[1:])
            self._epoch = epoch
        return self._layout

    def steps_in_epoch(self, epoch: int) -> int:
        """Whole batches in this epoch; the windows left over are skipped."""
        return self._epoch_layout(epoch)[1] // self.batch_size

    def window_starts(self, epoch: int, step: int) -> np.ndarray:
        """The first id of each window in batch (epoch, step): a (B,) int64 array."""
        offset, count, keys = self._epoch_layout(epoch)
        positions = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        return offset + permute(positions, count, keys) * self.seq_length

    def batch(self, epoch: int, step: int, rows: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets of one batch: two (B, T) int32 arrays.

        ``rows`` reads only those rows of the batch, (len(rows), T): a worker
        of a distributed run reads just the rows its replicas train on.
        """
        length = self.seq_length + 1
        windows = np.stack([np.asarray(self.ids[start : start + length], dtype=np.int32)
                            for start in self.window_starts(epoch, step)[rows].tolist()])  # (rows, T + 1)
        return windows[:, :-1], windows[:, 1:]

    def epoch_batches(self, epoch: int, first_step: int, stop_step: int,
                      rows: slice = slice(None)) -> Iterator[tuple]:
        """Batches ``first_step`` to ``stop_step - 1`` of an epoch, read ahead by a thread.

        The thread reads up to READ_AHEAD batches while the current one
        trains (a training step runs outside the GIL); starting at
        ``first_step`` resumes in the middle of an epoch at exactly that batch.
        Yields (x, y) int32 arrays of shape (B, T), or (len(rows), T) with
        ``rows``. An error raised while reading is raised again here, as
        itself. Closing the generator early stops the thread before it returns.
        """
        ahead: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
        stopping = threading.Event()

        def read_all():
            try:
                for step in range(first_step, stop_step):
                    if stopping.is_set():
                        return
                    ahead.put((self.batch(epoch, step, rows), None))
            except BaseException as exc:
                ahead.put((None, exc))

        reader = threading.Thread(target=read_all, name="textgen-batches", daemon=True)
        reader.start()
        try:
            for _ in range(first_step, stop_step):
                batch, failure = ahead.get()
                if failure is not None:
                    raise failure
                yield batch
        finally:
            stopping.set()
            while reader.is_alive():  # a reader blocked on a full queue needs room to see ``stopping``
                with contextlib.suppress(queue.Empty):
                    ahead.get_nowait()
                reader.join(0.01)


def eval_batches(ids, seq_length: int, batch_size: int):
    """Cover ids with non-overlapping windows so every target counts once, reading one batch at a time.

    Yields (x, y, weights), each (B, T); padding has weight 0, so every batch
    has the same shape and a compiled evaluation step is traced once. Only
    ``B * T + 1`` ids are read per batch, so lazy ids of any length stream.
    """
    targets = len(ids) - 1
    per_batch = batch_size * seq_length
    for first in range(0, max(targets, 0), per_batch):
        chunk = np.asarray(ids[first : first + per_batch + 1], dtype=np.int32)  # (n + 1,), n <= B * T targets
        count = len(chunk) - 1
        x = np.zeros(per_batch, np.int32)
        y = np.zeros(per_batch, np.int32)
        weights = np.zeros(per_batch, np.float32)
        x[:count], y[:count], weights[:count] = chunk[:-1], chunk[1:], 1.0
        shape = (batch_size, seq_length)
        yield x.reshape(shape), y.reshape(shape), weights.reshape(shape)
