"""Windows over lazy token ids: splits, shuffled training batches, evaluation batches."""

import threading

import numpy as np
import pytest

from textgen.data.windows import READ_AHEAD, TrainWindows, eval_batches, permute, split_ids
from textgen.errors import CorpusError, TrainingError
from textgen.data.token_cache import load_token_cache
from textgen.data.token_cache import write_shards


@pytest.fixture
def on_disk(tmp_path):
    """Write ids to a token cache in small shards and return them as lazy ``TokenShards``."""
    made = []

    def make(ids, shard_tokens=997):
        folder = tmp_path / f"cache{len(made)}"
        write_shards(folder, [np.asarray(ids)], vocab_size=int(np.max(ids)) + 1, shard_tokens=shard_tokens)
        made.append(folder)
        return load_token_cache(folder).tokens()

    return make


class CountingIds:
    """A lazy id sequence of any length (ids[i] = i mod 2**16) that records every read."""

    def __init__(self, length, start=0):
        self.length, self.start, self.reads = length, start, []

    def __len__(self):
        return self.length

    def __getitem__(self, key):
        start, stop, _ = key.indices(self.length)
        view = CountingIds(max(stop - start, 0), self.start + start)
        view.reads = self.reads
        return view

    def __array__(self, dtype=None, copy=None):
        self.reads.append(self.length)
        return (np.arange(self.start, self.start + self.length) % 2**16).astype(dtype or np.int32)


def test_split_keeps_the_last_fraction_for_validation(on_disk):
    for ids in (np.arange(100), on_disk(np.arange(100))):
        train, val = split_ids(ids, 0.1)
        assert np.asarray(train).tolist() == list(range(90))
        assert np.asarray(val).tolist() == list(range(90, 100))


def test_split_refuses_a_validation_set_too_small_to_measure():
    with pytest.raises(TrainingError, match="validation"):
        split_ids(np.arange(5), 0.1)


def test_targets_are_inputs_shifted_by_one(on_disk):
    windows = TrainWindows(on_disk(np.arange(1000)), seq_length=10, batch_size=4, seed=1)
    x, y = windows.batch(epoch=1, step=0)
    assert x.shape == y.shape == (4, 10) and x.dtype == np.int32
    np.testing.assert_array_equal(y, x + 1)


def test_order_is_a_pure_function_of_seed_and_epoch(on_disk):
    ids = on_disk(np.arange(5000))
    first = TrainWindows(ids, 10, 8, seed=3)
    second = TrainWindows(on_disk(np.arange(5000), shard_tokens=61), 10, 8, seed=3)
    # Visiting epochs in another order, or another instance, must not change any batch.
    later = second.batch(2, 5)
    np.testing.assert_array_equal(first.batch(1, 0)[0], second.batch(1, 0)[0])
    np.testing.assert_array_equal(first.batch(2, 5)[0], later[0])
    assert not np.array_equal(first.batch(1, 0)[0], first.batch(2, 0)[0])
    assert not np.array_equal(first.batch(1, 0)[0], TrainWindows(ids, 10, 8, seed=4).batch(1, 0)[0])


def test_an_epoch_visits_every_window_exactly_once(on_disk):
    ids = on_disk(np.arange(641))  # 64 windows of 10 at offset 0; fewer at other offsets
    windows = TrainWindows(ids, 10, 4, seed=0)
    for epoch in (1, 2, 3):
        offset, count, _ = windows._epoch_layout(epoch)
        steps = windows.steps_in_epoch(epoch)
        assert steps == count // 4
        starts = [int(windows.batch(epoch, s)[0][r, 0]) for s in range(steps) for r in range(4)]
        assert len(set(starts)) == len(starts) == steps * 4
        assert all((start - offset) % 10 == 0 and 0 <= start - offset < count * 10 for start in starts)
        # The whole permutation, leftover windows included, is every window once.
        order = permute(np.arange(count), count, windows._epoch_layout(epoch)[2])
        assert sorted(order.tolist()) == list(range(count))


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 15, 16, 17, 63, 64, 65, 1000, 4097])
def test_permute_is_a_bijection_for_any_count(count):
    keys = np.random.SeedSequence(count).generate_state(6, dtype=np.uint64)
    order = permute(np.arange(count), count, keys)
    assert order.dtype == np.int64
    assert sorted(order.tolist()) == list(range(count))
    if count >= 64:  # a shuffle, not the identity or a rotation
        assert np.mean(np.diff(order) == 1) < 0.1


