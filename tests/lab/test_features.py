"""The named features of a text, on hand-made strings with exact expected values."""

import string

import numpy as np
import pytest

from textgen.errors import ConfigError
from textgen.lab.features import (FEATURES, KINDS, Feature, compute_features, feature_names, get_feature,
                                  resolve_features)


def per_char(name, text):
    """The feature over ``text`` read one character a token, as a list of ints."""
    return [int(v) for v in get_feature(name).values(list(text))]


def digits(values):
    return "".join(str(v) for v in values)


def test_registry_names_each_feature_once_with_a_description_and_kind():
    names = feature_names()
    assert len(set(names)) == len(names) == len(FEATURES)
    assert {"in_double_quotes", "in_single_quotes", "line_position", "to_line_end", "bracket_depth",
            "indent_depth", "in_comment", "in_string", "word_start", "vowel", "consonant", "space",
            "punctuation"} <= set(names)
    for feature in FEATURES:
        assert feature.description and "\n" not in feature.description and feature.kind in KINDS
        values = feature.values(["a", "(", '"', "\n", " ", "#", "'"])
        assert values.dtype == np.float64 and values.shape == (7,)
        if feature.kind == "binary":
            assert set(values) <= {0.0, 1.0}


def test_double_quotes_open_and_close_and_end_with_the_paragraph():
    text = 'say "hi" and \u201cyo\u201d\n"open\n\nx'
    assert digits(per_char("in_double_quotes", text)) == (
        "0000" "1110" "00000" "1110" "0" "111111" "0" "0")
    #     say_  "hi"  _and_   “yo”   \n "open\n   \n  x


def test_single_quotes_skip_apostrophes_in_and_after_words():
    text = "'I don't know,' she said. The dogs' bones."
    values = per_char("in_single_quotes", text)
    assert digits(values[:15]) == "111111111111110"  # the quote opens at ' and closes after "know,"
    assert set(values[15:]) == {0}  # dogs' is an apostrophe, not a quote
    assert set(per_char("in_single_quotes", "it's o'clock, rock 'n' roll")[:13]) == {0}
    assert digits(per_char("in_single_quotes", "\u2018x\u2019s\u2019")) == "11110"  # curly: x’s is one word


def test_single_quotes_that_never_close_end_at_a_paragraph():
    assert digits(per_char("in_single_quotes", "'tis\nso\n\nno")) == "1111" "1" "11" "1" "0" "00"


def test_line_position_and_to_line_end():
    text = "ab\ncde\n\nf"
    assert per_char("line_position", text) == [1, 2, 0, 1, 2, 3, 0, 0, 1]
    assert per_char("to_line_end", text) == [1, 0, 3, 2, 1, 0, 0, 1, 0]


def test_bracket_depth_nests_every_kind_and_never_goes_below_zero():
    text = "f(a[1], {b: (c)})) ]x("
    assert per_char("bracket_depth", text) == [0, 1, 1, 2, 2, 1, 1, 1, 2, 2, 2, 2, 3, 3, 2, 1, 0, 0, 0, 0, 0, 1]


def test_indent_depth_counts_leading_spaces_and_tabs_as_read():
    text = "def f():\n    x = 1\n\tif y:\n  \t z\n"
    values = per_char("indent_depth", text)
    assert values[:9] == [0] * 9  # "def f():" and its line end
    assert values[9:19] == [1, 2, 3, 4, 4, 4, 4, 4, 4, 0]  # "    x = 1\n"
    assert values[19:26] == [4, 4, 4, 4, 4, 4, 0]  # "\tif y:\n": a tab is 4
    assert values[26:] == [1, 2, 6, 7, 7, 0]  # "  \t z\n"


def test_comments_and_strings_of_python():
    text = 'x = "a # b"  # c "d"\ny = 1'
    assert digits(per_char("in_string", text)) == "0000" "111111" "0" + "0" * (len(text) - 11)
    assert digits(per_char("in_comment", text)) == "0" * 13 + "1111111" + "0" + "00000"


