"""Sampling: from logits to token ids, how likely the model found them, and where a stop string cuts a sample.

``sample_next`` draws one token per row (greedy, temperature, top-k, top-p)
with a stateless seed, so the same logits and seed give the same ids in any
graph; ``log_probability`` scores the ids drawn; ``cut_at_stop`` ends texts
before their first stop string. All are plain TensorFlow ops: they run
eagerly, inside the generation loop, and in an exported SavedModel, and are
tested alone on made-up logits and texts.
"""

from __future__ import annotations

from textgen.backend import tf


def sample_next(logits, temperature, top_k, top_p, seed_pair, gumbel: bool = False):
    """Draw one token per row. logits (B, V) float32 -> ids (B,) int32.

    temperature 0 is greedy (argmax); top_k 0 and top_p 1 switch those
    filters off. Inputs are assumed valid: ``SampleConfig`` checks them, and
    the graph must not raise halfway through a batch.
    """
    logits = tf.convert_to_tensor(logits, tf.float32)
    temperature = tf.convert_to_tensor(temperature, tf.float32)
    top_k = tf.convert_to_tensor(top_k, tf.int32)
    top_p = tf.convert_to_tensor(top_p, tf.float32)

    def greedy():
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    def sampled():
        scaled = logits / temperature
        vocab = tf.shape(scaled)[-1]
        very_negative = tf.fill(tf.shape(scaled), tf.constant(-1e30, tf.float32))

        def keep_top_k(values):
            # A sort and a gather rather than tf.math.top_k, whose k must be a
            # compile-time constant under XLA.
            k = tf.minimum(top_k, vocab)
            ordered = tf.sort(values, axis=-1, direction="DESCENDING")  # (B, V)
            kth = tf.gather(ordered, tf.reshape(k - 1, [1]), axis=1)  # (B, 1)
            return tf.where(values < kth, very_negative, values)

        scaled = tf.cond(top_k > 0, lambda: keep_top_k(scaled), lambda: scaled)

        def keep_top_p(values):
            ordered = tf.sort(values, axis=-1, direction="DESCENDING")  # (B, V)
            probs = tf.nn.softmax(ordered, axis=-1)
            before = tf.cumsum(probs, axis=-1, exclusive=True)
            # A token stays if the mass before it is below top_p, so the most
            # likely token always stays.
            kept = tf.where(before < top_p, ordered, tf.fill(tf.shape(ordered), tf.float32.max))
            cutoff = tf.reduce_min(kept, axis=-1, keepdims=True)  # (B, 1)
            return tf.where(values < cutoff, very_negative, values)

        scaled = tf.cond(top_p < 1.0, lambda: keep_top_p(scaled), lambda: scaled)
        if not gumbel:
            return tf.random.stateless_categorical(scaled, 1, seed=seed_pair, dtype=tf.int32)[:, 0]
        # Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits).
        # Unlike stateless_categorical it compiles with XLA (outside XLA it is slower).
        uniform = tf.random.stateless_uniform(tf.shape(scaled), seed=seed_pair, minval=1e-30, maxval=1.0, alg="philox")
        return tf.argmax(scaled - tf.math.log(-tf.math.log(uniform)), axis=-1, output_type=tf.int32)

    return tf.cond(temperature > 0.0, sampled, greedy)


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
