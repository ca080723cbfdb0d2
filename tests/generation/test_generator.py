import numpy as np
import pytest

from textgen.backend import keras, tf
from textgen.model.settings import ModelConfig
from textgen.generation.generator import NOISE_AHEAD_ABOVE, XLA_MAX_BATCH, Generator, loop_for_batch
from textgen.generation.sampling import row_keys, sample_next, uniform_noise
from textgen.model.network import ModelStep, build_model

# Fake logits: token 2 likeliest, then 0, then 3, then 1.
FAKE = np.log(np.array([[0.3, 0.05, 0.5, 0.15]], np.float32))


def draw(logits, temperature=1.0, top_k=0, top_p=1.0, rows=4000, seed=0):
    batch = np.repeat(logits, rows, axis=0)
    ids = sample_next(batch, temperature, top_k, top_p, row_keys(seed, tf.range(rows)), 0)
    return ids.numpy()


def test_temperature_zero_is_argmax():
    assert draw(FAKE, temperature=0.0, rows=3).tolist() == [2, 2, 2]


def test_sampling_follows_the_softmax():
    counts = np.bincount(draw(FAKE), minlength=4) / 4000
    np.testing.assert_allclose(counts, [0.3, 0.05, 0.5, 0.15], atol=0.03)


def test_low_temperature_sharpens_and_high_flattens():
    cold = np.bincount(draw(FAKE, temperature=0.2), minlength=4) / 4000
    hot = np.bincount(draw(FAKE, temperature=5.0), minlength=4) / 4000
    assert cold[2] > 0.9
    assert hot.max() - hot.min() < 0.15


def test_top_k_keeps_only_the_k_likeliest():
    assert set(draw(FAKE, top_k=1).tolist()) == {2}
    counts = np.bincount(draw(FAKE, top_k=2), minlength=4) / 4000
    assert counts[1] == counts[3] == 0
    np.testing.assert_allclose(counts[[0, 2]], [0.3 / 0.8, 0.5 / 0.8], atol=0.03)


def test_top_k_larger_than_the_vocabulary_keeps_everything():
    assert set(draw(FAKE, top_k=100).tolist()) == {0, 1, 2, 3}


def test_top_p_keeps_the_smallest_set_reaching_p():
    assert set(draw(FAKE, top_p=0.4).tolist()) == {2}
    assert set(draw(FAKE, top_p=0.7).tolist()) == {0, 2}  # 0.5 < 0.7, then 0.5 + 0.3 covers it
    assert set(draw(FAKE, top_p=0.85).tolist()) == {0, 2, 3}


def test_the_same_seed_gives_the_same_draws():
    np.testing.assert_array_equal(draw(FAKE, seed=5), draw(FAKE, seed=5))
    assert not np.array_equal(draw(FAKE, seed=5), draw(FAKE, seed=6))


@pytest.fixture(scope="module")
def generator():
    keras.utils.set_random_seed(0)
    config = ModelConfig(vocab_size=11, layers=2, units=8, embedding_dim=4, dropout=0.0)
    model = build_model(config)
    generator = Generator(ModelStep(model, config), TOKEN_STRINGS, start_id=10)
    generator.sequence_model = model  # kept for comparisons in these tests
    return generator


TOKEN_STRINGS = ["?", "a", "b", "c", "d", "e", "f", "g", "h", "i", "\n"]


def run(generator, prompts, length=12, temperature=1.0, seed=3, stop=(), with_counts=False):
    values = np.array([token for prompt in prompts for token in prompt], np.int32)
    lengths = np.array([len(p) for p in prompts], np.int32)
    ids, produced = generator.generate(values, lengths, length, temperature, 0, 1.0, tf.constant(seed, tf.int64),
                                       tf.constant(list(stop), tf.string))
    return (ids.numpy(), produced.numpy()) if with_counts else ids.numpy()


def test_generation_is_reproducible_per_seed(generator):
    np.testing.assert_array_equal(run(generator, [[1, 2, 3]]), run(generator, [[1, 2, 3]]))
    assert not np.array_equal(run(generator, [[1, 2, 3]], seed=3), run(generator, [[1, 2, 3]], seed=4))


def test_rows_of_different_prompt_lengths_match_rows_generated_alone(generator):
    together = run(generator, [[5], [1, 2, 3, 4], [7, 7]], temperature=0.0)
    for row, prompt in enumerate([[5], [1, 2, 3, 4], [7, 7]]):
        np.testing.assert_array_equal(together[row], run(generator, [prompt], temperature=0.0)[0])


