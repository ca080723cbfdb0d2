"""The tokenizer inside a TensorFlow graph: the same ids as TextTokenizer, with TensorFlow ops only.

A SavedModel that takes a string prompt cannot call the Hugging Face tokenizer,
so :class:`GraphTokenizer` re-implements each level with plain TensorFlow ops
(no tensorflow-text, no ``tf.py_function``) and loads with ``tensorflow`` alone:

- char: one token per code point, looked up in a table; unknown ones are [UNK].
- word and bpe: the text is cut into the pieces that the Split pre-tokenizer's
  regex would cut, from each code point's class (word, space, other) and its
  neighbours'. Word pieces are looked up whole; bpe pieces start as one symbol
  per code point and are merged as the BPE model merges them (see
  :meth:`GraphTokenizer._merge_pieces`).

Classes are not matched with RE2 (``tf.strings.regex_full_match``): its Unicode
tables are older than Oniguruma's in ``tokenizers``, which counts some 5000
newer letters, marks and digits (Unicode 16, such as U+0897 or the Egyptian
hieroglyphs U+13460-U+143FA) as word characters where RE2 does not. Instead the
word-character ranges are read off the Hugging Face pre-tokenizer itself when
the first GraphTokenizer is built, and looked up in the graph with a binary search.

Text that is not valid UTF-8 (which no Python ``str`` can produce) reads as
U+FFFD wherever a byte sequence cannot be decoded.
"""

import functools
import json

import numpy as np
from tokenizers import Regex, pre_tokenizers

from textgen.backend import tf
from textgen.errors import TokenizerError
from textgen.tokenization.rules import LEVELS, UNK_ID, WORD_CHAR
from textgen.tokenization.tokenizer import TextTokenizer

# The classes of a code point, as in WORD_PATTERN and BPE_PATTERN.
_WORD, _SPACE, _OTHER = 0, 1, 2
# SPACE_CHAR spelled out: ASCII only and without Unicode properties, so no
# regex engine can read it differently (a test checks the two agree).
SPACE_CODE_POINTS = tuple(map(ord, "\t\n\v\f\r "))
_SPACE_BAR = ord(" ")
# The rank of a pair that no merge joins: larger than any real rank, and what
# a segment minimum over no pairs gives.
_NO_MERGE = np.iinfo(np.int32).max
_INT32_SPEC = tf.TensorSpec([None, None], tf.int32)


