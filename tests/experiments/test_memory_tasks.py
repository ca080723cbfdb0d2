"""The synthetic long-memory tasks: exact distances, the right answers, nothing else to go by."""

import collections

import numpy as np
import pytest

from textgen.experiments.memory import tasks as memory_tasks
from textgen.experiments.memory.tasks import ALPHABET, TASKS, answer_for, decode, encode, generate
from textgen.errors import ConfigError

KEYS = {"copy": memory_tasks.COPY_KEYS, "brackets": memory_tasks.OPENERS, "quote": memory_tasks.QUOTES}
MARKS = {"copy": "=", "brackets": ";", "quote": "."}


def bracket_partners(text: str) -> dict[int, int]:
    """Closer position -> opener position, by a stack; fails on any unbalanced or crossed bracket."""
    stack, partners = [], {}
    for i, char in enumerate(text):
        if char in memory_tasks.OPENERS:
            stack.append(i)
        elif char in memory_tasks.CLOSERS:
            opener = stack.pop()
            assert memory_tasks.OPENERS.index(text[opener]) == memory_tasks.CLOSERS.index(char), text
            partners[i] = opener
    assert not stack, text
    return partners


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("distance", [2, 3, 9, 57])
def test_the_answer_is_the_key_distance_tokens_back_and_the_marker_comes_just_before(task, distance):
    data = generate(task, distance, 300, seed=3, pad=5)
    assert data.tokens.shape == (300, distance + 6) and data.tokens.dtype == np.int32
    for text, j in zip(data.texts(), data.dependent):
        key = text[j - distance]
        assert key in KEYS[task]
        assert text[j] == answer_for(task, key)
        assert text[j - 1] == MARKS[task]
        if task == "brackets":
            # The answer closes exactly the bracket opened D tokens back, across the nested pairs.
            assert bracket_partners(text)[j] == j - distance
        else:
            # The key, the marker and the answer are the only non-filler tokens.
            special = [i for i, char in enumerate(text) if char not in memory_tasks.LETTERS + " "]
            assert special == [j - distance, j - 1, j]
    assert np.array_equal(data.answers(), data.tokens[np.arange(300), data.dependent])


def test_brackets_nest_inner_pairs_between_the_outer_ones():
    data = generate("brackets", 60, 200, seed=0)
    inner = 0
    for text, j in zip(data.texts(), data.dependent):
        partners = bracket_partners(text)
        for closer, opener in partners.items():
            assert text[closer - 1] == ";"
            if closer != j:
                inner += 1
                assert j - 60 < opener < closer < j and closer - opener < memory_tasks.MAX_INNER
        assert text.count(";") == len(partners)  # every ';' announces a closer
    assert inner > 200  # about one inner pair every 14 tokens


@pytest.mark.parametrize("task", TASKS)
def test_nothing_but_the_key_tells_the_answer(task):
    """Keys are uniform, and the tokens between key and marker look the same whatever the key."""
    data = generate(task, 20, 8000, seed=1)
    keys = data.tokens[np.arange(len(data.tokens)), data.dependent - 20]
    counts = collections.Counter(decode(keys))
    assert set(counts) == set(KEYS[task]) and min(counts.values()) > 8000 / 4 * 0.9
    histograms = []
    for key in KEYS[task]:
        rows = np.flatnonzero(keys == ALPHABET.index(key))
        between = np.concatenate([data.tokens[r, data.dependent[r] - 19:data.dependent[r] - 1] for r in rows])
        histograms.append(np.bincount(between, minlength=len(ALPHABET)) / len(between))
    for histogram in histograms[1:]:
        assert 0.5 * np.abs(histogram - histograms[0]).sum() < 0.02
    assert data.chance == pytest.approx(0.25) and data.kinds == 4


def test_the_episode_starts_anywhere_in_the_padding():
    data = generate("copy", 5, 2000, seed=2, pad=3)
    assert set((data.dependent - 5).tolist()) == {0, 1, 2, 3}
    assert generate("copy", 5, 10, seed=2, pad=0).dependent.tolist() == [5] * 10


def test_seeds_reproduce_and_a_generator_gives_fresh_batches():
    for task in TASKS:
        a, b = generate(task, 30, 16, seed=11), generate(task, 30, 16, seed=11)
        assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.dependent, b.dependent)
        assert not np.array_equal(a.tokens, generate(task, 30, 16, seed=12).tokens)
    rng = np.random.default_rng(5)
    first, second = generate("quote", 30, 16, rng), generate("quote", 30, 16, rng)
    assert not np.array_equal(first.tokens, second.tokens)
    rng = np.random.default_rng(5)
    assert np.array_equal(generate("quote", 30, 16, rng).tokens, first.tokens)


def test_text_round_trips_and_the_alphabet_is_small():
    assert len(ALPHABET) == len(set(ALPHABET)) == 28
    text = 'ab 0=([{<)]}>;"\'`|.'
    assert decode(encode(text)) == text
    with pytest.raises(ConfigError, match=r"Received: char='Z'$"):
        encode("abZ")


@pytest.mark.parametrize(("arguments", "message"), [
    (("parity", 10, 4), r"Received: task='parity'$"),
    (("copy", 1, 4), r"Received: distance=1$"),
    (("copy", True, 4), r"Received: distance=True$"),
    (("copy", 10.0, 4), r"Received: distance=10.0$"),
    (("copy", 10, 0), r"Received: count=0$"),
])
def test_bad_arguments_are_refused(arguments, message):
    with pytest.raises(ConfigError, match=message):
        generate(*arguments, seed=0)
    with pytest.raises(ConfigError, match=r"Received: seed=-1$"):
        generate("copy", 10, 4, seed=-1)
    with pytest.raises(ConfigError, match=r"Received: key='\)'$"):
        answer_for("brackets", ")")
