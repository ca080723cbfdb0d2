"""Named features of a text, token by token: what a unit of a model might be found to track.

Karpathy, Johnson and Fei-Fei (2015) found single LSTM units that follow
nameable things: being inside quotes, the position in a line, the depth of
brackets. ``textgen.lab.cells`` looks for such units by correlating every unit
with every feature defined here. Everything is plain Python and NumPy.

What a value means. A text is read as its tokens, ``text = "".join(tokens)``
(the token strings, so an unknown character is U+FFFD, as the model saw it).
The value of a feature at token t describes the position right after token t
was read: the state of the text after its last character (for a token of
several characters, after all of them). Features of the text's state (quotes,
line position, brackets, indentation, comments, strings) say what that
position is in the whole text: ``to_line_end`` looks ahead, the others depend
only on what was read. ``word_start`` describes the token itself; ``vowel``,
``consonant``, ``space`` and ``punctuation`` its last character. A feature is
``binary`` (0 or 1) or a ``count`` (0, 1, 2, ...).

The rules, exactly:

* ``in_double_quotes``: a ``"`` opens a quote outside one and closes it
  inside one; ``\u201c`` opens and ``\u201d`` closes. The quote mark that
  opens counts as inside, the one that closes as outside.
* ``in_single_quotes``: ``\u2018`` opens and ``\u2019`` closes; a ``'`` (or
  ``\u2019``) between two word characters is an apostrophe (don't, it's,
  o'clock) and changes nothing. Any other ``'`` closes an open quote; outside
  one it opens a quote unless it follows a word character, where it is an
  apostrophe too (the dogs' bones, goin'). So 'tis opens a quote it never
  closes, and a quoted dogs' closes its quote early: these are heuristics.
* Either kind of quote ends at the end of a paragraph: the line end of a line
  holding only whitespace. A quote in prose never runs on across paragraphs,
  and a misread apostrophe is forgotten there.
* ``line_position``: characters read since the last line end (``\\n``): 0
  right after a line end. ``to_line_end``: characters left before the next
  line end (or the end of the text): 0 right before a line end.
* ``bracket_depth``: ``(``, ``[`` and ``{`` open, ``)``, ``]`` and ``}`` close,
  all kinds counted together, everywhere (strings and comments too). A
  closing bracket at depth 0 is ignored, so the depth is never below 0.
* ``indent_depth``: the whitespace the current line starts with, as far as
  it has been read: a space counts 1 and a tab 4. It is 0 at the start of a
  line, grows through the leading spaces and then stays until the line ends.
* ``in_string`` and ``in_comment`` come from one simple scanner of Python
  source, not a full tokenizer: outside a string, ``'`` or ``"`` opens a
  string, ``'''`` or ``\"\"\"`` a triple-quoted one, which the same three
  characters close; inside a string a backslash escapes the next character
  (in raw strings too, as Python reads them); a one-line string that meets an
  unescaped line end ends there. Outside a string, ``#`` starts a comment
  that runs to the line end (the line end itself is outside). String prefixes
  (r, b, f) need nothing; quotes nested inside an f-string's braces are not
  understood. The quote characters that open a string count as inside, the
  last one that closes it as outside; ``#`` counts as inside its comment.
* ``word_start``: the token holds the first character of a word, a word
  being a run of word characters as the tokenizers define them: letters,
  marks, digits and ``_``.
* ``vowel``: the last character is one of a, e, i, o, u in either case
  (ASCII; y counts as a consonant). ``consonant``: another ASCII letter.
  ``space``: whitespace (``str.isspace``). ``punctuation``: a Unicode
  punctuation or symbol character (categories P and S), which for ASCII is
  exactly ``string.punctuation``, ``_`` included.

``FEATURES`` is the registry: a tuple of ``Feature`` objects, which owns the
names. A ``Feature`` of one's own (any function from tokens to one number per
token) can be passed to ``textgen.lab.cells.find_cells`` beside them.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from typing import Callable, Sequence

import numpy as np

from textgen.errors import ConfigError

KINDS = ("binary", "count")
TAB_WIDTH = 4  # the indentation a tab counts for in indent_depth
OPENING_BRACKETS = "([{"
CLOSING_BRACKETS = ")]}"
VOWELS = frozenset("aeiouAEIOU")


@dataclasses.dataclass(frozen=True)
class Feature:
    """A named per-token feature of a text.

    ``compute(tokens)`` returns a float64 array (T,): the feature's value
    right after each token was read. ``kind`` is ``"binary"`` or ``"count"``.
    """

    name: str
    description: str
    kind: str
    compute: Callable[[Sequence[str]], np.ndarray]

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ConfigError(f"a feature's name must be an identifier. Received: name={self.name!r}")
        if self.kind not in KINDS:
            raise ConfigError(f"a feature's kind must be one of {', '.join(KINDS)}. Received: kind={self.kind!r}")

    def values(self, tokens: Sequence[str]) -> np.ndarray:
        """``compute(tokens)``, checked: one finite float per token, (T,) float64."""
        values = np.asarray(self.compute(tokens), dtype=np.float64)
        if values.shape != (len(tokens),):
            raise ConfigError(f"feature {self.name} must give one value per token ({len(tokens)}). "
                              f"Received: shape={values.shape}")
        if not np.isfinite(values).all():
            raise ConfigError(f"feature {self.name} gave a value that is not finite. "
                              f"Received: value={values[~np.isfinite(values)][0]}")
        return values


def is_word_character(ch: str) -> bool:
    """True for the characters the tokenizers put in words: letters, marks, digits and ``_``."""
    return ch == "_" or ch.isalnum() or unicodedata.category(ch).startswith(("L", "M", "N"))


def _token_ends(tokens: Sequence[str]) -> np.ndarray:
    """(T,) int: how many characters of the text have been read after each token."""
    return np.cumsum([len(token) for token in tokens], dtype=np.int64)


def _after_tokens(states: Sequence[float], tokens: Sequence[str]) -> np.ndarray:
    """Per-token values from per-position states: ``states[i]`` describes the text after its first i characters,
    so (N + 1,) states give (T,) values, each the state after the token's last character."""
    return np.asarray(states, dtype=np.float64)[_token_ends(tokens)]


