import numpy as np
import pytest

from textgen.data import TrainWindows, eval_batches, split_ids
from textgen.errors import TrainingError


def test_split_keeps_the_last_fraction_for_validation():
    ids = np.arange(100)
    train, val = split_ids(ids, 0.1)
    assert train.tolist() == list(range(90))
    assert val.tolist() == list(range(90, 100))


def test_split_refuses_a_validation_set_too_small_to_measure():
    with pytest.raises(TrainingError, match="validation"):
        split_ids(np.arange(5), 0.1)


def test_targets_are_inputs_shifted_by_one():
    ids = np.arange(1000, dtype=np.int32)
    windows = TrainWindows(ids, seq_length=10, batch_size=4, seed=1)
    x, y = windows.batch(epoch=1, step=0)
    assert x.shape == y.shape == (4, 10)
    np.testing.assert_array_equal(y, x + 1)


def test_order_is_a_pure_function_of_seed_and_epoch():
    ids = np.arange(5000, dtype=np.int32)
    first = TrainWindows(ids, 10, 8, seed=3)
    second = TrainWindows(ids, 10, 8, seed=3)
    # Visiting epochs in another order must not change any batch.
    later = second.batch(2, 5)
    np.testing.assert_array_equal(first.batch(1, 0)[0], second.batch(1, 0)[0])
    np.testing.assert_array_equal(first.batch(2, 5)[0], later[0])
    assert not np.array_equal(first.batch(1, 0)[0], first.batch(2, 0)[0])
    assert not np.array_equal(first.batch(1, 0)[0], TrainWindows(ids, 10, 8, seed=4).batch(1, 0)[0])


def test_an_epoch_visits_distinct_windows():
    ids = np.arange(10_001, dtype=np.int32)
    windows = TrainWindows(ids, 10, 4, seed=0)
    starts = [int(windows.batch(1, s)[0][r, 0]) for s in range(windows.steps_in_epoch(1)) for r in range(4)]
    assert len(set(starts)) == len(starts)
    assert len(starts) >= 990


def test_too_few_windows_for_one_batch_is_a_clear_error():
    with pytest.raises(TrainingError, match="fewer than one batch"):
        TrainWindows(np.arange(50, dtype=np.int32), seq_length=10, batch_size=8, seed=0)


def test_eval_batches_count_every_target_once():
    ids = np.arange(53, dtype=np.int32)
    batches = list(eval_batches(ids, seq_length=10, batch_size=2))
    assert all(x.shape == (2, 10) for x, _, _ in batches)
    targets = np.concatenate([y[w > 0] for _, y, w in batches])
    inputs = np.concatenate([x[w > 0] for x, _, w in batches])
    np.testing.assert_array_equal(targets, np.arange(1, 53))
    np.testing.assert_array_equal(inputs, np.arange(0, 52))
