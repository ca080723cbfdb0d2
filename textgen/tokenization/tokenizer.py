"""Tokenizers that turn text into integer ids and back, exactly.

:class:`TextTokenizer` wraps a Hugging Face ``tokenizers.Tokenizer`` at one of
three levels: ``char`` (one token per Unicode code point), ``word`` (one token
per run of word characters, per whitespace character and per other character)
and ``bpe`` (byte-pair-encoding subwords learned inside pieces such as " word",
" ?!" or "\\n\\n").

Nothing is normalized or stripped, so ``decode(encode(text)) == text`` for text
made of known characters (known words at the word level). Whatever is unknown
becomes ``[UNK]`` (id 0), which decodes to one U+FFFD character.

Tokenizer files come from model directories that may not be trusted, so
:meth:`TextTokenizer.from_json` accepts only the structures this class writes
(``textgen.tokenization.tokenizer_json``); the levels, [UNK] and the patterns
are ``textgen.tokenization.rules``.
"""

import collections
import dataclasses
import itertools
import json
import re
import warnings
from typing import Iterable, Iterator

import numpy as np
import tokenizers
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers

from textgen.errors import TokenizerError
from textgen.files import write_atomically
from textgen.tokenization.rules import (BPE_PATTERN, DEFAULT_VOCAB_SIZE, UNK, UNK_ID, UNK_REPLACEMENT, WORD_PATTERN,
                                        check_level, check_vocab_size)
from textgen.tokenization.tokenizer_json import parse_tokenizer_json, read_tokenizer_json

_PATTERNS = {"word": WORD_PATTERN, "bpe": BPE_PATTERN}

# Text is encoded in pieces of about _PIECE_CHARS, batched by about _BATCH_CHARS,
# so that the backend can spread each batch over its threads.
_PIECE_CHARS = 1 << 16
_BATCH_CHARS = 1 << 22
# Where no word or bpe piece runs across, so cutting the text there leaves its
# tokens unchanged: after a newline followed by a non-whitespace character (a
# whitespace run ends there), and before a space that follows a visible ASCII
# character (a word or punctuation run ends there, and the space starts the next
# piece whatever came before). The second kind keeps a corpus of one huge line
# cut into bounded pieces. Both only look at characters inside one chunk.
_SAFE_CUT = re.compile(r"\n(?=[^\t\n\v\f\r ])|(?<=[!-~])(?= )")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Unicode noncharacters: one that no token uses stands in for lone surrogates.
_NONCHARACTERS = [chr(code) for code in range(0xFDD0, 0xFDF0)]
_SHOWN_UNKNOWNS = 20


class UnknownTokenWarning(UserWarning):
    """A prompt contains characters or words that the tokenizer never saw."""


@dataclasses.dataclass(frozen=True)
class Extension:
    """What ``TextTokenizer.extended`` added for a corpus, measured on the text it read.

    ``added`` are the new tokens, whose ids follow the old ones; ``added_share``
    is the part of the text's tokens they stand for (each was [UNK] before),
    and ``unknown_share`` the part still unknown (beyond the vocabulary's limit).
    """

    added: tuple[str, ...]
    added_share: float
    unknown_share: float

    def describe(self) -> str:
        """One line for the run's log."""
        shown = ", ".join(repr(token) for token in self.added[:_SHOWN_UNKNOWNS])
        if len(self.added) > _SHOWN_UNKNOWNS:
            shown += f" and {len(self.added) - _SHOWN_UNKNOWNS} more"
        line = (f"{len(self.added)} new tokens ({shown}), {self.added_share:.3%} of the corpus" if self.added
                else "no new tokens: the base model's vocabulary covers the corpus")
        return line + (f"; {self.unknown_share:.3%} stays unknown" if self.unknown_share else "")