# --- states of the text, position by position: each returns N + 1 values for N characters ---


def _paragraph_ends(text: str) -> list[bool]:
    """For each character: True if it is the line end of a line holding only whitespace."""
    ends, blank = [], True
    for ch in text:
        ends.append(ch == "\n" and blank)
        blank = True if ch == "\n" else blank and ch.isspace()
    return ends


def _double_quote_states(text: str) -> list[int]:
    inside, states = False, [0]
    for ch, paragraph_end in zip(text, _paragraph_ends(text)):
        if ch == '"':
            inside = not inside
        elif ch == "\u201c":
            inside = True
        elif ch == "\u201d" or paragraph_end:
            inside = False
        states.append(int(inside))
    return states


def _single_quote_states(text: str) -> list[int]:
    inside, states = False, [0]
    ends = _paragraph_ends(text)
    for i, ch in enumerate(text):
        before = text[i - 1] if i else ""
        after = text[i + 1] if i + 1 < len(text) else ""
        within_word = bool(before) and bool(after) and is_word_character(before) and is_word_character(after)
        if ch == "\u2018":
            inside = True
        elif ch in "'\u2019" and not within_word:
            if inside:
                inside = False
            elif ch == "'" and not (before and is_word_character(before)):
                inside = True
        elif ends[i]:
            inside = False
        states.append(int(inside))
    return states


def _line_position_states(text: str) -> list[int]:
    position, states = 0, [0]
    for ch in text:
        position = 0 if ch == "\n" else position + 1
        states.append(position)
    return states


def _to_line_end_states(text: str) -> list[int]:
    states = [0] * (len(text) + 1)
    left = 0  # characters from position i to the next line end or the end of the text
    for i in range(len(text) - 1, -1, -1):
        states[i + 1] = left  # after character i, the characters after it up to the line end
        left = 0 if text[i] == "\n" else left + 1
    states[0] = left
    return states


def _bracket_depth_states(text: str) -> list[int]:
    depth, states = 0, [0]
    for ch in text:
        if ch in OPENING_BRACKETS:
            depth += 1
        elif ch in CLOSING_BRACKETS and depth > 0:
            depth -= 1
        states.append(depth)
    return states


def _indent_depth_states(text: str) -> list[int]:
    depth, leading, states = 0, True, [0]
    for ch in text:
        if ch == "\n":
            depth, leading = 0, True
        elif leading and ch == " ":
            depth += 1
        elif leading and ch == "\t":
            depth += TAB_WIDTH
        else:
            leading = False
        states.append(depth)
    return states


