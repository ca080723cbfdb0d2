"""The generation loop, written once in TensorFlow ops.

``Generator.generate`` warms the model's state on the prompts and then samples
``length`` tokens (with ``textgen.generation.sampling``), all inside one
graph, so the same loop serves the command line, the Python API and an
exported SavedModel. Every token drawn is scored with its log-probability
under the model (``sampling.log_probability``) in the same loop.

Randomness is stateless and per row: token t of row r of a request with seed
s is drawn from the stream ``row_keys(s, r)`` at position t, so a seed fully
determines the text, whatever ran before and whatever is drawn beside it.
"""

from __future__ import annotations

import functools

from textgen.backend import tf
from textgen.generation.sampling import (gumbel_noise, log_probability, row_keys, sample_next, sample_with_noise,
                                         stop_alternatives)
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
# Up to this many rows, drawing runs under XLA (``Generator._draw_compiled``), which compiles once for
# each batch size; above, in the graph loop, which compiles nothing.
XLA_MAX_BATCH = 256
# Above this many rows, a call makes the random noise of all its steps before its loop (``_draw_steps``).
NOISE_AHEAD_ABOVE = 16
# Up to this vocabulary, a call that makes its noise ahead also gathers the first layer's input share from
# a table made ahead (``ModelStep.input_table``).
TABLE_MAX_VOCAB = NOISE_AHEAD_ABOVE * DRAW_CHUNK


def loop_for_batch(batch):
    """Which form of the draw loop a batch of ``batch`` rows takes: 0 for XLA with the noise made inside the
    loop (up to NOISE_AHEAD_ABOVE rows), 1 for XLA with the noise made ahead (up to XLA_MAX_BATCH), 2 for the
    graph loop. ``batch`` is an int (-> int, with no TensorFlow op) or a scalar tensor (-> int32 tensor)."""
    thresholds_passed = (batch > NOISE_AHEAD_ABOVE, batch > XLA_MAX_BATCH)
    if isinstance(batch, int):
        return sum(thresholds_passed)
    return tf.add_n([tf.cast(passed, tf.int32) for passed in thresholds_passed])


# One generation step's inputs with a value per row, for ``draw``: every row its own random
# stream, position and sampling settings.
ROW_SPECS = [
    tf.TensorSpec([None, None], tf.float32, name="logits"),
    tf.TensorSpec([None, None, None], tf.float32, name="states"),
    tf.TensorSpec([None], tf.uint32, name="keys"),
    tf.TensorSpec([None], tf.int32, name="positions"),
    tf.TensorSpec([], tf.int32, name="count"),
    tf.TensorSpec([None], tf.float32, name="temperature"),
    tf.TensorSpec([None], tf.int32, name="top_k"),
    tf.TensorSpec([None], tf.float32, name="top_p"),
    tf.TensorSpec([None, None], tf.int32, name="forced"),
    tf.TensorSpec([None], tf.int32, name="forced_counts"),
]

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


# Everything here is written in TensorFlow's own control flow (tf.while_loop, tf.cond, tf.where) and
# kept out of autograph's reach (autograph=False, do_not_convert): converting it, and the model's
# step beneath it, again for each trace is pure Python work paid before the first token of every process.


