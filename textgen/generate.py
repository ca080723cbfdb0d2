"""Sampling and the generation loop, written once in TensorFlow ops.

``sample_next`` turns a batch of logits into token ids (greedy, temperature,
top-k, top-p). ``Generator.generate`` warms the LSTM state on the prompts and
then samples ``length`` tokens, all inside one graph, so the same loop serves
the command line, the Python API and an exported SavedModel.

Randomness is stateless: token t of a run with seed s is drawn with the seed
pair (s, t), so a seed fully determines the text, whatever ran before.
"""

from __future__ import annotations

from textgen.backend import tf
from textgen.model import LSTMStep


def sample_next(logits, temperature, top_k, top_p, seed_pair):
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
            k = tf.minimum(top_k, vocab)
            kth = tf.math.top_k(values, k=k).values[:, -1:]  # (B, 1)
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
        draws = tf.random.stateless_categorical(scaled, 1, seed=seed_pair, dtype=tf.int32)
        return draws[:, 0]

    return tf.cond(temperature > 0.0, sampled, greedy)


class Generator(tf.Module):
    """The generation loop over a model's single-step form.

    ``generate(prompt_ids, prompt_lengths, length, temperature, top_k, top_p,
    seed)`` takes prompts left-padded to a common width P, (B, P) int32, and
    their true lengths (B,), and returns (B, length) int32 new token ids.
    Left padding plus a mask keeps each row's state exactly as if its prompt
    had been fed alone.
    """

    def __init__(self, step: LSTMStep):
        super().__init__(name="generator")
        self.stepper = step

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.int32, name="prompt_ids"),
            tf.TensorSpec([None], tf.int32, name="prompt_lengths"),
            tf.TensorSpec([], tf.int32, name="length"),
            tf.TensorSpec([], tf.float32, name="temperature"),
            tf.TensorSpec([], tf.int32, name="top_k"),
            tf.TensorSpec([], tf.float32, name="top_p"),
            tf.TensorSpec([], tf.int64, name="seed"),
        ]
    )
    def generate(self, prompt_ids, prompt_lengths, length, temperature, top_k, top_p, seed):
        batch = tf.shape(prompt_ids)[0]
        width = tf.shape(prompt_ids)[1]
        vocab = tf.shape(self.stepper.logits_bias)[0]
        states = self.stepper.initial_states(batch)
        logits = tf.zeros([batch, vocab], tf.float32)

        # Warm the state on the prompts. Row b's prompt occupies the last
        # prompt_lengths[b] columns; before that its state stays at zero.
        first_real = width - prompt_lengths  # (B,)
        for t in tf.range(width):
            tf.autograph.experimental.set_loop_options(
                shape_invariants=[(logits, tf.TensorShape([None, None]))]
            )
            new_logits, new_states = self.stepper.step(prompt_ids[:, t], states)
            live = tf.expand_dims(t >= first_real, -1)  # (B, 1)
            states = [tf.where(live, new, old) for new, old in zip(new_states, states)]
            logits = tf.where(live, new_logits, logits)

        tokens = tf.TensorArray(tf.int32, size=length)
        for t in tf.range(length):
            seed_pair = tf.stack([seed, tf.cast(t, tf.int64)])
            next_ids = sample_next(logits, temperature, top_k, top_p, seed_pair)  # (B,)
            tokens = tokens.write(t, next_ids)
            logits, states = self.stepper.step(next_ids, states)
        return tf.transpose(tokens.stack())  # (B, length)
