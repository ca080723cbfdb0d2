"""Continuous batching: rows join and leave one loop, and each request's samples equal generate's."""

import threading
import time

import numpy as np
import pytest

from textgen.generation.batching import Batcher, _padded_size
from textgen.generation.request import SampleRequest

# Prompts with characters the tiny corpus has, of several lengths (an empty one starts a line).
PROMPTS = ["", "The ", "x_1 = 42", "End", "Hello, wor", "a"]
STOPS = [[], ["\n"], ["e", "th"], [" ", "x"], ["Hello"]]


def mixed_requests(count, seed=0):
    """``count`` requests of mixed prompts, lengths, settings, stops and samples per prompt."""
    rng = np.random.default_rng(seed)
    requests = []
    for _ in range(count):
        prompts = [PROMPTS[i] for i in rng.choice(len(PROMPTS), size=int(rng.integers(1, 3)), replace=False)]
        settings = dict(length=int(rng.integers(1, 70)), temperature=float(rng.choice([0.0, 0.4, 1.0, 1.7])),
                        top_k=int(rng.choice([0, 1, 4])), top_p=float(rng.choice([1.0, 0.9, 0.5])),
                        seed=int(rng.integers(0, 2**31 - 1)), num_samples=int(rng.integers(1, 3)))
        requests.append((prompts, STOPS[int(rng.integers(0, len(STOPS)))], settings))
    return requests


def assert_same_sample(got, expected):
    assert (got.index, got.prompt, got.text, got.stop_reason, got.stop_string) == \
        (expected.index, expected.prompt, expected.text, expected.stop_reason, expected.stop_string)
    np.testing.assert_array_equal(got.token_ids, expected.token_ids)
    np.testing.assert_allclose(got.logprobs, expected.logprobs, atol=1e-4)


class Collector:
    """A listener that keeps every update, and each row's sample once it ends."""

    def __init__(self):
        self.updates, self.samples, self.errors = [], {}, []

    def __call__(self, items):
        if isinstance(items, BaseException):
            self.errors.append(items)
            return
        self.updates += items
        self.samples.update({item.index: item.sample for item in items if item.sample is not None})


@pytest.fixture()
def batcher(tiny_model):
    running = Batcher(tiny_model.generator, tiny_model.tokenizer, max_rows=256, chunk_tokens=8).start()
    yield running
    running.close(timeout=30)


@pytest.mark.filterwarnings("ignore::textgen.tokenization.tokenizer.UnknownTokenWarning")
def test_every_request_beside_others_equals_generate_alone(tiny_model, batcher):
    requests = mixed_requests(30)
    tickets = []
    for prompts, stop, settings in requests:
        request = SampleRequest.check(prompts, stop, vocab_size=tiny_model.config.vocab_size, **settings)
        collector = Collector()
        tickets.append((batcher.submit(request, collector), collector))
        time.sleep(0.005)  # requests arrive while others run: rows join a moving batch
    for ticket, _ in tickets:
        assert ticket.done.wait(120)
    rows_seen = 0
    for (prompts, stop, settings), (ticket, collector) in zip(requests, tickets):
        expected = tiny_model.generate(prompts, stop=stop, details=True, **settings)
        expected = expected if isinstance(expected, list) else [expected]
        assert not collector.errors and sorted(collector.samples) == list(range(len(expected)))
        for row, sample in enumerate(expected):
            assert_same_sample(collector.samples[row], sample)
            # The pieces given while the row ran add up to its text, in order.
            assert "".join(item.text for item in collector.updates if item.index == row) == sample.text
        rows_seen += len(expected)
    assert rows_seen > 40
    assert batcher.active_rows == 0


def test_a_cancelled_request_leaves_the_loop_and_the_others_are_unchanged(tiny_model, batcher):
    vocab = tiny_model.config.vocab_size
    long_request = SampleRequest.check(["The "] * 3, vocab_size=vocab, length=2000, seed=5)
    short = SampleRequest.check("End", vocab_size=vocab, length=300, temperature=1.0, seed=11)
    cancelled, kept = Collector(), Collector()
    ticket = batcher.submit(long_request, cancelled)
    other = batcher.submit(short, kept)
    while not cancelled.updates:
        time.sleep(0.01)
    batcher.cancel(ticket)
    assert ticket.done.wait(30)
    seen = len(cancelled.updates)
    assert other.done.wait(120)
    assert len(cancelled.updates) <= seen + 3  # at most the calls in flight when it was cancelled
    assert not cancelled.samples  # its rows never ended: they were dropped
    assert_same_sample(kept.samples[0], tiny_model.generate("End", length=300, temperature=1.0, seed=11, details=True))
    assert batcher.active_rows == 0


def test_requests_beyond_max_rows_wait_and_then_run(tiny_model):
    batcher = Batcher(tiny_model.generator, tiny_model.tokenizer, max_rows=3, chunk_tokens=4).start()
    try:
        vocab = tiny_model.config.vocab_size
        peak = []
        requests = [SampleRequest.check("a", vocab_size=vocab, length=30, seed=seed, num_samples=2) for seed in range(5)]
        collectors = [Collector() for _ in requests]
        watcher_stop = threading.Event()

        def watch():
            while not watcher_stop.is_set():
                peak.append(batcher.active_rows)
                time.sleep(0.001)

        watcher = threading.Thread(target=watch)
        watcher.start()
        tickets = [batcher.submit(request, collector) for request, collector in zip(requests, collectors)]
        for ticket in tickets:
            assert ticket.done.wait(120)
        watcher_stop.set()
        watcher.join()
        assert max(peak) <= 3
        for seed, collector in enumerate(collectors):
            expected = tiny_model.generate("a", length=30, seed=seed, num_samples=2, details=True)
            for row in range(2):
                assert_same_sample(collector.samples[row], expected[row])
    finally:
        batcher.close(timeout=30)


def test_batches_are_padded_to_few_sizes():
    assert [_padded_size(b) for b in (1, 2, 3, 5, 9, 16, 17, 32, 33, 100, 255, 256, 257, 300)] == \
        [1, 2, 4, 8, 16, 16, 32, 32, 64, 128, 256, 256, 257, 300]
    assert len({_padded_size(b) for b in range(1, 257)}) == 13


def test_a_listener_that_raises_ends_its_own_request_only(tiny_model, batcher):
    vocab = tiny_model.config.vocab_size

    def broken(items):
        raise RuntimeError("a listener's bug")

    failing = batcher.submit(SampleRequest.check("a", vocab_size=vocab, length=500, seed=1), broken)
    kept = Collector()
    other = batcher.submit(SampleRequest.check("End", vocab_size=vocab, length=200, seed=2), kept)
    assert failing.done.wait(60) and other.done.wait(120)
    assert failing.cancelled and not kept.errors
    assert_same_sample(kept.samples[0], tiny_model.generate("End", length=200, seed=2, details=True))
    deadline = time.monotonic() + 10
    while batcher.active_rows and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batcher.active_rows == 0