def test_greedy_generation_follows_the_sequence_model(generator):
    """Feeding the generated ids back through the sequence model gives the same argmax."""
    prompt = [1, 2, 3]
    out = run(generator, [prompt], length=8, temperature=0.0)[0]
    model_input = np.array([prompt + out.tolist()], np.int32)
    logits = generator.sequence_model(model_input, training=False).numpy()[0]  # (T, V)
    np.testing.assert_array_equal(logits[len(prompt) - 1 : -1].argmax(-1), out)


def test_an_empty_prompt_starts_from_the_start_token(generator):
    np.testing.assert_array_equal(run(generator, [[]], temperature=0.0), run(generator, [[10]], temperature=0.0))


def text_of(ids):
    return "".join(TOKEN_STRINGS[i] for i in ids)


def test_rows_stop_at_their_first_stop_string_and_the_loop_ends_early(generator):
    prompts = [[1], [2, 3], [4]]
    free = run(generator, prompts, length=40, seed=9)
    # A stop string taken from row 0's own output, two tokens long.
    stop = text_of(free[0][5:7])
    ids, produced = run(generator, prompts, length=40, seed=9, stop=[stop, "never-generated"], with_counts=True)
    first = text_of(free[0]).find(stop)
    assert produced[0] == first + 2
    np.testing.assert_array_equal(ids[0][: produced[0]], free[0][: produced[0]])
    for row in range(3):
        end = text_of(free[row]).find(stop)
        assert produced[row] == (end + 2 if end >= 0 else 40)
    assert ids.shape[1] == max(produced)  # sampling ended once every row had stopped


def test_stop_strings_are_literal_text_not_patterns(generator):
    stops = ["h.", "b|c", "?", "(", "\\"]  # as patterns, "h." would match "ha" and "?" would not compile
    free = text_of(run(generator, [[1]], length=60, seed=2)[0])
    ids, produced = run(generator, [[1]], length=60, seed=2, stop=stops, with_counts=True)
    # Generation ends where the first stop string is completed, matching it literally.
    ends = [free.find(stop) + len(stop) for stop in stops if free.find(stop) >= 0]
    assert ends, "the fixture should produce at least one stop string"
    assert produced[0] == min(ends)


def test_log_probability_is_the_log_softmax_of_the_raw_logits_at_each_id():
    from textgen.generation.sampling import log_probability

    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]], np.float32)  # (B=2, V=3)
    scores = log_probability(logits, np.array([0, 2], np.int32)).numpy()
    first = np.exp(logits[0]) / np.exp(logits[0]).sum()
    np.testing.assert_allclose(scores, [np.log(first[0]), np.log(1 / 3)], rtol=1e-6)
    # Probabilities of the ids of one row sum to 1: it is a distribution over the vocabulary.
    every = [log_probability(logits[:1], np.array([i], np.int32)).numpy()[0] for i in range(3)]
    assert np.exp(every).sum() == pytest.approx(1.0, abs=1e-6)


def draw_scored(generator, prompts, length, temperature, top_k=0, top_p=1.0, seed=3, carried=None, start=0):
    """Run the chunked loop once from ``start``: -> ids (B, T), log-probabilities (B, T), logits, states."""
    values = np.array([token for prompt in prompts for token in prompt], np.int32)
    lengths = np.array([len(p) for p in prompts], np.int32)
    logits, states, tails, done, produced = generator.begin(values, lengths, start + length, carried)
    ids, scores, logits, states, *_ = generator.sample(
        logits, states, start, start + length, start + length, temperature, top_k, top_p,
        tf.constant(seed, tf.int64), tf.constant([], tf.string), tails, done, produced)
    return ids.numpy(), scores.numpy(), logits, states


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.0, 0, 1.0), (0.5, 3, 0.8)])
def test_each_token_is_scored_under_the_models_own_distribution(generator, temperature, top_k, top_p):
    """Whatever the sampling settings, a token's score is log softmax of the sequence model's logits."""
    prompts = [[1, 2, 3], [4]]
    ids, scores, _, _ = draw_scored(generator, prompts, 10, temperature, top_k, top_p)
    for prompt, row_ids, row_scores in zip(prompts, ids, scores):
        sequence = np.array([prompt + row_ids.tolist()], np.int32)
        logits = generator.sequence_model(sequence, training=False).numpy()[0]  # (T, V)
        log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        expected = log_softmax[np.arange(len(prompt) - 1, sequence.shape[1] - 1), row_ids]
        np.testing.assert_allclose(row_scores, expected, atol=1e-5)
    assert (scores < 0).all()