class TextTokenizer:
    """A trained tokenizer of one level, wrapping a ``tokenizers.Tokenizer``.

    Make one with :meth:`train`, :meth:`from_json` or :meth:`load`.
    """

    def __init__(self, backend: tokenizers.Tokenizer, level: str):
        self.backend = backend
        self.level = level
        vocab = backend.get_vocab()  # ids are 0 to n - 1, with [UNK] first
        self._decoded_tokens = [UNK_REPLACEMENT] + sorted(vocab, key=vocab.get)[1:]
        self._surrogate_stand_in = None

    @property
    def vocab_size(self) -> int:
        """The number of tokens, [UNK] included."""
        return len(self._decoded_tokens)

    @property
    def unk_id(self) -> int:
        """The id of the [UNK] token, always 0."""
        return UNK_ID

    @classmethod
    def train(cls, chunks: Iterable[str], level: str = "char", vocab_size: int | None = None, *,
              excerpts: bool = False) -> "TextTokenizer":
        """Learn a tokenizer from a corpus given as consecutive pieces of text.

        The same corpus gives the same tokenizer, however it is cut into chunks.
        ``vocab_size`` counts [UNK]; by default 1024 for char (at most: a corpus
        with fewer characters gives fewer tokens), 10000 for word, 4000 for bpe.
        With ``excerpts=True`` the chunks are separate excerpts of a corpus (a
        sample of it) rather than consecutive: no word or merge is learned
        across two of them, and word and bpe drop the partial piece at each end.
        """
        check_level(level)
        vocab_size = check_vocab_size(DEFAULT_VOCAB_SIZE[level] if vocab_size is None else vocab_size)
        if isinstance(chunks, str):
            chunks = (chunks,)
        if level == "char":
            chars = _frequent_chars(chunks, vocab_size - 1)
            vocab = {UNK: UNK_ID, **{char: token_id for token_id, char in enumerate(chars, start=1)}}
            backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK, fuse_unk=False))
            backend.decoder = decoders.Fuse()
            return cls(backend, level)
        if level == "word":
            backend = tokenizers.Tokenizer(models.WordLevel(unk_token=UNK))
            trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=[UNK], show_progress=False)
        else:
            if iter(chunks) is chunks:
                chunks = list(chunks)  # bpe reads the corpus twice: characters first, then pairs
            # Left alone, the trainer would drop equally rare characters in hash
            # order; naming the ones to keep makes its alphabet exactly these.
            alphabet = _frequent_chars(chunks, vocab_size - 1)
            backend = tokenizers.Tokenizer(models.BPE(unk_token=UNK))
            trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[UNK], show_progress=False,
                                          initial_alphabet=alphabet, limit_alphabet=len(alphabet))
        backend.pre_tokenizer = pre_tokenizers.Split(Regex(_PATTERNS[level]), behavior="isolated")
        backend.decoder = decoders.Fuse()
        # Safe pieces keep words whole wherever the caller cut the corpus.
        if excerpts:
            pieces = itertools.chain.from_iterable(
                _safe_pieces((_whole_pieces(excerpt),), cut_anywhere=False) for excerpt in chunks)
        else:
            pieces = _safe_pieces(chunks, cut_anywhere=False)
        first_piece = next(pieces, None)
        if first_piece is None:
            raise TokenizerError("cannot train a tokenizer on empty text")
        backend.train_from_iterator(itertools.chain([first_piece], pieces), trainer=trainer)
        # Training registers [UNK] as an added token, which would turn the literal
        # text "[UNK]" into id 0; the model maps unknowns to [UNK] without it.
        data = json.loads(backend.to_str())
        data["added_tokens"] = []
        return cls(tokenizers.Tokenizer.from_str(json.dumps(data)), level)

    @classmethod
    def train_on_corpus(cls, corpus, level: str = "char", vocab_size: int | None = None,
                        sample_bytes: int | None = None) -> "TextTokenizer":
        """Learn a tokenizer from a ``textgen.data.corpus.Corpus``, reading at most ``sample_bytes`` of it.

        A corpus no larger than ``sample_bytes`` (or any corpus, when it is
        None) is used whole, as one stream. A larger one is sampled: excerpts
        spread evenly over it (``Corpus.iter_sample``), so a corpus ordered by
        topic or language still shows the tokenizer all of its parts, in time
        and memory bounded by the sample rather than the corpus.
        """
        if sample_bytes is None or corpus.total_bytes <= sample_bytes:
            return cls.train(corpus.iter_text(), level=level, vocab_size=vocab_size)
        return cls.train(corpus.iter_sample(sample_bytes), level=level, vocab_size=vocab_size, excerpts=True)

    def to_json(self) -> str:
        """The tokenizer as tokenizer.json text; the same tokenizer gives the same text."""
        return self.backend.to_str(pretty=True)

    def save(self, path) -> None:
        """Write the tokenizer to ``path`` atomically, so readers never see half a file."""
        write_atomically(path, self.to_json().encode("utf-8"))

    @classmethod
    def from_json(cls, text: str) -> "TextTokenizer":
        """Rebuild a tokenizer from tokenizer.json text, accepting only what this module writes."""
        backend, level = parse_tokenizer_json(text)
        return cls(backend, level)

    @classmethod
    def load(cls, path) -> "TextTokenizer":
        """Read a tokenizer file written by :meth:`save`."""
        return cls.from_json(read_tokenizer_json(path))

    def extended(self, chunks: Iterable[str], max_vocab: int) -> tuple["TextTokenizer", Extension]:
        """This tokenizer with what it does not know in ``chunks`` added as new tokens, and what was added.

        Every existing token keeps its id; the parts of the text that became
        [UNK] (characters; whole words at the word level) get new ids after the
        old ones, the most frequent first, until the vocabulary has
        ``max_vocab`` tokens. Text that encoded before encodes to the same ids.
        """
        unknown, tokens = collections.Counter(), 0
        for batch in _batched(_safe_pieces(chunks, cut_anywhere=False), _BATCH_CHARS):
            for text, encoding in zip(batch, self._encode_batch(batch, with_offsets=True)):
                tokens += len(encoding.ids)
                unknown.update(text[start:end] for token_id, (start, end) in zip(encoding.ids, encoding.offsets)
                               if token_id == UNK_ID)
        room = max(check_vocab_size(max_vocab) - self.vocab_size, 0)
        added = tuple(token for token, _ in unknown.most_common(room))
        data = json.loads(self.to_json())
        vocab = data["model"]["vocab"]
        for token in added:
            vocab[token] = len(vocab)
        covered = sum(unknown[token] for token in added)
        share = (lambda count: count / tokens if tokens else 0.0)
        return (TextTokenizer.from_json(json.dumps(data)),
                Extension(added, share(covered), share(sum(unknown.values()) - covered)))

    def encode(self, text: str) -> np.ndarray:
        """The int32 ids of ``text``; anything unknown silently becomes [UNK]."""
        return self.encode_chunks((text,))

    def encode_chunks(self, chunks: Iterable[str]) -> np.ndarray:
        """The int32 ids of the concatenated chunks, the same as encoding them joined.

        The text is re-cut where no token can span the cut and encoded in
        batches, which the backend spreads over its threads.
        """
        arrays = list(self.iter_encoded(chunks))
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)

    def iter_encoded(self, chunks: Iterable[str], batch_chars: int = _BATCH_CHARS,
                     dtype=np.int32) -> Iterator[np.ndarray]:
        """Encode the concatenated chunks batch by batch: yields 1-D ``dtype`` arrays of ids.

        Joined, the arrays are exactly the ids of the joined text (see
        ``encode_chunks``), whatever the chunks' boundaries. Each batch holds
        about ``batch_chars`` characters, so memory stays bounded by the batch
        (the backend keeps some 80 bytes per token while it encodes one).
        """
        if isinstance(chunks, str):
            chunks = (chunks,)
        batch, batch_length = [], 0
        for piece in itertools.chain(_safe_pieces(chunks, cut_anywhere=self.level == "char"), [None]):
            if piece is not None:
                batch.append(piece)
                batch_length += len(piece)
            if batch and (piece is None or batch_length >= batch_chars):
                encodings = self._encode_batch(batch)
                batch, batch_length = [], 0
                yield np.concatenate([np.asarray(encoding.ids, dtype=dtype) for encoding in encodings])

    def encode_prompt(self, text: str) -> list[int]:
        """The ids of a prompt; warns once with UnknownTokenWarning if part of it is unknown."""
        ids, unknown = self._encode_finding_unknowns(text)
        if unknown:
            what = "words or symbols" if self.level == "word" else "characters"
            shown = ", ".join(repr(part) for part in unknown[:_SHOWN_UNKNOWNS])
            if len(unknown) > _SHOWN_UNKNOWNS:
                shown += f" and {len(unknown) - _SHOWN_UNKNOWNS} more"
            warnings.warn(f"prompt has {what} the tokenizer never saw, replaced by {UNK}: {shown}",
                          UnknownTokenWarning, stacklevel=2)
        return ids

    def unknown_characters(self, text: str) -> list[str]:
        """The distinct parts of ``text`` that would become [UNK], in order of first appearance.

        These are single characters, except at the word level, where a whole
        unknown word becomes one [UNK].
        """
        return self._encode_finding_unknowns(text)[1]

    def decode(self, ids) -> str:
        """The text of a sequence of ids; each [UNK] decodes to U+FFFD."""
        ids = np.asarray(ids)
        if ids.size == 0:
            return ""
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise TokenizerError(f"ids must be a flat sequence of integers. "
                                 f"Received: shape={ids.shape}, dtype={ids.dtype}")
        lowest, highest = int(ids.min()), int(ids.max())
        if lowest < 0 or highest >= self.vocab_size:
            raise TokenizerError(f"token id is outside the vocabulary of {self.vocab_size} tokens. "
                                 f"Received: id={lowest if lowest < 0 else highest}")
        return "".join([self._decoded_tokens[token_id] for token_id in ids.tolist()])

    def token_strings(self) -> list[str]:
        """The text of every token, by id ([UNK] is U+FFFD)."""
        return list(self._decoded_tokens)

    def token_lengths(self) -> np.ndarray:
        """The number of characters each token decodes to, by id (1 for [UNK])."""
        return np.array([len(token) for token in self._decoded_tokens], dtype=np.int32)

    def _encode_finding_unknowns(self, text: str) -> tuple[list[int], list[str]]:
        """The ids of ``text`` and the distinct parts of it that became [UNK]."""
        (encoding,) = self._encode_batch([_checked_text(text)], with_offsets=True)
        unknown = {text[start:end]: None
                   for token_id, (start, end) in zip(encoding.ids, encoding.offsets) if token_id == UNK_ID}
        return encoding.ids, list(unknown)

    def _encode_batch(self, pieces: list[str], with_offsets: bool = False) -> list[tokenizers.Encoding]:
        """Encode pieces with the backend, which skips the work on offsets unless asked."""
        encode_batch = self.backend.encode_batch if with_offsets else self.backend.encode_batch_fast
        try:
            return encode_batch(pieces, add_special_tokens=False)
        except TypeError:
            # A lone surrogate (from undecodable command-line bytes, say) cannot
            # cross into Rust. A noncharacter no token uses takes its place: it
            # becomes [UNK] too, and as one code point it keeps offsets right.
            if not any(_SURROGATE.search(piece) for piece in pieces):
                raise
            if self._surrogate_stand_in is None:
                used = set("".join(self._decoded_tokens))
                self._surrogate_stand_in = next((char for char in _NONCHARACTERS if char not in used), None)
                if self._surrogate_stand_in is None:
                    raise TokenizerError("text has lone surrogates and no character can stand in for them") from None
            return encode_batch([_SURROGATE.sub(self._surrogate_stand_in, piece) for piece in pieces],
                                add_special_tokens=False)


