"""Sampling: from logits to token ids, how likely the model found them, and where a stop string cuts a sample.

``sample_next`` draws one token per row (greedy, temperature, top-k, top-p),
each row with its own settings and its own random stream, so what a row
draws depends only on its logits, its settings, its key and the position:
never on which rows are drawn beside it. ``row_keys`` gives the key of row
r of a request with seed s. ``log_probability`` scores the ids drawn;
``cut_at_stop`` ends texts before their first stop string. All are plain
TensorFlow ops: they run eagerly, inside the generation loop (under XLA or
not), and in an exported SavedModel, and are tested alone on made-up logits
and texts.
"""

from __future__ import annotations

from textgen.backend import tf

# Odd 32-bit constants: the two multipliers of the integer hash below, and the offsets that keep
# the inputs it mixes (seed, row, position, token) apart.
_MULTIPLY_1 = 0x7FEB352D
_MULTIPLY_2 = 0x846CA68B
_SEED_OFFSET = 0x9E3779B9
_POSITION_OFFSET = 0x85EBCA6B
_TOKEN_OFFSET = 0xC2B2AE35


def _hash32(x):
    """A bijective mix of uint32 values, elementwise: every output bit depends on every input bit.

    Plain uint32 multiplies (which wrap), shifts and xors: the same bits in
    TensorFlow's kernels and under XLA.
    """
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
    x = x * tf.constant(_MULTIPLY_1, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, tf.uint32)))
    x = x * tf.constant(_MULTIPLY_2, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def row_keys(seed, rows):
    """The random key of each row: seed (a scalar or (B,), 0 to SEED_MAX), rows (B,) int -> (B,) uint32.

    Row r of a request with seed s always draws with key row_keys(s, r),
    wherever the row sits in a batch.
    """
    seed = tf.cast(tf.convert_to_tensor(seed), tf.uint32)
    rows = tf.cast(tf.convert_to_tensor(rows), tf.uint32)
    return _hash32(tf.bitwise.bitwise_xor(_hash32(seed + tf.constant(_SEED_OFFSET, tf.uint32)), rows))


def uniform_noise(keys, positions, vocab):
    """Uniform numbers in (0, 1), one per row and token: keys (B,) uint32, positions (B,) int -> (B, V) float32.

    A counter-based stream: the number for (key, position, token) is a hash of
    the three, so any row's draws can be made alone, in any order, in any batch.
    """
    positions = tf.cast(positions, tf.uint32) + tf.constant(_POSITION_OFFSET, tf.uint32)
    per_row = _hash32(tf.bitwise.bitwise_xor(keys, _hash32(positions)))  # (B,)
    per_token = _hash32(tf.cast(tf.range(vocab), tf.uint32) + tf.constant(_TOKEN_OFFSET, tf.uint32))  # (V,)
    bits = _hash32(tf.bitwise.bitwise_xor(per_row[:, tf.newaxis], per_token[tf.newaxis, :]))  # (B, V)
    # The top 23 bits, centred in their interval: (k + 0.5) / 2**23 is exact in float32 and never 0
    # or 1 (with 24 bits the largest would round up to 1, whose Gumbel noise is infinite).
    top = tf.cast(tf.bitwise.right_shift(bits, tf.constant(9, tf.uint32)), tf.float32)
    return (top + 0.5) * (1.0 / (1 << 23))


def _per_row(value, batch, dtype):
    """A setting as one value per row: a scalar is repeated, a (B,) vector kept. -> (B,)."""
    value = tf.convert_to_tensor(value, dtype)
    return tf.broadcast_to(value, [batch])


def gumbel_noise(keys, positions, vocab):
    """Gumbel noise, -log(-log(u)) of ``uniform_noise``: keys (B,) uint32, positions (B,) int -> (B, V) float32."""
    return -tf.math.log(-tf.math.log(uniform_noise(keys, positions, vocab)))


def sample_next(logits, temperature, top_k, top_p, keys, positions):
    """Draw one token per row. logits (B, V) float32 -> ids (B,) int32.

    ``temperature``, ``top_k``, ``top_p`` and ``positions`` are scalars or one
    value per row (B,); ``keys`` (B,) uint32 come from ``row_keys``. A row
    with temperature 0 is greedy (argmax); top_k 0 and top_p 1 switch those
    filters off for a row. A row's draw is argmax(filtered logits /
    temperature + Gumbel noise), which is a draw from the filtered softmax,
    the noise being that row's ``gumbel_noise`` at its position. Inputs are
    assumed valid: ``SampleConfig`` checks them, and the graph must not raise
    halfway through a batch.
    """
    logits = tf.convert_to_tensor(logits, tf.float32)
    batch, vocab = tf.shape(logits)[0], tf.shape(logits)[1]
    positions = _per_row(positions, batch, tf.int32)
    return sample_with_noise(logits, temperature, top_k, top_p, gumbel_noise(keys, positions, vocab))


def sample_with_noise(logits, temperature, top_k, top_p, gumbel):
    """``sample_next`` with each row's Gumbel noise (B, V) given, as ``gumbel_noise`` makes it: a loop that
    knows its positions ahead makes the noise of all its steps at once. -> ids (B,) int32."""
    logits = tf.convert_to_tensor(logits, tf.float32)
    batch, vocab = tf.shape(logits)[0], tf.shape(logits)[1]
    temperature = _per_row(temperature, batch, tf.float32)
    top_k = _per_row(top_k, batch, tf.int32)
    top_p = _per_row(top_p, batch, tf.float32)
    sampled_rows = temperature > 0.0  # (B,)
    scaled = logits / tf.where(sampled_rows, temperature, 1.0)[:, tf.newaxis]  # (B, V)
    very_negative = tf.fill(tf.shape(scaled), tf.constant(-1e30, tf.float32))

    def keep_top_k(values):
        # A sort and a gather rather than tf.math.top_k, whose k must be a compile-time constant under XLA.
        k = tf.where(top_k > 0, tf.minimum(top_k, vocab), vocab)  # (B,)
        ordered = tf.sort(values, axis=-1, direction="DESCENDING")  # (B, V)
        kth = tf.gather(ordered, (k - 1)[:, tf.newaxis], batch_dims=1)  # (B, 1)
        return tf.where(values < kth, very_negative, values)

    def keep_top_p(values):
        ordered = tf.sort(values, axis=-1, direction="DESCENDING")  # (B, V)
        probs = tf.nn.softmax(ordered, axis=-1)
        before = tf.cumsum(probs, axis=-1, exclusive=True)
        # A token stays if the mass before it is below top_p, so the most likely token always stays.
        kept = tf.where(before < top_p[:, tf.newaxis], ordered, tf.fill(tf.shape(ordered), tf.float32.max))
        cutoff = tf.reduce_min(kept, axis=-1, keepdims=True)  # (B, 1)
        filtered = tf.where(values < cutoff, very_negative, values)
        return tf.where((top_p < 1.0)[:, tf.newaxis], filtered, values)

    # Each filter costs a sort of (B, V): skipped when no row asks for it.
    scaled = tf.cond(tf.reduce_any(top_k > 0), lambda: keep_top_k(scaled), lambda: scaled)
    scaled = tf.cond(tf.reduce_any(top_p < 1.0), lambda: keep_top_p(scaled), lambda: scaled)
    drawn = tf.argmax(scaled + gumbel, axis=-1, output_type=tf.int32)  # gumbel (B, V)
    return tf.where(sampled_rows, drawn, tf.argmax(logits, axis=-1, output_type=tf.int32))


def log_probability(logits, ids):
    """log p(id | what came before) per row, under the model's own distribution. logits (B, V), ids (B,) -> (B,).

    The distribution is softmax(logits): the model's, before temperature,
    top-k and top-p reshape it for drawing. So a token's score does not
    depend on how it was drawn (greedy tokens score below 0, filtered-out
    tokens cannot occur), and the sum over a sample is the log-likelihood that
    ``textgen evaluate`` would measure on the same tokens after the same text.
    Natural logarithm (nats).
    """
    logits = tf.convert_to_tensor(logits, tf.float32)
    return tf.gather(tf.nn.log_softmax(logits, axis=-1), tf.convert_to_tensor(ids, tf.int32), batch_dims=1)


@tf.autograph.experimental.do_not_convert
def stop_alternatives(stop):
    """A regex alternation matching any of the non-empty stop strings literally."""
    stop = tf.boolean_mask(stop, tf.strings.length(stop) > 0)
    escaped = tf.strings.regex_replace(stop, r"[\\.^$|?*+()\[\]{}]", r"\\\0")
    return stop, tf.strings.reduce_join(escaped, separator="|")


def cut_at_stop(texts, stop):
    """Drop everything from the earliest stop string on. texts (B,) string -> (B,) string."""
    stop, alternatives = stop_alternatives(tf.convert_to_tensor(stop, tf.string))
    # Leftmost-first matching finds the earliest start among all stop strings.
    pattern = tf.strings.join(["(?s)(?:", alternatives, ").*$"])
    return tf.cond(tf.size(stop) > 0,
                   lambda: tf.strings.regex_replace(texts, pattern, "", replace_global=False),
                   lambda: tf.convert_to_tensor(texts, tf.string))
