"""The generation loop, written once in TensorFlow ops.

``Generator.generate`` warms the model's state on the prompts and then samples
``length`` tokens (with ``textgen.generation.sampling``), all inside one
graph, so the same loop serves the command line, the Python API and an
exported SavedModel.

Randomness is stateless: token t of a run with seed s is drawn with the seed
pair (s, t), so a seed fully determines the text, whatever ran before.
"""

from __future__ import annotations

from textgen.backend import tf
from textgen.generation.sampling import sample_next, stop_alternatives
from textgen.model.network import ModelStep


# The sampling settings every generation entry point takes, in this order.
SAMPLING_SPECS = [
    tf.TensorSpec([], tf.int32, name="length"),
    tf.TensorSpec([], tf.float32, name="temperature"),
    tf.TensorSpec([], tf.int32, name="top_k"),
    tf.TensorSpec([], tf.float32, name="top_p"),
    tf.TensorSpec([], tf.int64, name="seed"),
    tf.TensorSpec([None], tf.string, name="stop"),
]

# Tokens drawn per call of the compiled sampling loop: long enough to amortise
# the call, short enough that stopping early wastes little.
DRAW_CHUNK = 64
# Up to this many rows, drawing runs under XLA (see ``Generator._draw_compiled``).
XLA_MAX_BATCH = 16

_CHUNK_SIGNATURE = [
    tf.TensorSpec([None, None], tf.float32, name="logits"),
    tf.TensorSpec([None, None, None], tf.float32, name="states"),
    tf.TensorSpec([], tf.int32, name="start"),
    tf.TensorSpec([], tf.int32, name="end"),
    *SAMPLING_SPECS,
    tf.TensorSpec([None], tf.string, name="tails"),
    tf.TensorSpec([None], tf.bool, name="done"),
    tf.TensorSpec([None], tf.int32, name="produced"),
]