def test_shuffling_holds_nothing_that_grows_with_the_corpus():
    # 10**12 windows: any per-epoch permutation array would need terabytes.
    ids = CountingIds(10**13)
    windows = TrainWindows(ids, seq_length=10, batch_size=4, seed=5)
    x, y = windows.batch(epoch=7, step=123_456_789)
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    assert ids.reads == [11] * 4  # one window per read, nothing else
    assert windows.steps_in_epoch(7) >= 10**12 // 4 - 1


def test_too_few_windows_for_one_batch_is_a_clear_error():
    with pytest.raises(TrainingError, match="fewer than one batch"):
        TrainWindows(np.arange(50, dtype=np.int32), seq_length=10, batch_size=8, seed=0)


def test_eval_batches_count_every_target_once(on_disk):
    for ids in (np.arange(53, dtype=np.int32), on_disk(np.arange(53), shard_tokens=7)):
        batches = list(eval_batches(ids, seq_length=10, batch_size=2))
        assert all(x.shape == (2, 10) for x, _, _ in batches)
        targets = np.concatenate([y[w > 0] for _, y, w in batches])
        inputs = np.concatenate([x[w > 0] for x, _, w in batches])
        np.testing.assert_array_equal(targets, np.arange(1, 53))
        np.testing.assert_array_equal(inputs, np.arange(0, 52))


def test_eval_batches_read_one_batch_at_a_time():
    ids = CountingIds(100_001)
    batches = eval_batches(ids, seq_length=10, batch_size=8)
    for _ in range(5):
        next(batches)
    assert ids.reads == [81] * 5


def test_read_ahead_batches_equal_direct_batches_from_any_step(on_disk):
    windows = TrainWindows(on_disk(np.arange(3000)), 10, 4, seed=2)
    steps = windows.steps_in_epoch(3)
    read_ahead = list(windows.epoch_batches(3, 5, steps))
    assert len(read_ahead) == steps - 5
    for step, (x, y) in enumerate(read_ahead, start=5):
        direct_x, direct_y = windows.batch(3, step)
        assert x.dtype == y.dtype == np.int32
        np.testing.assert_array_equal(x, direct_x)
        np.testing.assert_array_equal(y, direct_y)


def test_an_epoch_left_early_stops_its_reader(on_disk, monkeypatch):
    windows = TrainWindows(on_disk(np.arange(30000)), 10, 4, seed=2)
    read = []
    original = TrainWindows.batch

    def counted(self, epoch, step, rows=slice(None)):
        read.append(step)
        return original(self, epoch, step, rows)

    monkeypatch.setattr(TrainWindows, "batch", counted)
    batches = windows.epoch_batches(1, 0, windows.steps_in_epoch(1))
    for _ in range(3):
        next(batches)
    batches.close()
    assert not any(thread.name == "textgen-batches" for thread in threading.enumerate())
    # Read: the 3 batches taken, READ_AHEAD waiting in the queue, and at most one more in hand.
    assert read == list(range(len(read))) and len(read) <= 3 + READ_AHEAD + 1


def test_an_error_while_reading_ahead_is_raised_as_itself(on_disk, monkeypatch):
    windows = TrainWindows(on_disk(np.arange(3000)), 10, 4, seed=2)

    def broken(self, epoch, step, rows=slice(None)):
        raise CorpusError("a token cache shard is shorter than its manifest says. Received: shard='x'")

    monkeypatch.setattr(TrainWindows, "batch", broken)
    with pytest.raises(CorpusError, match="shorter than its manifest"):
        list(windows.epoch_batches(1, 0, 3))
