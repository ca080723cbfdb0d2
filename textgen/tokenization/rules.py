"""The fixed rules of textgen's tokenizers: levels, the unknown token, how text is cut, and the settings a tokenizer is learned with.

Everything here is plain Python, shared by the Hugging Face tokenizer that is
trained (``tokenizer``), the check of the ``tokenizer.json`` a model
directory holds (``tokenizer_json``) and the in-graph twin of a SavedModel
(``graph_tokenizer``), so the three can never disagree.
"""

from __future__ import annotations

import dataclasses

from textgen.config import MAX_VOCAB, check_int, fail

# char: one token per code point; word: one per run of word characters, per
# whitespace character and per other character; bpe: subwords learned inside pieces.
LEVELS = ("char", "word", "bpe")
# For char, the default keeps the 1023 most frequent characters plus [UNK].
DEFAULT_VOCAB_SIZE = {"char": 1024, "word": 10_000, "bpe": 4_000}

# Whatever is unknown becomes [UNK], id 0, which decodes to one character, so
# that decoded text lines up with the token lengths.
UNK = "[UNK]"
UNK_ID = 0
UNK_REPLACEMENT = "\ufffd"

# The classes are spelled out, with no \w, \s or lookarounds, so that the same
# patterns mean the same under RE2 (TensorFlow) as under Oniguruma here. Only
# ASCII whitespace is whitespace; other Unicode spaces are "other" characters.
# Every character is in exactly one class, so the pieces always cover the text.
WORD_CHAR = r"[\p{L}\p{M}\p{N}_]"
SPACE_CHAR = r"[\t\n\v\f\r ]"
OTHER_CHAR = r"[^\p{L}\p{M}\p{N}_\t\n\v\f\r ]"
WORD_PATTERN = f"{WORD_CHAR}+|{SPACE_CHAR}|{OTHER_CHAR}"
BPE_PATTERN = f" ?{WORD_CHAR}+| ?{OTHER_CHAR}+|{SPACE_CHAR}+"

# The tokenizer learns from at most this many bytes of the corpus (a larger corpus
# is sampled evenly): 100 MB shows it every frequent character, word and merge,
# while its training time and memory stay bounded whatever the corpus size.
SAMPLE_BYTES = 100_000_000


def check_level(level) -> str:
    """``level`` itself, once it is known to be one of ``LEVELS``."""
    if level not in LEVELS:
        fail(f"tokenizer level must be one of {', '.join(LEVELS)}", "level", level)
    return level


def check_vocab_size(vocab_size) -> int:
    """``vocab_size`` itself, once it is known to be a whole number of tokens from 2 to ``MAX_VOCAB``."""
    check_int("vocab_size", vocab_size, 2, MAX_VOCAB)
    return vocab_size


@dataclasses.dataclass(frozen=True)
class TokenizerSettings:
    """How a tokenizer is learned: its level, its vocabulary size (None: the level's default) and sample size."""

    level: str = "char"
    vocab_size: int | None = None
    sample_bytes: int = SAMPLE_BYTES

    def __post_init__(self):
        check_level(self.level)
        if self.vocab_size is not None:
            check_vocab_size(self.vocab_size)
        check_int("tokenizer_sample_bytes", self.sample_bytes, 1, 2**62)

    @property
    def largest_vocab(self) -> int:
        """The most tokens the tokenizer can learn: ``vocab_size`` bounds every level, and the level's default
        bounds it when that is None."""
        return self.vocab_size or DEFAULT_VOCAB_SIZE[self.level]