class GraphTokenizer(tf.Module):
    """In-graph twin of a TextTokenizer: string tensors in, token ids out, and back.

    ``encode`` and ``decode`` are ``tf.function``\\ s that work eagerly, inside
    other ``tf.function``\\ s, and after ``tf.saved_model.save`` and ``load``
    in a process that has only TensorFlow. A loaded ``decode`` takes int32 ids,
    the forms traced here.
    """

    def __init__(self, tokenizer: TextTokenizer):
        super().__init__()
        if not isinstance(tokenizer, TextTokenizer):
            raise TypeError(f"tokenizer must be a TextTokenizer. Received: type={type(tokenizer).__name__}")
        if tokenizer.level not in LEVELS:
            raise TokenizerError(f"level must be one of {', '.join(LEVELS)}. Received: level={tokenizer.level!r}")
        self.level = tokenizer.level
        vocab = tokenizer.backend.get_vocab()
        self.vocab_size = len(vocab)
        self._token_strings = tf.constant(tokenizer.token_strings(), tf.string)  # (V,), [UNK] as U+FFFD
        if self.level == "word":
            self._word_ids = _static_table(list(vocab), list(vocab.values()), tf.string)
        else:
            # Tokens of one character are where char and bpe encoding starts.
            chars = {token: token_id for token, token_id in vocab.items() if len(token) == 1}
            self._char_ids = _static_table([ord(char) for char in chars], list(chars.values()), tf.int32)
        if self.level != "char":
            self._word_char_boundaries = tf.constant(_word_char_boundaries())  # (2 * ranges,)
        if self.level == "bpe":
            self._build_merges(vocab, json.loads(tokenizer.to_json())["model"]["merges"])
        # Trace both forms of decode now, so that a SavedModel has them both.
        self.decode.get_concrete_function(_INT32_SPEC)
        self.decode.get_concrete_function(tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1))

    def _build_merges(self, vocab: dict, merges: list) -> None:
        """Tables for merging: pair of ids -> rank, and rank -> id of the merged token."""
        # Like the backend, a pair listed twice keeps its last rank.
        rank_of_pair = {(vocab[left], vocab[right]): rank for rank, (left, right) in enumerate(merges)}
        merged_id = np.zeros(max(len(merges), 1), np.int32)
        lowest_rank_using = np.full(self.vocab_size, _NO_MERGE, np.int64)
        for (left_id, right_id), rank in rank_of_pair.items():
            merged_id[rank] = vocab[merges[rank][0] + merges[rank][1]]
            for part in (left_id, right_id):
                lowest_rank_using[part] = min(lowest_rank_using[part], rank)
        keys = [left_id * self.vocab_size + right_id for left_id, right_id in rank_of_pair]
        self._pair_ranks = _static_table(keys, list(rank_of_pair.values()), tf.int64, default=_NO_MERGE)
        self._merged_id = tf.constant(merged_id)  # (merges,)
        self._lowest_rank_using = tf.constant(lowest_rank_using.astype(np.int32))  # (V,)
        # Trained merges use a token only after the merges that make it. In a
        # merge list where an earlier-ranked merge uses a token that a later one
        # makes, making it can form a pair that the backend merges before the
        # rest of the later rank; only then does each merge step check for it.
        self._merges_can_preempt = any(
            lowest_rank_using[merged_id[rank]] < rank for rank in rank_of_pair.values())

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def encode(self, texts):
        """The int32 ids of each text, as a ragged (B, None) tensor: ``TextTokenizer.encode`` of each."""
        code_points = tf.strings.unicode_decode(texts, "UTF-8", errors="replace")  # (B, None)
        if self.level == "char":
            return code_points.with_flat_values(self._char_ids.lookup(code_points.flat_values))
        flat = code_points.flat_values  # (N,)
        text_of_char = code_points.value_rowids()  # (N,)
        piece_starts = self._piece_starts(flat, text_of_char)  # (N,)
        pieces = tf.RaggedTensor.from_value_rowids(
            flat, tf.cumsum(tf.cast(piece_starts, tf.int64)) - 1, validate=False)  # (P, None)
        text_of_piece = tf.boolean_mask(text_of_char, piece_starts)  # (P,)
        piece_strings = tf.strings.unicode_encode(pieces, "UTF-8")  # (P,)
        if self.level == "word":
            piece_ids = self._word_ids.lookup(piece_strings)  # (P,)
        else:
            # Each distinct piece is merged once, however often it occurs.
            distinct_strings, distinct_of_piece = tf.unique(piece_strings, out_idx=tf.int64)  # (U,), (P,)
            first_piece = tf.math.unsorted_segment_min(
                tf.range(tf.size(piece_strings, tf.int64)), distinct_of_piece, tf.size(distinct_strings, tf.int64))
            distinct_pieces = tf.gather(pieces, first_piece)  # (U, None)
            distinct_ids = self._merge_pieces(distinct_pieces.with_flat_values(
                self._char_ids.lookup(distinct_pieces.flat_values)))  # (U, None)
            piece_ids = tf.gather(distinct_ids, distinct_of_piece)  # (P, None)
        text_ids = tf.RaggedTensor.from_value_rowids(
            piece_ids, text_of_piece, nrows=tf.size(texts, tf.int64), validate=False)
        return text_ids.merge_dims(1, 2) if self.level == "bpe" else text_ids

    @tf.function
    def decode(self, ids):
        """The text of each row of ids, dense (B, L) or ragged (B, None): ``TextTokenizer.decode`` of each."""
        flat_ids = ids.flat_values if isinstance(ids, tf.RaggedTensor) else tf.reshape(ids, [-1])
        outside = tf.boolean_mask(flat_ids, (flat_ids < 0) | (flat_ids >= self.vocab_size))
        # Checked first, as tf.gather does not check indices on every device.
        check = tf.debugging.Assert(tf.size(outside) == 0, [
            f"token id is outside the vocabulary of {self.vocab_size} tokens. Received: id=", outside[:1]])
        with tf.control_dependencies([check]):
            return tf.strings.reduce_join(tf.gather(self._token_strings, ids), axis=-1)  # (B,)

    def _classes(self, code_points):
        """The class of each code point: _WORD, _SPACE or _OTHER."""
        # Boundaries alternate start, end of word-character ranges, so an odd
        # count of boundaries at or below a code point puts it inside a range.
        is_word = tf.searchsorted(self._word_char_boundaries, code_points, side="right") % 2 == 1
        is_space = tf.reduce_any(code_points[:, None] == tf.constant(SPACE_CODE_POINTS), axis=1)
        return tf.where(is_word, _WORD, tf.where(is_space, _SPACE, _OTHER))

    def _piece_starts(self, code_points, text_of_char):
        """Which characters start a pre-tokenizer piece, over the characters of all texts (N,)."""
        classes = self._classes(code_points)  # (N,)
        starts_text = text_of_char != _previous(text_of_char, -1)
        previous_class = _previous(classes, -1)
        if self.level == "word":
            # WORD_PATTERN: runs of word characters, every other character alone.
            return starts_text | (classes != _WORD) | (previous_class != _WORD)
        # BPE_PATTERN: runs of one class, except that a run of exactly one space
        # before a word or other run is the start of that run's piece.
        starts_run = starts_text | (classes != previous_class)
        after_lone_space = (~starts_text & (classes != _SPACE) & (_previous(code_points, -1) == _SPACE_BAR)
                            & _previous(starts_run, False))
        return starts_run & ~after_lone_space

    def _merge_pieces(self, symbols):
        """Apply the BPE merges to every piece at once: symbol ids (U, None) in, token ids (U, None) out.

        The backend merges, within a piece, the lowest-ranked pair first, the
        leftmost of equals first, until no pair has a merge. A merge never
        recreates its own pair, so all its leftmost non-overlapping occurrences
        can be merged in one step; each step does so for every piece.
        """
        num_pieces = symbols.nrows()

        def step(ids, piece_of_id, _):
            # Each pair of neighbouring symbols (N - 1,), which may belong to two pieces.
            piece_of_pair = piece_of_id[:-1]
            keys = tf.cast(ids[:-1], tf.int64) * self.vocab_size + tf.cast(ids[1:], tf.int64)
            ranks = tf.where(piece_of_pair == piece_of_id[1:], self._pair_ranks.lookup(keys), _NO_MERGE)
            lowest = tf.math.unsorted_segment_min(ranks, piece_of_pair, num_pieces)  # (U,)
            chosen = _leftmost_non_overlapping((ranks == tf.gather(lowest, piece_of_pair)) & (ranks != _NO_MERGE))
            merged_ids = tf.gather(self._merged_id, tf.where(chosen, ranks, 0))
            if self._merges_can_preempt:
                # A merged token that a lower-ranked merge uses may form a pair
                # the backend merges next, before the rest of this rank: merge
                # only up to the first such token in each piece this step.
                position = tf.range(tf.size(ranks))
                may_preempt = chosen & (tf.gather(self._lowest_rank_using, merged_ids) < ranks)
                first_preempting = tf.math.unsorted_segment_min(
                    tf.where(may_preempt, position, _NO_MERGE), piece_of_pair, num_pieces)  # (U,)
                chosen &= position <= tf.gather(first_preempting, piece_of_pair)
            # The left symbol of a chosen pair becomes the merged token; the right one goes.
            is_left = tf.concat([chosen, [False]], 0)  # (N,)
            ids = tf.where(is_left, tf.concat([merged_ids, [0]], 0), ids)
            kept = ~tf.concat([[False], chosen], 0)  # (N,)
            return tf.boolean_mask(ids, kept), tf.boolean_mask(piece_of_id, kept), tf.reduce_any(chosen)

        ids, piece_of_id = symbols.flat_values, symbols.value_rowids()  # (N,), (N,)
        ids, piece_of_id, _ = tf.while_loop(
            lambda ids, piece_of_id, merged: merged, step, (ids, piece_of_id, tf.size(ids) > 1),
            shape_invariants=(tf.TensorShape([None]), tf.TensorShape([None]), tf.TensorShape([])))
        return tf.RaggedTensor.from_value_rowids(ids, piece_of_id, nrows=num_pieces, validate=False)