class Generator(tf.Module):
    """The generation loop over a model's single-step form.

    Prompts come as ragged components: all ids concatenated,
    ``prompt_values`` (N,), and each row's length, ``prompt_row_lengths``
    (B,). An empty prompt starts from ``start_id``. Rows are left-padded and
    masked, so each row's state is exactly what its prompt alone would give.

    ``generate`` runs the whole job in one call and returns new ids (B, T)
    with T <= length, and per row the number of tokens up to the end of its
    first stop string (``length`` if none); sampling ends once every row has
    stopped. ``begin`` plus repeated ``sample`` calls do the same job in
    chunks (for streaming output), with identical results: token t of row r is
    always drawn at position t of the stream ``row_keys(seed, r)``; ``sample`` also returns each token's
    log-probability. ``begin`` may start from a state that earlier calls
    left (``read_on``), so that a text can grow turn by turn without being
    read again.
    """

    def __init__(self, step: ModelStep, token_strings: list[str], start_id: int):
        super().__init__(name="generator")
        self.stepper = step
        self.token_strings = tf.constant(token_strings, tf.string)  # (V,)
        self.longest_token = max(len(token) for token in token_strings)
        self.start_id = int(start_id)

    def _read(self, prompts, logits, states):
        """Run ragged prompts (B, None) through the model from ``logits`` (B, V) and ``states`` (S, B, U).

        Rows are left-padded, and a row's state and logits only change at its
        real tokens, so each row ends exactly where its prompt alone takes it
        (an empty row keeps what it was given). Not compiled with XLA, which
        would compile again for every new prompt width: a prompt is read once,
        while sampled tokens are many. -> logits (B, V), states (S, B, U).
        """
        lengths = tf.cast(prompts.row_lengths(), tf.int32)  # (B,)
        width = tf.reduce_max(tf.concat([lengths, [0]], 0))
        # Left-pad: column j of row b holds prompt token j - (width - length_b).
        right_padded = prompts.to_tensor(default_value=0, shape=[None, None])  # (B, W)
        source = tf.range(width)[tf.newaxis, :] - (width - lengths)[:, tf.newaxis]  # (B, W)
        padded = tf.gather(right_padded, tf.maximum(source, 0), batch_dims=1)
        live = source >= 0  # (B, W): this row's prompt has begun
        states = tf.unstack(states, num=self.stepper.state_count)

        def body(t, logits, states):
            new_logits, new_states = self.stepper.step(tf.gather(padded, t, axis=1), states)
            alive = tf.gather(live, [t], axis=1)  # (B, 1): this row's prompt has begun
            states = [tf.where(alive, new, old) for new, old in zip(new_states, states)]
            return t + 1, tf.where(alive, new_logits, logits), states

        _, logits, states = tf.while_loop(lambda t, *_: t < width, body, (0, logits, states))
        return logits, tf.stack(states)

    @tf.autograph.experimental.do_not_convert
    def _draw_steps(self, logits, states, keys, positions, count, temperature, top_k, top_p, forced=None,
                    forced_counts=None, noise_ahead=False):
        """Sample ``count`` (<= DRAW_CHUNK) tokens for every row, with no string work.

        keys (B,), positions (B,): row b draws its k-th token of this call from
        its stream ``keys[b]`` at position ``positions[b] + k``, with its own
        temperature, top_k and top_p (B,), so how a run is cut into calls, and
        which rows share a batch, never changes a row's text. ``forced`` (B, F)
        and ``forced_counts`` (B,) (None: none) make row b read its first
        ``forced_counts[b]`` tokens from ``forced`` instead of drawing them (a
        prompt read inside the loop), its draws then starting at position
        ``positions[b]``. Returns ids (DRAW_CHUNK, B), of which the first
        ``count`` rows are drawn (or read), their log-probabilities
        (DRAW_CHUNK, B), and the logits and states after the last of them.
        With ``noise_ahead`` the random noise of all ``count`` steps is made
        before the loop, in a few large ops rather than a few dozen small ones
        a step: the same numbers, faster for many rows (in the graph loop,
        every op costs a kernel launch), slower to compile under XLA; and for
        a vocabulary up to TABLE_MAX_VOCAB, so is the first layer's input
        share of every token (``ModelStep.input_table``).
        """
        if forced is None:
            forced = tf.zeros([tf.shape(logits)[0], 1], tf.int32)
            forced_counts = tf.zeros([tf.shape(logits)[0]], tf.int32)
        last_forced = tf.shape(forced)[1] - 1
        states = tf.unstack(states, num=self.stepper.state_count)
        # Fixed-size buffers updated in place, so nothing's shape depends on ``count``:
        # XLA then compiles once per batch size, not once per chunk length.
        drawn = tf.zeros([DRAW_CHUNK, tf.shape(logits)[0]], tf.int32)  # (DRAW_CHUNK, B)
        scores = tf.zeros([DRAW_CHUNK, tf.shape(logits)[0]], tf.float32)  # (DRAW_CHUNK, B)
        # A table of the first layer's input share costs V rows of its projection once per call and saves B
        # rows a step, so it pays once B * DRAW_CHUNK > V: for every batch that makes its noise ahead, when
        # V <= TABLE_MAX_VOCAB.
        input_table = self.stepper.input_table() if noise_ahead and self.stepper.config.vocab_size <= \
            TABLE_MAX_VOCAB else None  # (V, gates * U)
        if noise_ahead:
            batch, vocab = tf.shape(logits)[0], tf.shape(logits)[1]
            step_positions = positions[tf.newaxis, :] + tf.range(count)[:, tf.newaxis] - forced_counts  # (n, B)
            noise = tf.reshape(gumbel_noise(tf.tile(keys, [count]), tf.reshape(step_positions, [-1]), vocab),
                               [count, batch, vocab])  # (n, B, V)

        def body(k, logits, states, drawn, scores):
            if noise_ahead:
                next_ids = sample_with_noise(logits, temperature, top_k, top_p, tf.gather(noise, k))  # (B,)
            else:
                next_ids = sample_next(logits, temperature, top_k, top_p, keys, positions + k - forced_counts)
            next_ids = tf.where(k < forced_counts, tf.gather(forced, tf.minimum(k, last_forced), axis=1), next_ids)
            # Scored on the logits it was drawn from, before the step moves past them.
            score = log_probability(logits, next_ids)  # (B,)
            logits, states = self.stepper.step(next_ids, states, input_table)
            return (k + 1, logits, states, tf.tensor_scatter_nd_update(drawn, [[k]], next_ids[tf.newaxis]),
                    tf.tensor_scatter_nd_update(scores, [[k]], score[tf.newaxis]))

        _, logits, states, drawn, scores = tf.while_loop(lambda k, *_: k < count, body,
                                                         (0, logits, states, drawn, scores))
        return drawn, scores, logits, tf.stack(states)

    @tf.function(jit_compile=True, autograph=False)
    def _draw_compiled(self, *inputs, noise_ahead=False):
        """``_draw_steps`` under XLA, which fuses each step's elementwise work (the gates, the noise, the
        softmax) where the graph loop launches a kernel per op. It compiles once for each batch size it
        meets, so batches up to XLA_MAX_BATCH rows take it (BENCHMARKS.md has the figures)."""
        return self._draw_steps(*inputs, noise_ahead=noise_ahead)

    @tf.function(input_signature=ROW_SPECS, autograph=False)
    def draw(self, logits, states, keys, positions, count, temperature, top_k, top_p, forced, forced_counts):
        """Draw ``count`` (1 to DRAW_CHUNK) tokens for rows that each have their own stream and settings.

        The step loop of continuous batching (``textgen.generation.batching``),
        where a row that has just joined reads its prompt (``forced``) in the
        same steps as the others draw: -> ids (DRAW_CHUNK, B), of which the
        first ``count`` rows are drawn or read, their log-probabilities
        (DRAW_CHUNK, B), logits (B, V), states (S, B, U). Batches of up to
        XLA_MAX_BATCH rows run under XLA, which compiles once for each batch
        size and ``forced`` width it meets.
        """
        inputs = (logits, states, keys, positions, count, temperature, top_k, top_p, forced, forced_counts)
        return self._draw_either(*inputs)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="prompt_values"),
                                  tf.TensorSpec([None], tf.int32, name="prompt_row_lengths")], autograph=False)
    def warm(self, prompt_values, prompt_row_lengths):
        """Run the prompts through the model from the zero state: -> logits (B, V), states (S, B, U).

        An empty prompt reads the start token instead.
        """
        prompts = tf.RaggedTensor.from_row_lengths(prompt_values, prompt_row_lengths)
        empty = tf.cast(prompts.row_lengths() == 0, tf.int32)  # (B,)
        starts = tf.RaggedTensor.from_row_lengths(tf.fill([tf.reduce_sum(empty)], self.start_id), empty)
        batch = tf.shape(prompt_row_lengths)[0]
        logits = tf.zeros([batch, self.stepper.config.vocab_size], tf.float32)
        return self._read(tf.concat([starts, prompts], axis=1), logits, tf.stack(self.stepper.initial_states(batch)))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="prompt_values"),
                                  tf.TensorSpec([None], tf.int32, name="prompt_row_lengths"),
                                  tf.TensorSpec([None, None], tf.float32, name="logits"),
                                  tf.TensorSpec([None, None, None], tf.float32, name="states")], autograph=False)
    def read_on(self, prompt_values, prompt_row_lengths, logits, states):
        """Run more text through the model from the logits (B, V) and states (S, B, U) an earlier call left.

        An empty row reads nothing: its logits and states come back as they went in.
        """
        return self._read(tf.RaggedTensor.from_row_lengths(prompt_values, prompt_row_lengths), logits, states)

    def _draw_loops(self):
        """The three forms of ``_draw_steps``, in the order ``loop_for_batch`` indexes them."""
        return (self._draw_compiled, functools.partial(self._draw_compiled, noise_ahead=True),
                functools.partial(self._draw_steps, noise_ahead=True))

    def _draw_either(self, *inputs):
        """``_draw_steps`` in the form ``loop_for_batch`` picks for a batch known only when the graph runs
        (a tf.switch_case, every branch traced; XLA compiles only the branch a batch takes)."""
        batch = tf.shape(inputs[0])[0]
        return tf.switch_case(loop_for_batch(batch),
                              [functools.partial(loop, *inputs) for loop in self._draw_loops()])

    def _find_stops(self, drawn, t, tails, done, produced, window, stop_pattern):
        """Look for the first stop string ending at each of a chunk's tokens, every token at once.

        drawn (n, B) are the ids of tokens t..t+n-1. The text after token k of
        row b is ``tails[b]`` plus the strings of tokens 0..k; its last
        ``window`` characters are matched, as a sliding tail token by token
        would, so a stop string is found at the token that completes it and
        never later. -> kept (tokens up to the one where every row had
        stopped, else n), tails after the kept tokens, done, produced (B,).
        """
        count = tf.shape(drawn)[0]
        pieces = tf.gather(self.token_strings, drawn)  # (n, B)
        joined = tf.strings.join([tails, tf.strings.reduce_join(pieces, axis=0)])  # (B,)
        # Token strings are whole characters, so character counts add up.
        ends = tf.strings.length(tails, unit="UTF8_CHAR")[tf.newaxis, :] + tf.cumsum(
            tf.strings.length(pieces, unit="UTF8_CHAR"), axis=0)  # (n, B)
        begins = tf.maximum(ends - window, 0)
        texts = tf.strings.substr(tf.broadcast_to(joined, tf.shape(ends)), begins, ends - begins,
                                  unit="UTF8_CHAR")  # (n, B): each token's tail
        hits = tf.strings.regex_full_match(texts, stop_pattern) & tf.logical_not(done)[tf.newaxis, :]  # (n, B)
        stopped = tf.reduce_any(hits, axis=0)  # (B,)
        first = tf.argmax(tf.cast(hits, tf.int32), axis=0, output_type=tf.int32)  # (B,): 0 where none
        produced = tf.where(stopped, t + first + 1, produced)
        done = done | stopped
        kept = tf.where(tf.reduce_all(done), tf.reduce_max(tf.where(stopped, first + 1, 0)), count)
        return kept, tf.gather(texts, kept - 1), done, produced

    def _sample_chunks(self, draw, logits, states, start, end, length, temperature, top_k, top_p, seed, stop,
                       tails, done, produced):
        """``sample``'s loop, drawing each chunk of up to DRAW_CHUNK tokens with ``draw`` (a ``_draw_steps``)."""
        batch = tf.shape(logits)[0]
        keys = row_keys(seed, tf.range(batch))  # (B,)
        per_row = (tf.fill([batch], temperature), tf.fill([batch], top_k), tf.fill([batch], top_p))
        stop, alternatives = stop_alternatives(stop)
        has_stops = tf.size(stop) > 0
        stop_pattern = tf.strings.join(["(?s).*(?:", alternatives, ").*"])
        window = tf.reduce_max(tf.concat([tf.strings.length(stop, unit="UTF8_CHAR"), [0]], 0)) + self.longest_token

        def body(chunk, t, logits, states, tails, done, produced, pieces, score_pieces):
            count = tf.minimum(end - t, DRAW_CHUNK)
            drawn, scores, logits, states = draw(logits, states, keys, tf.fill([batch], t), count, *per_row)
            drawn, scores = drawn[:count], scores[:count]  # (n, B)
            kept, tails, done, produced = tf.cond(
                has_stops, lambda: self._find_stops(drawn, t, tails, done, produced, window, stop_pattern),
                lambda: (count, tails, done, produced))
            return (chunk + 1, t + kept, logits, states, tails, done, produced, pieces.write(chunk, drawn[:kept]),
                    score_pieces.write(chunk, scores[:kept]))

        pieces = tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None, None], infer_shape=False)
        score_pieces = tf.TensorArray(tf.float32, size=0, dynamic_size=True, element_shape=[None, None],
                                      infer_shape=False)
        _, t, logits, states, tails, done, produced, pieces, score_pieces = tf.while_loop(
            lambda chunk, t, logits, states, tails, done, *_: (t < end) & tf.logical_not(tf.reduce_all(done)), body,
            (0, start, logits, states, tails, done, produced, pieces, score_pieces),
            shape_invariants=(tf.TensorShape([]), tf.TensorShape([]), tf.TensorShape([None, None]),
                              tf.TensorShape([None, None, None]), tails.shape, done.shape, produced.shape,
                              tf.TensorShape(None), tf.TensorShape(None)))
        new_ids = tf.transpose(tf.reshape(pieces.concat(), [t - start, batch]))  # (B, T)
        new_scores = tf.transpose(tf.reshape(score_pieces.concat(), [t - start, batch]))  # (B, T)
        done = done | (t >= length)
        # produced stays ``length`` for rows without a stop; callers clamp it to the tokens they have.
        return new_ids, new_scores, logits, states, tails, done, produced

    @tf.function(input_signature=_CHUNK_SIGNATURE, autograph=False)
    def _sample_few(self, *chunk):
        """``_sample_chunks`` for up to NOISE_AHEAD_ABOVE rows: only the XLA loop is traced and compiled."""
        return self._sample_chunks(self._draw_loops()[0], *chunk)

    @tf.function(input_signature=_CHUNK_SIGNATURE, autograph=False)
    def _sample_many(self, *chunk):
        """``_sample_chunks`` for more rows, up to XLA_MAX_BATCH: the XLA loop with its noise made ahead."""
        return self._sample_chunks(self._draw_loops()[1], *chunk)

    @tf.function(input_signature=_CHUNK_SIGNATURE, autograph=False)
    def _sample_most(self, *chunk):
        """``_sample_chunks`` for more than XLA_MAX_BATCH rows: only the graph loop is traced."""
        return self._sample_chunks(self._draw_loops()[2], *chunk)

    def sample(self, logits, states, start, end, length, temperature, top_k, top_p, seed, stop, tails, done,
               produced):
        """Draw tokens start..end-1 (of ``length`` in all), carrying everything to the next call.

        Returns (ids (B, T<=end-start), their log-probabilities (B, T), logits,
        states, tails, done, produced). ``start`` < ``end``: at least one token is drawn.
        Tokens are drawn DRAW_CHUNK at a time by ``_draw_steps``; stop
        strings are then looked for at every token of the chunk in a sliding
        tail of each row's new text, long enough to hold the longest stop
        string plus one token, and drawing ends at the token where every row
        has stopped. Called with eager tensors, whose batch is known, so that
        a process traces and compiles only the loop its batch size runs.
        """
        chunk = (logits, states, start, end, length, temperature, top_k, top_p, seed, stop, tails, done, produced)
        run = (self._sample_few, self._sample_many, self._sample_most)[loop_for_batch(logits.shape[0])]
        return run(*chunk)

    def begin(self, prompt_values, prompt_row_lengths, length, carried=None):
        """Read the prompts and set up what ``sample`` carries between calls, up to token ``length``.

        ``carried`` is None to start from the zero state (``warm``), or the
        (logits, states) an earlier ``sample`` or ``begin`` left, to read on
        from there (``read_on``). -> logits, states, tails, done, produced.
        """
        if carried is None:
            logits, states = self.warm(prompt_values, prompt_row_lengths)
        else:
            logits, states = self.read_on(prompt_values, prompt_row_lengths, *carried)
        batch = tf.shape(logits)[0]
        return logits, states, tf.fill([batch], ""), tf.zeros([batch], tf.bool), tf.fill([batch], length)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="prompt_values"),
                                  tf.TensorSpec([None], tf.int32, name="prompt_row_lengths"), *SAMPLING_SPECS],
                 autograph=False)
    def generate(self, prompt_values, prompt_row_lengths, length, temperature, top_k, top_p, seed, stop):
        """The whole job in one graph call, as the SavedModel serves it: -> new ids (B, T), tokens kept (B,)."""
        logits, states, tails, done, produced = self.begin(prompt_values, prompt_row_lengths, length)
        new_ids, _, _, _, _, _, produced = self._sample_chunks(self._draw_either, logits, states, 0, length, length,
                                                               temperature, top_k, top_p, seed, stop, tails, done,
                                                               produced)
        return new_ids, tf.minimum(produced, tf.shape(new_ids)[1])
