"""Continuous batching: the rows of many requests share one generation loop, joining and leaving between steps.

An LSTM's whole context is its state, a fixed-size vector per row, so a row
can join a running batch (a zero state appended) or leave it (its state
dropped) between any two calls of ``Generator.draw``. A row that has just
joined reads its prompt inside the same calls, one token per step, while the
others draw, and the calls are kept short while a row waits for its first
token. Every row
draws from its own random stream (its request's seed and its index in the
request) with its own settings, so what a row becomes does not depend on
what runs beside it: a request's samples equal those ``TextModel.generate``
gives for the same request. ``Batcher`` runs the loop on a thread of its
own; callers submit a ``SampleRequest`` with a listener, which is called
from that thread with each row's new text and, once a row ends, its
``Sample``.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Callable

import numpy as np

from textgen.backend import tf
from textgen.config import CHUNK_TOKENS, MAX_ROWS
from textgen.generation.generator import DRAW_CHUNK, XLA_MAX_BATCH, Generator
from textgen.generation.request import SampleRequest
from textgen.generation.sampling import row_keys
from textgen.generation.samples import STOP_LENGTH, STOP_STRING, Sample


# Above this many rows, batches are padded to a multiple of it (see ``_padding_sizes``).
PADDING_STEP = 32


@dataclasses.dataclass(frozen=True)
class RowUpdate:
    """What one row of a request gained in one call of the loop.

    ``text`` is the new text that no stop string can take back any more
    (possibly empty); ``sample`` is the row's finished ``Sample`` once it has
    ended, else None. The texts of a row's updates add up to its sample's text.
    """

    index: int
    text: str
    sample: Sample | None = None


Listener = Callable[[list[RowUpdate] | BaseException], None]


class Ticket:
    """A submitted request: its rows' progress, and a flag to cancel it.

    ``done`` is set once every row has ended, the request was cancelled, or
    the loop failed (then ``error`` holds why).
    """

    def __init__(self, request: SampleRequest, listener: Listener):
        self.request, self.listener = request, listener
        self.cancelled = False
        self.prompt_ids: dict[str, list[int]] = {}  # each prompt's token ids
        self.error: BaseException | None = None
        self.done = threading.Event()


class _Row:
    """One row in the loop: how much of its prompt it has read, where its stream stands, what it has produced."""

    def __init__(self, ticket: Ticket, index: int, prompt: str, prompt_ids: list[int]):
        self.ticket, self.index, self.prompt = ticket, index, prompt
        self.prompt_ids, self.read = prompt_ids, 0  # ids to read before drawing; how many are read
        self.key = 0  # its random stream's key (``row_keys``), set when it joins the loop
        settings = ticket.request.settings
        self.length, self.temperature, self.top_k, self.top_p = (settings.length, settings.temperature,
                                                                 settings.top_k, settings.top_p)
        self.stops = [item for item in ticket.request.stop if item]
        self.ids: list[int] = []
        self.scores: list[float] = []
        self.text = ""
        self.released = 0  # characters of ``text`` already given to the listener
        self.released_at = 0  # tokens drawn when text was last given to the listener


class Batcher:
    """Runs every submitted request's rows in one batched generation loop on a thread of its own.

    ``submit`` may be called from any thread; a request's rows join the
    loop at the next call (at most ``max_rows`` run at once, the rest
    wait) and leave it when they end or their ticket is cancelled.
    """

    def __init__(self, generator: Generator, tokenizer, *, max_rows: int = MAX_ROWS,
                 chunk_tokens: int = CHUNK_TOKENS):
        if not 1 <= chunk_tokens <= DRAW_CHUNK:
            raise ValueError(f"chunk_tokens must be between 1 and {DRAW_CHUNK}. Received: chunk_tokens={chunk_tokens}")
        self.generator, self.tokenizer = generator, tokenizer
        self.max_rows, self.chunk_tokens = max_rows, chunk_tokens
        self._strings = np.array(tokenizer.token_strings(), dtype=object)
        self._vocabulary = tokenizer.token_strings()
        self._window_extra = max(len(token) for token in self._vocabulary)
        self._waiting: collections.deque[Ticket] = collections.deque()
        self._wake = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.rows: list[_Row] = []  # in the order of the loop's batch
        # The loop's one graph, called directly: a call then costs far less Python than through tf.function.
        self._draw = generator.draw.get_concrete_function()
        self._logits = self._states = None  # (B, V), (S, B, U)

    # --- the caller's side -------------------------------------------------------------------

    def start(self) -> "Batcher":
        """Start the loop's thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="textgen-batcher", daemon=True)
            self._thread.start()
        return self

    def submit(self, request: SampleRequest, listener: Listener) -> Ticket:
        """Queue ``request``; ``listener`` is called from the loop's thread with each call's updates."""
        ticket = Ticket(request, listener)
        # Encoded here, on the caller's thread: a prompt the tokenizer refuses raises to the caller, and
        # its warnings (characters it never saw) reach the caller too. An empty prompt reads the start
        # token, as ``Generator.warm`` does.
        ticket.prompt_ids = {prompt: list(self.tokenizer.encode_prompt(prompt)) if prompt else
                             [self.generator.start_id] for prompt in request.prompts}
        with self._wake:
            if self._closing:
                raise RuntimeError("the batcher is closed")
            self._waiting.append(ticket)
            self._wake.notify()
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Drop the ticket's rows at the next call of the loop (or before they join it)."""
        ticket.cancelled = True
        with self._wake:
            self._wake.notify()

    def close(self, timeout: float | None = None) -> None:
        """Stop the loop once the call in flight ends; tickets not finished are cancelled."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def active_rows(self) -> int:
        """Rows in the loop now (not counting requests still waiting)."""
        return len(self.rows)

    def warm_up(self) -> None:
        """Compile the loop for every batch size class it can meet, so that no request waits for a compiler."""
        for size in [*_padding_sizes(), XLA_MAX_BATCH + 1]:
            logits, states = self._zero_rows(size)
            self.generator.draw(logits, states, tf.zeros([size], tf.uint32), tf.zeros([size], tf.int32),
                                tf.constant(1), tf.ones([size]), tf.zeros([size], tf.int32), tf.ones([size]),
                                tf.zeros([size, self.chunk_tokens], tf.int32), tf.ones([size], tf.int32))

    def _zero_rows(self, count: int):
        """Logits (count, V) and states (S, count, U) of rows that have read nothing yet."""
        logits = tf.zeros([count, len(self._vocabulary)], tf.float32)
        return logits, tf.stack(self.generator.stepper.initial_states(count))

    # --- the loop's side ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closing and not self.rows and not self._waiting:
                    self._wake.wait()
                if self._closing:
                    break
            try:
                self._drop_cancelled()
                self._admit()
                if self.rows:
                    self._step()
            except Exception as exc:  # every listener hears of it; the loop starts again empty
                self._fail_all(exc)
        for ticket in {id(row.ticket): row.ticket for row in self.rows}.values():
            ticket.cancelled = True
            ticket.done.set()
        with self._wake:
            for ticket in self._waiting:
                ticket.cancelled = True
                ticket.done.set()
            self._waiting.clear()

    def _admit(self) -> None:
        """Append the rows of the waiting requests that fit to the batch, each with a zero state and its key."""
        joining: list[_Row] = []
        with self._wake:
            while self._waiting:
                ticket = self._waiting[0]
                if ticket.cancelled:
                    self._waiting.popleft()
                    ticket.done.set()
                    continue
                rows = ticket.request.rows
                # A request larger than max_rows runs when the loop is empty, alone.
                if (self.rows or joining) and len(self.rows) + len(joining) + len(rows) > self.max_rows:
                    break
                self._waiting.popleft()
                joining += [_Row(ticket, index, prompt, ticket.prompt_ids[prompt]) for index, prompt in enumerate(rows)]
        if not joining:
            return
        keys = row_keys(tf.constant([row.ticket.request.settings.seed for row in joining], tf.int64),
                        tf.constant([row.index for row in joining], tf.int32)).numpy()
        for row, key in zip(joining, keys.tolist()):
            row.key = key
        logits, states = self._zero_rows(len(joining))
        if self.rows:
            logits = tf.concat([self._logits, logits], 0)
            states = tf.concat([self._states, states], 1)
        self._logits, self._states = logits, states
        self.rows += joining

    def _drop_cancelled(self) -> None:
        gone = {id(row.ticket): row.ticket for row in self.rows if row.ticket.cancelled}
        if gone:
            self._keep([b for b, row in enumerate(self.rows) if not row.ticket.cancelled])
            for ticket in gone.values():
                ticket.done.set()

    def _keep(self, kept: list[int]) -> None:
        """Keep only the rows at ``kept`` (batch positions, in order)."""
        if len(kept) == len(self.rows):
            return
        self.rows = [self.rows[b] for b in kept]
        if kept:
            index = tf.constant(kept, tf.int32)
            self._logits = tf.gather(self._logits, index)
            self._states = tf.gather(self._states, index, axis=1)
        else:
            self._logits = self._states = None

    def _step(self) -> None:
        """One call of the loop for every row, then each row's new tokens, stops and updates."""
        rows = self.rows
        batch = len(rows)
        unread = [len(row.prompt_ids) - row.read for row in rows]
        count = min(self.chunk_tokens, max(left + row.length - len(row.ids) for row, left in zip(rows, unread)))
        waiting = [left for row, left in zip(rows, unread) if not row.ids]
        if waiting:
            # A row waits for its first token: the call ends as soon as every such row has one (or has
            # read as much of its prompt as a call can), so that it is sent without waiting for the others.
            count = min(count, max(waiting) + 1)
        # Every per-row input is built at the padded size: XLA compiles once per batch size, so small
        # batches run at a few sizes, padded with rows that draw greedily from zeros and are dropped after.
        padded = _padded_size(batch)
        forced = np.zeros((padded, self.chunk_tokens), np.int32)
        forced_counts = np.zeros(padded, np.int32)
        forced_counts[:batch] = np.minimum(unread, count)
        keys, positions = np.zeros(padded, np.uint32), np.zeros(padded, np.int32)
        temperature, top_k, top_p = np.ones(padded, np.float32), np.zeros(padded, np.int32), np.ones(padded, np.float32)
        for b, row in enumerate(rows):
            forced[b, :forced_counts[b]] = row.prompt_ids[row.read:row.read + forced_counts[b]]
            keys[b], positions[b] = row.key, len(row.ids)
            temperature[b], top_k[b], top_p[b] = row.temperature, row.top_k, row.top_p
        logits, states = self._logits, self._states
        if padded != batch:
            logits = tf.pad(logits, [[0, padded - batch], [0, 0]])
            states = tf.pad(states, [[0, 0], [0, padded - batch], [0, 0]])
        inputs = [logits, states, keys, positions, np.int32(count), temperature, top_k, top_p, forced, forced_counts]
        ids, scores, logits, states = self._draw(*inputs)
        self._logits, self._states = (logits, states) if padded == batch else (logits[:batch], states[:, :batch])
        ids, scores = ids.numpy()[:count, :batch], scores.numpy()[:count, :batch]  # (n, B)

        updates: dict[int, tuple[Ticket, list[RowUpdate]]] = {}
        kept = []
        for b, row in enumerate(rows):
            read = int(forced_counts[b])
            row.read += read
            sample = self._advance(row, ids[read:, b], scores[read:, b])
            if sample is None:
                kept.append(b)
            update = self._released(row, sample)
            if update is not None:
                updates.setdefault(id(row.ticket), (row.ticket, []))[1].append(update)
        self._keep(kept)
        still_running = {id(row.ticket) for row in self.rows}
        for key, (ticket, items) in updates.items():
            if ticket.cancelled:
                continue
            try:
                ticket.listener(items)
            except Exception:  # that listener's request alone ends; every other row goes on
                ticket.cancelled = True
                ticket.done.set()
                continue
            if key not in still_running:
                ticket.done.set()

    def _released(self, row: _Row, sample: Sample | None) -> RowUpdate | None:
        """The update to give the listener for ``row`` now, if any: its first text as soon as there is some,
        then text every ``chunk_tokens`` tokens, and the rest with its sample when it ends."""
        if sample is not None:
            update = RowUpdate(row.index, sample.text[row.released:], sample)
            row.released = len(sample.text)
            return update
        if row.released and len(row.ids) - row.released_at < self.chunk_tokens:
            return None
        hold_back = max((len(item) for item in row.stops), default=1) - 1
        end = max(len(row.text) - hold_back, row.released)
        if end == row.released:
            return None
        update = RowUpdate(row.index, row.text[row.released:end])
        row.released, row.released_at = end, len(row.ids)
        return update

    def _advance(self, row: _Row, ids: np.ndarray, scores: np.ndarray) -> Sample | None:
        """Add this call's tokens to ``row``; its ``Sample`` if it has ended, else None."""
        room = row.length - len(row.ids)
        ids, scores = ids[:room], scores[:room]
        if not row.stops:
            row.ids += ids.tolist()
            row.scores += scores.tolist()
            row.text += "".join(self._strings[ids].tolist())
            return self._finish(row, row.text, STOP_LENGTH, None) if len(row.ids) == row.length else None
        # A stop string that ends in the newest token lies within this many characters of the end.
        window = max(len(item) for item in row.stops) + self._window_extra
        for token, score in zip(ids.tolist(), scores.tolist()):
            row.ids.append(token)
            row.scores.append(score)
            row.text += self._vocabulary[token]
            tail = row.text[-window:]
            if any(item in tail for item in row.stops):
                # The text ends before the earliest stop string in it; ties go to the first listed.
                start = min(row.text.find(item) for item in row.stops if item in row.text)
                stop_string = next(item for item in row.stops if row.text.startswith(item, start))
                return self._finish(row, row.text[:start], STOP_STRING, stop_string)
        return self._finish(row, row.text, STOP_LENGTH, None) if len(row.ids) == row.length else None

    def _finish(self, row: _Row, text: str, stop_reason: str, stop_string: str | None) -> Sample:
        token_ids = np.array(row.ids, np.int32)
        logprobs = np.array(row.scores, np.float32)
        token_ids.flags.writeable = logprobs.flags.writeable = False
        return Sample(row.index, row.prompt, text, token_ids, logprobs, stop_reason, stop_string, row.ticket.request,
                      self._vocabulary)

    def _fail_all(self, error: BaseException) -> None:
        tickets = {id(row.ticket): row.ticket for row in self.rows}
        self.rows, self._logits, self._states = [], None, None
        for ticket in tickets.values():
            ticket.error = error
            if not ticket.cancelled:
                ticket.listener(error)
            ticket.done.set()


def _padding_sizes() -> list[int]:
    """The batch sizes batches are padded to: powers of two up to PADDING_STEP, then multiples of it
    up to XLA_MAX_BATCH. A batch wastes fewer than PADDING_STEP rows, and the loop compiles for at most
    a dozen sizes."""
    sizes, size = [], 1
    while size < PADDING_STEP:
        sizes.append(size)
        size *= 2
    return sizes + list(range(PADDING_STEP, XLA_MAX_BATCH, PADDING_STEP)) + [XLA_MAX_BATCH]


def _padded_size(batch: int) -> int:
    """The batch size a batch of ``batch`` rows runs at: the next padding size, or itself above XLA_MAX_BATCH."""
    return next((size for size in _padding_sizes() if size >= batch), batch)