class Generator(tf.Module):
    """The generation loop over a model's single-step form.

    Prompts come as ragged components: all ids concatenated,
    ``prompt_values`` (N,), and each row's length, ``prompt_row_lengths``
    (B,). An empty prompt starts from ``start_id``. Rows are left-padded and
    masked, so each row's state is exactly what its prompt alone would give.

    ``generate`` runs the whole job in one call and returns new ids (B, T)
    with T <= length, and per row the number of tokens up to the end of its
    first stop string (``length`` if none); sampling ends once every row has
    stopped. ``warm`` plus repeated ``sample`` calls do the same job in
    chunks (for streaming output), with identical results: token t is always
    drawn with the seed pair (seed, t).
    """

    def __init__(self, step: ModelStep, token_strings: list[str], start_id: int):
        super().__init__(name="generator")
        self.stepper = step
        self.token_strings = tf.constant(token_strings, tf.string)  # (V,)
        self.longest_token = max(len(token) for token in token_strings)
        self.start_id = int(start_id)

    def _read(self, padded, live):
        """Run left-padded prompts (B, W) through the model; ``live`` (B, W) marks real tokens.

        Not compiled with XLA, which would compile again for every new prompt
        width: a prompt is read once, while sampled tokens are many.
        """
        batch, width = tf.shape(padded)[0], tf.shape(padded)[1]
        states = self.stepper.initial_states(batch)
        logits = tf.zeros([batch, self.stepper.config.vocab_size], tf.float32)

        def body(t, logits, states):
            new_logits, new_states = self.stepper.step(tf.gather(padded, t, axis=1), states)
            alive = tf.gather(live, [t], axis=1)  # (B, 1): this row's prompt has begun
            states = [tf.where(alive, new, old) for new, old in zip(new_states, states)]
            return t + 1, tf.where(alive, new_logits, logits), states

        _, logits, states = tf.while_loop(lambda t, *_: t < width, body, (0, logits, states))
        return logits, tf.stack(states)

    def _draw_steps(self, logits, states, start, count, temperature, top_k, top_p, seed, compiled=False):
        """Sample tokens start..start+count-1 (count <= DRAW_CHUNK) with no string work.

        Returns ids (DRAW_CHUNK, B), of which the first ``count`` rows are
        drawn, and the logits and states after the last of them. Token t is
        drawn with the seed pair (seed, t), so how the run is cut into calls
        never changes the text.
        """
        states = tf.unstack(states, num=self.stepper.state_count)
        # A fixed-size buffer updated in place, so nothing's shape depends on ``count``:
        # XLA then compiles once per batch size, not once per chunk length.
        drawn = tf.zeros([DRAW_CHUNK, tf.shape(logits)[0]], tf.int32)  # (DRAW_CHUNK, B)

        def body(k, logits, states, drawn):
            seed_pair = tf.stack([seed, tf.cast(start + k, tf.int64)])
            next_ids = sample_next(logits, temperature, top_k, top_p, seed_pair, gumbel=compiled)  # (B,)
            logits, states = self.stepper.step(next_ids, states)
            return k + 1, logits, states, tf.tensor_scatter_nd_update(drawn, [[k]], next_ids[tf.newaxis])

        _, logits, states, drawn = tf.while_loop(lambda k, *_: k < count, body, (0, logits, states, drawn))
        return drawn, logits, tf.stack(states)

    @tf.function(jit_compile=True)
    def _draw_compiled(self, logits, states, start, count, temperature, top_k, top_p, seed):
        """``_draw_steps`` under XLA, whose loop costs far less per step for a few rows but more
        for many (BENCHMARKS.md has the figures), so only batches up to XLA_MAX_BATCH rows take it."""
        return self._draw_steps(logits, states, start, count, temperature, top_k, top_p, seed, compiled=True)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="prompt_values"),
                                  tf.TensorSpec([None], tf.int32, name="prompt_row_lengths")])
    def warm(self, prompt_values, prompt_row_lengths):
        """Run the prompts through the model: -> logits (B, V), states (S, B, U)."""
        prompts = tf.RaggedTensor.from_row_lengths(prompt_values, prompt_row_lengths)
        empty = tf.cast(prompts.row_lengths() == 0, tf.int32)  # (B,)
        starts = tf.RaggedTensor.from_row_lengths(tf.fill([tf.reduce_sum(empty)], self.start_id), empty)
        prompts = tf.concat([starts, prompts], axis=1)
        lengths = tf.cast(prompts.row_lengths(), tf.int32)  # (B,)
        width = tf.reduce_max(lengths)
        # Left-pad: column j of row b holds prompt token j - (width - length_b).
        right_padded = prompts.to_tensor(default_value=0, shape=[None, None])  # (B, W)
        source = tf.range(width)[tf.newaxis, :] - (width - lengths)[:, tf.newaxis]  # (B, W)
        padded = tf.gather(right_padded, tf.maximum(source, 0), batch_dims=1)
        return self._read(padded, source >= 0)

    @tf.function(input_signature=_CHUNK_SIGNATURE)
    def sample(self, logits, states, start, end, length, temperature, top_k, top_p, seed, stop, tails, done,
               produced):
        """Draw tokens start..end-1 (of ``length`` in all), carrying everything to the next call.

        Returns (ids (B, T<=end-start), logits, states, tails, done, produced).
        Tokens are drawn DRAW_CHUNK at a time by ``_draw_steps``; stop
        strings are then looked for token by token in a sliding tail of each
        row's new text, long enough to hold the longest stop string plus one
        token, and drawing ends at the token where every row has stopped.
        """
        batch = tf.shape(logits)[0]
        stop, alternatives = stop_alternatives(stop)
        has_stops = tf.size(stop) > 0
        stop_pattern = tf.strings.join(["(?s).*(?:", alternatives, ").*"])
        window = tf.reduce_max(tf.concat([tf.strings.length(stop, unit="UTF8_CHAR"), [0]], 0)) + self.longest_token

        pieces = tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None, None], infer_shape=False)
        chunk = 0
        t = start
        while t < end and not tf.reduce_all(done):
            tf.autograph.experimental.set_loop_options(
                shape_invariants=[(logits, tf.TensorShape([None, None])), (states, tf.TensorShape([None, None, None]))])
            count = tf.minimum(end - t, DRAW_CHUNK)
            if batch <= XLA_MAX_BATCH:
                drawn, logits, states = self._draw_compiled(logits, states, t, count, temperature, top_k, top_p,
                                                            seed)
            else:
                drawn, logits, states = self._draw_steps(logits, states, t, count, temperature, top_k, top_p,
                                                         seed)
            kept = count
            if has_stops:
                for k in tf.range(count):
                    if not tf.reduce_all(done):
                        tails = tf.strings.join([tails, tf.gather(self.token_strings, drawn[k])])
                        tail_length = tf.strings.length(tails, unit="UTF8_CHAR")
                        tails = tf.strings.substr(tails, tf.maximum(tail_length - window, 0),
                                                  tf.fill([batch], window), unit="UTF8_CHAR")
                        hit = tf.strings.regex_full_match(tails, stop_pattern) & tf.logical_not(done)
                        produced = tf.where(hit, t + k + 1, produced)
                        done = done | hit
                        kept = k + 1
            pieces = pieces.write(chunk, drawn[:kept])
            chunk += 1
            t += kept
        new_ids = tf.transpose(tf.reshape(pieces.concat(), [t - start, batch]))  # (B, T)
        done = done | (t >= length)
        # produced stays ``length`` for rows without a stop; callers clamp it to the tokens they have.
        return new_ids, logits, states, tails, done, produced

    def begin(self, prompt_values, prompt_row_lengths, length):
        """Warm the state and set up what ``sample`` carries between calls."""
        logits, states = self.warm(prompt_values, prompt_row_lengths)
        batch = tf.shape(logits)[0]
        return logits, states, tf.fill([batch], ""), tf.zeros([batch], tf.bool), tf.fill([batch], length)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="prompt_values"),
                                  tf.TensorSpec([None], tf.int32, name="prompt_row_lengths"), *SAMPLING_SPECS])
    def generate(self, prompt_values, prompt_row_lengths, length, temperature, top_k, top_p, seed, stop):
        logits, states, tails, done, produced = self.begin(prompt_values, prompt_row_lengths, length)
        new_ids, _, _, _, _, produced = self.sample(logits, states, 0, length, length, temperature, top_k, top_p,
                                                   seed, stop, tails, done, produced)
        return new_ids, tf.minimum(produced, tf.shape(new_ids)[1])