@functools.lru_cache(maxsize=1)
def _word_char_boundaries() -> np.ndarray:
    """Where WORD_CHAR membership changes, as the Hugging Face regex engine sees it: int32 starts and ends.

    Asking the pre-tokenizer about every code point takes about a second, once.
    """
    word_runs = pre_tokenizers.Split(Regex(f"{WORD_CHAR}+"), behavior="removed", invert=True)
    boundaries = []
    # Surrogates cannot cross into Rust, and no UTF-8 text holds them.
    for first, end in ((0, 0xD800), (0xE000, 0x110000)):
        for _, (start, stop) in word_runs.pre_tokenize_str("".join(map(chr, range(first, end)))):
            boundaries += (first + start, first + stop)  # offsets count characters
    return np.array(boundaries, np.int32)


def _static_table(keys: list, values: list, key_dtype, default=UNK_ID) -> tf.lookup.StaticHashTable:
    """A constant int32-valued hash table; missing keys give ``default``."""
    if not keys:
        keys, values = [-1], [default]  # a table cannot be empty; no code point or pair is -1
    initializer = tf.lookup.KeyValueTensorInitializer(
        tf.constant(keys, key_dtype, shape=[len(keys)]), tf.constant(values, tf.int32, shape=[len(values)]))
    return tf.lookup.StaticHashTable(initializer, default_value=default)


def _previous(values, first):
    """``values`` shifted one place later, ``first`` in front: (N,) -> (N,)."""
    return tf.concat([[first], values], 0)[:-1]


def _leftmost_non_overlapping(candidate):
    """Of candidate pairs (N - 1,), those a left-to-right scan merges: every other one of overlapping runs."""
    # Overlapping candidates are consecutive (a pair "x x" inside "x x x"), and
    # a scan takes the first of each run, skips the next, and so on.
    position = tf.range(tf.size(candidate))
    run = tf.cumsum(tf.cast(candidate & ~_previous(candidate, False), tf.int32))
    # Positions after a run and before the next share its number but not its minimum.
    offset_in_run = position - tf.gather(tf.math.segment_min(position, run), run)
    return candidate & (offset_in_run % 2 == 0)