def _python_states(text: str) -> tuple[list[int], list[int]]:
    """(in_string, in_comment) after each of the first i characters, (N + 1,) each, by the scanner above."""
    length = len(text)
    in_string, in_comment = [0] * (length + 1), [0] * (length + 1)
    i = 0
    while i < length:
        ch = text[i]
        if ch == "#":
            end = text.find("\n", i)
            end = length if end < 0 else end
            in_comment[i + 1:end + 1] = [1] * (end - i)  # "#" up to the line end, which stays 0
            i = end
        elif ch in "'\"":
            delimiter = ch * 3 if text.startswith(ch * 3, i) else ch
            in_string[i + 1:i + len(delimiter) + 1] = [1] * len(delimiter)
            i += len(delimiter)
            while i < length:
                if text[i] == "\\":
                    in_string[i + 1:min(i + 2, length) + 1] = [1] * (min(i + 2, length) - i)
                    i += 2
                elif text.startswith(delimiter, i):
                    in_string[i + 1:i + len(delimiter)] = [1] * (len(delimiter) - 1)  # the last one closes: 0
                    i += len(delimiter)
                    break
                elif text[i] == "\n" and len(delimiter) == 1:
                    break  # an unterminated one-line string ends at the line end, which is outside it
                else:
                    in_string[i + 1] = 1
                    i += 1
        else:
            i += 1
    return in_string, in_comment


# --- the features ---


def _of_text(states_of: Callable[[str], list[int]]) -> Callable[[Sequence[str]], np.ndarray]:
    return lambda tokens: _after_tokens(states_of("".join(tokens)), tokens)


def _last_character(test: Callable[[str], bool]) -> Callable[[Sequence[str]], np.ndarray]:
    return lambda tokens: np.array([float(bool(token) and test(token[-1])) for token in tokens])


def _word_start(tokens: Sequence[str]) -> np.ndarray:
    values, before = [], ""
    for token in tokens:
        starts = False
        for ch in token:
            word = is_word_character(ch)
            starts = starts or (word and not (before and is_word_character(before)))
            before = ch
        values.append(float(starts))
    return np.array(values, dtype=np.float64)


def _is_punctuation(ch: str) -> bool:
    return unicodedata.category(ch).startswith(("P", "S"))


FEATURES: tuple[Feature, ...] = (
    Feature("in_double_quotes", 'inside a "double-quoted" passage', "binary", _of_text(_double_quote_states)),
    Feature("in_single_quotes", "inside a 'single-quoted' passage (apostrophes in words do not count)", "binary",
            _of_text(_single_quote_states)),
    Feature("line_position", "characters since the last line end", "count", _of_text(_line_position_states)),
    Feature("to_line_end", "characters left until the next line end", "count", _of_text(_to_line_end_states)),
    Feature("bracket_depth", "how many (, [ and { are open", "count", _of_text(_bracket_depth_states)),
    Feature("indent_depth", "leading whitespace of the current line read so far (tab = 4)", "count",
            _of_text(_indent_depth_states)),
    Feature("in_comment", "inside a Python # comment", "binary", _of_text(lambda text: _python_states(text)[1])),
    Feature("in_string", "inside a Python string literal, triple-quoted ones too", "binary",
            _of_text(lambda text: _python_states(text)[0])),
    Feature("word_start", "the token begins a word", "binary", _word_start),
    Feature("vowel", "the token ends in a vowel (a, e, i, o, u)", "binary", _last_character(VOWELS.__contains__)),
    Feature("consonant", "the token ends in a consonant (another ASCII letter)", "binary",
            _last_character(lambda ch: ch.isascii() and ch.isalpha() and ch not in VOWELS)),
    Feature("space", "the token ends in whitespace", "binary", _last_character(str.isspace)),
    Feature("punctuation", "the token ends in punctuation or a symbol", "binary", _last_character(_is_punctuation)),
)


def feature_names() -> list[str]:
    """The names of the built-in features, in the registry's order."""
    return [feature.name for feature in FEATURES]


def get_feature(name: str) -> Feature:
    """The built-in feature called ``name``."""
    for feature in FEATURES:
        if feature.name == name:
            return feature
    raise ConfigError(f"unknown feature (features: {', '.join(feature_names())}). Received: feature={name!r}")


def compute_features(tokens: Sequence[str], features: Sequence[Feature | str] | None = None) -> dict[str, np.ndarray]:
    """Each feature's values (T,) over ``tokens``, by name; ``features`` defaults to every built-in one."""
    return {feature.name: feature.values(tokens) for feature in resolve_features(features)}


def resolve_features(features: Sequence[Feature | str] | str | None) -> list[Feature]:
    """Features named or given: None is every built-in one; a name is looked up; a ``Feature`` is taken as it is.

    Two features of one name are refused, as is an empty list.
    """
    if features is None:
        return list(FEATURES)
    if isinstance(features, (str, Feature)):
        features = [features]
    try:
        chosen = [item if isinstance(item, Feature) else get_feature(item) for item in features]
    except TypeError:
        raise ConfigError(f"features must be feature names or Feature objects. "
                          f"Received: features={features!r}") from None
    names = [feature.name for feature in chosen]
    if not chosen or len(set(names)) != len(names):
        raise ConfigError(f"features must name at least one feature, each once. Received: features={names}")
    return chosen