def test_scores_do_not_change_what_generate_draws(generator):
    ids, _, _, _ = draw_scored(generator, [[1, 2, 3]], 12, 1.0)
    np.testing.assert_array_equal(ids, run(generator, [[1, 2, 3]], length=12, seed=3))


def test_reading_on_from_a_carried_state_equals_reading_everything_at_once(generator):
    """A text read in two parts, the second from the state the first left, ends in the same state."""
    first, second = [1, 2, 3, 4], [5, 6, 7]
    logits, states = generator.warm(np.array(first, np.int32), np.array([4], np.int32))
    carried = generator.read_on(np.array(second, np.int32), np.array([3], np.int32), logits, states)
    whole = generator.warm(np.array(first + second, np.int32), np.array([7], np.int32))
    for part, all_at_once in zip(carried, whole):
        np.testing.assert_allclose(part.numpy(), all_at_once.numpy(), atol=1e-6)
    # An empty text reads nothing.
    unchanged = generator.read_on(np.array([], np.int32), np.array([0], np.int32), logits, states)
    np.testing.assert_array_equal(unchanged[1].numpy(), states.numpy())


def test_sampling_on_from_a_carried_state_continues_the_same_stream(generator):
    """Drawing 6 tokens, then 6 more from the state and token index they left, equals drawing 12 at once."""
    whole, whole_scores, _, _ = draw_scored(generator, [[1, 2]], 12, 1.0)
    head, _, logits, states = draw_scored(generator, [[1, 2]], 6, 1.0)
    tail, tail_scores, _, _ = draw_scored(generator, [[]], 6, 1.0, carried=(logits, states), start=6)
    np.testing.assert_array_equal(np.concatenate([head, tail], axis=1), whole)
    np.testing.assert_allclose(tail_scores, whole_scores[:, 6:], atol=1e-6)


def test_a_rows_draws_depend_on_its_key_and_position_not_on_its_batch():
    logits = np.log(np.random.default_rng(1).dirichlet(np.ones(7), size=6)).astype(np.float32)  # (6, V)
    keys = row_keys(tf.constant([3, 3, 3, 9, 9, 12], tf.int64), tf.constant([0, 1, 2, 0, 1, 0]))
    settings = dict(temperature=[1.0, 0.5, 0.0, 2.0, 1.0, 0.7], top_k=[0, 3, 0, 0, 2, 5], top_p=[1.0, 1.0, 1.0, 0.8, 1.0, 0.9])
    together = sample_next(logits, settings["temperature"], settings["top_k"], settings["top_p"], keys,
                           [5, 5, 5, 0, 1, 7]).numpy()
    for row in range(6):
        alone = sample_next(logits[row:row + 1], settings["temperature"][row], settings["top_k"][row],
                            settings["top_p"][row], keys[row:row + 1], [5, 5, 5, 0, 1, 7][row]).numpy()
        assert alone[0] == together[row]
    # Reversed order, and beside other rows: the same draws.
    order = [5, 4, 3, 2, 1, 0]
    shuffled = sample_next(logits[order], [settings["temperature"][r] for r in order], [settings["top_k"][r] for r in order],
                           [settings["top_p"][r] for r in order], tf.gather(keys, order),
                           [[5, 5, 5, 0, 1, 7][r] for r in order]).numpy()
    assert shuffled.tolist() == together[order].tolist()
    assert together[2] == logits[2].argmax()  # temperature 0 is greedy, whatever its key


def test_the_noise_is_uniform_and_differs_by_key_position_and_token():
    keys = row_keys(7, tf.range(2000))
    noise = uniform_noise(keys, tf.zeros([2000], tf.int32), 50).numpy()  # (2000, 50)
    assert 0.0 < noise.min() and noise.max() < 1.0
    counts = np.histogram(noise, bins=10, range=(0, 1))[0] / noise.size
    np.testing.assert_allclose(counts, 0.1, atol=0.005)
    assert abs(np.corrcoef(noise[:, 0], noise[:, 1])[0, 1]) < 0.1  # tokens of one row
    assert abs(np.corrcoef(noise[:-1, 0], noise[1:, 0])[0, 1]) < 0.1  # neighbouring rows
    later = uniform_noise(keys, tf.ones([2000], tf.int32), 50).numpy()
    assert abs(np.corrcoef(noise.ravel(), later.ravel())[0, 1]) < 0.05  # the next position
    other_seed = uniform_noise(row_keys(8, tf.range(2000)), tf.zeros([2000], tf.int32), 50).numpy()
    assert abs(np.corrcoef(noise.ravel(), other_seed.ravel())[0, 1]) < 0.05