def _checked_text(text) -> str:
    """``text`` itself, once it is known to be a str."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str. Received: type={type(text).__name__}")
    return text


def _frequent_chars(chunks: Iterable[str], how_many: int) -> list[str]:
    """The ``how_many`` most frequent characters of the corpus, most frequent first."""
    counts = collections.Counter()
    for chunk in chunks:
        counts.update(_checked_text(chunk))
    if not counts:
        raise TokenizerError("cannot train a tokenizer on empty text")
    # Ties go to the lower code point, so the same corpus gives the same vocabulary.
    return sorted(counts, key=lambda char: (-counts[char], ord(char)))[:how_many]


def _whole_pieces(excerpt: str) -> str:
    """``excerpt`` from its first safe cut to its last: no word or bpe piece cut short at either end.

    An excerpt without two safe cuts is kept whole rather than dropped.
    """
    first = _SAFE_CUT.search(excerpt, 1)
    if first is None:
        return excerpt
    # The last cut is looked for in a tail that grows until it holds one: a
    # regex has no backward search, and scanning the whole excerpt costs more.
    tail = 4096
    while True:
        start = max(first.end() + 1, len(excerpt) - tail)
        last = None
        for last in _SAFE_CUT.finditer(excerpt, start):
            pass
        if last is not None:
            return excerpt[first.end():last.end()]
        if start == first.end() + 1:
            return excerpt
        tail *= 4


def _batched(pieces: Iterable[str], batch_chars: int) -> Iterator[list[str]]:
    """Pieces gathered into lists of about ``batch_chars`` characters."""
    batch, size = [], 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece)
        if size >= batch_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _safe_pieces(chunks: Iterable[str], cut_anywhere: bool) -> Iterator[str]:
    """Re-cut chunks into pieces of about _PIECE_CHARS that tokenize like the whole.

    Char tokens never span two characters, so ``cut_anywhere`` allows any cut;
    otherwise cuts fall only where _SAFE_CUT matches, and text without such a
    place stays in one piece, however long.
    """
    pending, pending_chars = [], 0
    for chunk in chunks:
        chunk, position = _checked_text(chunk), 0
        while position < len(chunk):
            # Short chunks (single lines, say) gather until a piece is big enough.
            target = position + max(0, _PIECE_CHARS - pending_chars)
            if target >= len(chunk):
                cut = -1
            elif cut_anywhere:
                cut = target
            else:
                match = _SAFE_CUT.search(chunk, target)
                cut = match.end() if match else -1
            if cut < 0:
                pending.append(chunk[position:] if position else chunk)
                pending_chars += len(chunk) - position
                break
            pending.append(chunk[position:cut])
            yield "".join(pending)
            pending, pending_chars, position = [], 0, cut
    if pending:
        yield "".join(pending)

