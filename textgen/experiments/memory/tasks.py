"""Synthetic long-memory tasks whose dependency distance is set exactly.

Each task writes character sequences over one small shared ``ALPHABET``. Every
sequence holds one *episode*: a key symbol at position ``j - D``, then ``D - 2``
symbols that say nothing about the key, then a marker at ``j - 1`` that says
"the answer comes next", then the answer at position ``j``, the *dependent
position*. The answer is a fixed function of the key and of nothing else, so a
model that has forgotten the key can do no better than guess among the
``kinds`` possible answers: chance accuracy is exactly ``1 / kinds``. The
marker removes any need to count or guess *when* the answer comes; only
*which* answer is left, and that needs a memory of D steps.

The three tasks, with D = 8 (``k`` the key, ``^`` the answer)::

    copy      bd2hcgaf=2ea     a digit, random letters, '=', the same digit
                ^      ^
    brackets  a(fe<b;>d;)c     an opening bracket, letters with short nested
               ^       ^       pairs of random kinds, ';', the matching closer
    quote     h'gc ab.'fb      a quote mark opened, text (letters and spaces),
               ^      ^        '.', the same mark closing it

``brackets`` is the hardest to fake: the brackets nearest to the answer are
the inner pairs', so a model that only remembers the most recent bracket
fails; it must keep the outermost one for D steps. Inner pairs have random
kinds and close within ``MAX_INNER`` characters; each closer also follows a
';', so the model must also know whether an inner pair is still open.

Outside the episode (``pad`` positions in all, split at random before and
after it) sequences hold the task's filler. Every sequence has ``D + 1 + pad``
tokens.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from textgen.config import SEED_MAX, check_int
from textgen.errors import ConfigError

TASKS = ("copy", "brackets", "quote")

LETTERS = "abcdefgh"
COPY_KEYS, COPY_MARK = "0123", "="
OPENERS, CLOSERS, BRACKET_MARK = "([{<", ")]}>", ";"
QUOTES, QUOTE_MARK = "\"'`|", "."

# One alphabet for every task, so every model has the same vocabulary whatever it trains on.
ALPHABET = LETTERS + " " + COPY_KEYS + COPY_MARK + OPENERS + CLOSERS + BRACKET_MARK + QUOTES + QUOTE_MARK
INDEX = {char: i for i, char in enumerate(ALPHABET)}

MAX_INNER = 8  # the longest inner bracket pair, brackets included
INNER_RATE = 0.1  # chance that an inner pair starts at a free position of the brackets task
SPACE_RATE = 0.2  # share of spaces in the quote task's text
MIN_DISTANCE = 2  # key, marker, answer
MAX_DISTANCE = 100_000

_KEYS = {"copy": COPY_KEYS, "brackets": OPENERS, "quote": QUOTES}
_ANSWERS = {"copy": COPY_KEYS, "brackets": CLOSERS, "quote": QUOTES}
_MARKS = {"copy": COPY_MARK, "brackets": BRACKET_MARK, "quote": QUOTE_MARK}


def _ids(chars: str) -> np.ndarray:
    return np.array([INDEX[char] for char in chars], np.int32)


@dataclasses.dataclass(frozen=True)
class SyntheticSet:
    """Sequences of one task at one distance.

    ``tokens`` (N, L) int32 are ids into ``ALPHABET``; ``dependent`` (N,) is,
    for each sequence, the position j whose token depends on the key at
    ``j - distance``.
    """

    task: str
    distance: int
    tokens: np.ndarray  # (N, L) int32
    dependent: np.ndarray  # (N,) int64

    @property
    def kinds(self) -> int:
        """How many answers are possible at a dependent position."""
        return kinds(self.task)

    @property
    def chance(self) -> float:
        """The accuracy of the best guess made without remembering the key."""
        return 1.0 / self.kinds

    def texts(self) -> list[str]:
        """The sequences as strings."""
        return [decode(row) for row in self.tokens]

    def answers(self) -> np.ndarray:
        """(N,) the token at each dependent position."""
        return self.tokens[np.arange(len(self.tokens)), self.dependent]


def kinds(task: str) -> int:
    """How many different keys (and answers) ``task`` has."""
    _check_task(task)
    return len(_KEYS[task])


def answer_for(task: str, key: str) -> str:
    """The answer that a key calls for: the digit itself, the matching closer, the same quote mark."""
    _check_task(task)
    position = _KEYS[task].find(key) if len(key) == 1 else -1
    if position < 0:
        raise ConfigError(f"not a key of the {task} task (keys: {_KEYS[task]!r}). Received: key={key!r}")
    return _ANSWERS[task][position]


def decode(ids) -> str:
    """Token ids -> text."""
    return "".join(ALPHABET[int(i)] for i in ids)


def encode(text: str) -> np.ndarray:
    """Text over ``ALPHABET`` -> (len,) int32 ids."""
    unknown = sorted(set(text) - set(ALPHABET))
    if unknown:
        raise ConfigError(f"text has characters outside the synthetic alphabet {ALPHABET!r}. Received: char={unknown[0]!r}")
    return _ids(text)


def _check_task(task) -> None:
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}. Received: task={task!r}")


def _letters(rng: np.random.Generator, shape) -> np.ndarray:
    return _ids(LETTERS)[rng.integers(0, len(LETTERS), size=shape)]


def _text(rng: np.random.Generator, shape) -> np.ndarray:
    """Letters and about SPACE_RATE spaces: word-like text with nothing to remember."""
    chars = _letters(rng, shape)
    return np.where(rng.random(shape) < SPACE_RATE, INDEX[" "], chars).astype(np.int32)


def _bracket_filler(rng: np.random.Generator, length: int) -> np.ndarray:
    """``length`` ids of letters with short inner bracket pairs of random kinds, each closed after a ';'."""
    out = _letters(rng, length)
    i = 0
    while i < length:
        room = min(MAX_INNER, length - i)
        if room >= 3 and rng.random() < INNER_RATE:
            size = int(rng.integers(3, room + 1))  # opener, size - 3 letters, ';', closer
            kind = int(rng.integers(0, len(OPENERS)))
            out[i] = INDEX[OPENERS[kind]]
            out[i + size - 2] = INDEX[BRACKET_MARK]
            out[i + size - 1] = INDEX[CLOSERS[kind]]
            i += size
        else:
            i += 1
    return out


def generate(task: str, distance: int, count: int, seed, pad: int = 4) -> SyntheticSet:
    """``count`` sequences of ``task`` whose answer depends on the key ``distance`` tokens earlier.

    ``seed`` is an int or a ``numpy.random.Generator`` (which is advanced, so
    successive calls give fresh batches); the same int gives the same set.
    Every sequence has ``distance + 1 + pad`` tokens; the episode starts at a
    random offset in ``[0, pad]``.
    """
    _check_task(task)
    check_int("distance", distance, MIN_DISTANCE, MAX_DISTANCE)
    check_int("count", count, 1, 10_000_000)
    check_int("pad", pad, 0, MAX_DISTANCE)
    if isinstance(seed, np.random.Generator):
        rng = seed
    else:
        check_int("seed", seed, 0, SEED_MAX)
        rng = np.random.default_rng(seed)
    distance, count, pad = int(distance), int(count), int(pad)
    length = distance + 1 + pad
    rows = np.arange(count)

    fill = _text if task == "quote" else _letters
    tokens = fill(rng, (count, length))  # (N, L): filler everywhere, then the episode is written over it
    start = rng.integers(0, pad + 1, size=count)  # (N,) position of the key
    dependent = start + distance  # (N,)
    key_kind = rng.integers(0, kinds(task), size=count)  # (N,)
    if task == "brackets":
        # Inner pairs need a loop; filler between key and marker is D - 2 ids.
        for row in range(count):
            tokens[row, start[row] + 1:dependent[row] - 1] = _bracket_filler(rng, distance - 2)
    tokens[rows, start] = _ids(_KEYS[task])[key_kind]
    tokens[rows, dependent - 1] = INDEX[_MARKS[task]]
    tokens[rows, dependent] = _ids(_ANSWERS[task])[key_kind]
    return SyntheticSet(task, distance, tokens.astype(np.int32), dependent.astype(np.int64))
