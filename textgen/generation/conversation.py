"""A conversation: a text that a person and the model write in turns, read by the model once.

The model's state after each piece of a turn is kept, so the next turn reads
only its own new text and continues from everything said before, at a cost
that does not grow with the conversation (BENCHMARKS.md, "Conversations:
carrying the state or reading it all again"). ``textgen sample
--interactive`` is built on it.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

from textgen.config import MAX_LENGTH, SampleConfig, check_int, fail
from textgen.generation.generator import Generator
from textgen.generation.request import SampleRequest
from textgen.generation.samples import SampleRun

# The settings a conversation's turns take, and may change between turns.
SETTINGS = ("length", "temperature", "top_k", "top_p", "seed")


class Conversation:
    """A text written in turns; each ``say(text)`` reads ``text`` on from where it stands and continues it.

    ``say`` yields the continuation in pieces as they are generated. ``text``
    is everything said so far, exactly what the model has read: after a turn
    it holds the person's text and every piece yielded, so a turn stopped
    early (by asking for no more pieces) keeps the pieces it gave and nothing
    more. Token t of the conversation is drawn at position t of its seed's stream,
    so the same seed and the same turns give the same conversation. The
    first turn starts from the zero state as ``TextModel.generate`` does (an
    empty first text starts as if at the beginning of a line); ``reset``
    starts over. ``settings`` apply to every turn; ``update`` changes them.
    """

    def __init__(self, generator: Generator, tokenizer, vocab_size: int, chunk_tokens: int = 16, **settings):
        self._generator, self._tokenizer, self._vocab_size = generator, tokenizer, vocab_size
        check_int("chunk_tokens", chunk_tokens, 1, MAX_LENGTH)
        self._chunk_tokens = chunk_tokens
        self._settings = SampleConfig()  # the defaults, with no seed yet: update checks them and draws one
        self.update(**settings)
        self.reset()

    @property
    def settings(self) -> SampleConfig:
        """The settings of the next turn (its seed always set)."""
        return self._settings

    def update(self, **changes) -> SampleConfig:
        """Change some of ``SETTINGS`` for the turns to come (seed=None draws a new seed); returns the settings."""
        for name in changes:
            if name not in SETTINGS:
                fail(f"a conversation's settings are {', '.join(SETTINGS)}", "setting", name)
        settings = dataclasses.replace(self._settings, **changes)
        request = SampleRequest.check("", vocab_size=self._vocab_size,
                                      **{name: getattr(settings, name) for name in SETTINGS})
        self._settings = request.settings
        return self._settings

    def reset(self) -> None:
        """Forget everything said: the next turn starts from the zero state, at token 0."""
        self.text = ""
        self._carried = None  # (logits (1, V), states (S, 1, U)) after ``text``; None: nothing read yet
        self._drawn = 0  # tokens the model has drawn in this conversation

    def say(self, text: str = "") -> Iterator[str]:
        """Read ``text`` on from the conversation so far and yield the model's continuation in pieces.

        The request is checked at once; the model reads and writes as the
        pieces are asked for.
        """
        request = SampleRequest.check(text, vocab_size=self._vocab_size,
                                      **{name: getattr(self._settings, name) for name in SETTINGS})
        run = SampleRun(self._generator, self._tokenizer, request, self._chunk_tokens, carried=self._carried,
                        offset=self._drawn)
        return self._turn(run, text)

    def _turn(self, run: SampleRun, text: str) -> Iterator[str]:
        shown, drawn = "", 0
        for samples in run:
            (sample,) = samples
            piece = sample.text[len(shown):]
            # Kept before the piece is given out: a caller who stops here has this state.
            self._carried = (run.logits, run.states)
            self._drawn += len(sample.token_ids) - drawn
            self.text += text + piece
            shown, drawn, text = sample.text, len(sample.token_ids), ""
            yield piece