def test_triple_quoted_strings_hold_quotes_line_ends_and_hashes():
    text = "s = '''it's \"#\"\n'''; t = \"\"\"a\"\"\" # c"
    in_string = per_char("in_string", text)
    opening = text.index("'''")
    closing = text.index("'''", opening + 3)
    assert set(in_string[:opening]) == {0}
    assert set(in_string[opening:closing + 2]) == {1}  # the quotes inside, the line end, the first two closing
    assert in_string[closing + 2] == 0  # the last closing quote
    second = text.index('"""')
    assert in_string[second:second + 7] == [1, 1, 1, 1, 1, 1, 0]  # """a"""
    in_comment = per_char("in_comment", text)
    assert in_comment.index(1) == text.rindex("#") and set(in_comment[text.rindex("#"):]) == {1}


def test_escapes_and_unterminated_one_line_strings():
    assert digits(per_char("in_string", r'"a\"b" c')) == "11111" "0" "00"
    assert digits(per_char("in_string", "'ab\nc'd")) == "111" "0" "0" "11"  # ends at the line end; c' opens anew
    assert digits(per_char("in_string", "'''x\\'''' y")) == "1111" "11" "110" "00"  # \' is escaped
    assert digits(per_char("in_string", '"" x')) == "10" "00"  # an empty string


def test_word_start_and_the_last_characters_class():
    text = "Hi, you_2 a-b!"
    assert digits(per_char("word_start", text)) == "10" "00" "1000" "0" "0" "1" "0" "1" "0"
    assert digits(per_char("vowel", text)) == "01" "00" "0110" "0" "0" "1" "0" "0" "0"
    assert digits(per_char("consonant", text)) == "10" "00" "1000" "0" "0" "0" "0" "1" "0"
    assert digits(per_char("space", text)) == "00" "01" "0000" "0" "1" "0" "0" "0" "0"
    assert digits(per_char("punctuation", text)) == "00" "10" "0001" "0" "0" "0" "1" "0" "1"
    ascii_punctuation = [ch for ch in map(chr, range(128)) if per_char("punctuation", ch) == [1]]
    assert "".join(ascii_punctuation) == string.punctuation


def test_tokens_of_several_characters_take_the_state_after_their_last_one():
    tokens = ["print", "(", '"', "hi", " # x", '"', ")", "  # done", "\n", "  ", "caf\u00e9"]
    values = compute_features(tokens)
    assert values["in_string"].tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert values["in_comment"].tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    assert values["bracket_depth"].tolist() == [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert values["line_position"].tolist() == [5, 6, 7, 9, 13, 14, 15, 23, 0, 2, 6]
    assert values["to_line_end"].tolist() == [18, 17, 16, 14, 10, 9, 8, 0, 6, 4, 0]
    assert values["word_start"].tolist() == [1, 0, 0, 1, 1, 0, 0, 1, 0, 0, 1]  # " # x" and "  # done" start x, done
    assert values["vowel"].tolist() == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]  # é is not an ASCII vowel
    assert values["indent_depth"].tolist() == [0] * 9 + [2, 2]


def test_features_are_named_or_given_and_checked():
    own = Feature("shout", "an exclamation mark", "binary", lambda tokens: [t == "!" for t in tokens])
    assert [f.name for f in resolve_features(["vowel", own])] == ["vowel", "shout"]
    assert [f.name for f in resolve_features("space")] == ["space"]
    assert resolve_features(None) == list(FEATURES)
    assert compute_features(["a", "!"], [own])["shout"].tolist() == [0.0, 1.0]
    with pytest.raises(ConfigError, match=r"Received: feature='vowels'$"):
        resolve_features(["vowels"])
    with pytest.raises(ConfigError, match=r"each once\. Received: features=\['space', 'space'\]$"):
        resolve_features(["space", "space"])
    with pytest.raises(ConfigError, match=r"Received: features=\[\]$"):
        resolve_features([])
    with pytest.raises(ConfigError, match=r"Received: shape=\(1,\)$"):
        Feature("short", "too few values", "count", lambda tokens: [1.0]).values(["a", "b"])
    with pytest.raises(ConfigError, match=r"Received: value=nan$"):
        Feature("nan", "not finite", "count", lambda tokens: [float("nan")] * len(tokens)).values(["a"])
    with pytest.raises(ConfigError, match=r"Received: kind='ratio'$"):
        Feature("odd", "a kind that is not one", "ratio", lambda tokens: [])
    with pytest.raises(ConfigError, match=r"Received: name='two words'$"):
        Feature("two words", "not an identifier", "binary", lambda tokens: [])