def test_row_draws_are_the_same_under_xla_and_not(generator):
    logits = tf.constant(np.log(np.random.default_rng(2).dirichlet(np.ones(11), size=3)), tf.float32)
    states = tf.stack(generator.stepper.initial_states(3))
    inputs = (logits, states, row_keys(4, tf.range(3)), tf.constant([0, 3, 9]), tf.constant(20),
              tf.constant([1.0, 0.6, 1.3]), tf.constant([0, 4, 0]), tf.constant([1.0, 1.0, 0.9]))
    compiled = generator._draw_compiled(*inputs)
    plain = tf.function(generator._draw_steps)(*inputs)
    np.testing.assert_array_equal(compiled[0].numpy()[:20], plain[0].numpy()[:20])
    # Made ahead, the noise is the same and the first layer's input table gives the same steps.
    for ahead in (generator._draw_compiled(*inputs, noise_ahead=True),
                  tf.function(generator._draw_steps)(*inputs, noise_ahead=True)):
        np.testing.assert_array_equal(ahead[0].numpy()[:20], plain[0].numpy()[:20])
        np.testing.assert_allclose(ahead[2].numpy(), plain[2].numpy(), atol=1e-5)  # logits after the last step


def test_each_batch_size_takes_one_loop_whether_its_size_is_known_or_not(generator):
    sizes = [1, NOISE_AHEAD_ABOVE, NOISE_AHEAD_ABOVE + 1, XLA_MAX_BATCH, XLA_MAX_BATCH + 1]
    assert [int(loop_for_batch(size)) for size in sizes] == [0, 0, 1, 1, 2]
    unknown = tf.function(lambda logits: loop_for_batch(tf.shape(logits)[0]),
                          input_signature=[tf.TensorSpec([None, 11], tf.float32)])
    assert [int(unknown(tf.zeros([size, 11]))) for size in sizes] == [0, 0, 1, 1, 2]


def test_stops_found_a_chunk_at_once_match_a_token_by_token_search():
    # Multi-character and non-ASCII tokens, so that a stop string can span tokens and
    # characters are not bytes.
    strings = ["a", "b", "ab", "é", "ßx", "\n", " ", "ba", "xé"]
    generator = Generator(None, strings, start_id=0)
    stops = ["bab", "é\n", "x"]
    window = max(len(stop) for stop in stops) + generator.longest_token
    pattern = tf.strings.join(["(?s).*(?:", tf.strings.reduce_join(stops, separator="|"), ").*"])
    rng = np.random.default_rng(0)
    for _ in range(40):
        count, batch = int(rng.integers(1, 12)), int(rng.integers(1, 6))
        drawn = rng.integers(0, len(strings), size=(count, batch)).astype(np.int32)
        tails = [str(rng.choice(["", "ba", "é", "zz"])) for _ in range(batch)]
        done = rng.random(batch) < 0.3
        if done.all():
            done[0] = False
        produced = np.full(batch, 99, np.int32)
        kept, new_tails, new_done, new_produced = generator._find_stops(
            tf.constant(drawn), tf.constant(5), tf.constant(tails), tf.constant(done), tf.constant(produced),
            tf.constant(window), pattern)

        # The reference: a tail grown and trimmed token by token, stopping once every row has stopped.
        ref_tails, ref_done, ref_produced, ref_kept = list(tails), done.copy(), produced.copy(), count
        for k in range(count):
            if ref_done.all():
                break
            for b in range(batch):
                ref_tails[b] = (ref_tails[b] + strings[drawn[k, b]])[-window:]
                if not ref_done[b] and any(stop in ref_tails[b] for stop in stops):
                    ref_done[b], ref_produced[b] = True, 5 + k + 1
            ref_kept = k + 1
        assert int(kept) == ref_kept
        np.testing.assert_array_equal(new_done.numpy(), ref_done)
        np.testing.assert_array_equal(new_produced.numpy(), ref_produced)
        if not ref_done.all():  # the tails carry on to the next chunk only while a row is still going
            assert [text.decode("utf-8") for text in new_tails.numpy()] == ref_tails
