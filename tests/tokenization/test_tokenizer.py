"""Tests for textgen.tokenization.tokenizer and textgen.tokenization.tokenizer_json: exact round trips, determinism and safe loading."""

import json
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textgen.tokenization import tokenizer as tokenizer_module
from textgen.tokenization import tokenizer_json
from textgen.errors import ConfigError, TokenizerError
from textgen.tokenization.rules import LEVELS, UNK, UNK_REPLACEMENT, WORD_PATTERN
from textgen.tokenization.tokenizer import TextTokenizer, UnknownTokenWarning

from conftest import MIXED_TEXT as CORPUS


# Random text, often with the spaces, newlines and punctuation that decide where
# word and bpe pieces start and end. Prompts may also hold lone surrogates, which
# reach Python from undecodable command-line bytes but cannot reach the backend.
_TYPICAL_CHARS = st.sampled_from(list("ab \n\r\t.,é日😀"))
TEXT = st.text(st.one_of(_TYPICAL_CHARS, st.characters(exclude_categories=["Cs"])))
PROMPT_TEXT = st.text(st.one_of(_TYPICAL_CHARS, st.characters()))


@pytest.fixture(scope="module", params=LEVELS)
def trained(request):
    return TextTokenizer.train(CORPUS, level=request.param)


@pytest.fixture(scope="module")
def char_tokenizer():
    return TextTokenizer.train(CORPUS, level="char")


def test_round_trip_is_exact_on_training_text(trained):
    ids = trained.encode(CORPUS)
    assert ids.dtype == np.int32
    assert trained.decode(ids) == CORPUS
    assert trained.decode(ids.tolist()) == CORPUS
    assert trained.unknown_characters(CORPUS) == []


def test_literal_unk_text_is_not_the_unk_token(trained):
    ids = trained.encode("speak [UNK] speak")
    assert trained.unk_id not in ids
    assert trained.decode(ids) == "speak [UNK] speak"


def test_token_lengths_add_up_to_the_text_length(trained):
    lengths = trained.token_lengths()
    assert lengths.shape == (trained.vocab_size,) and lengths.dtype == np.int32
    assert lengths[trained.unk_id] == 1
    assert int(lengths[trained.encode(CORPUS)].sum()) == len(CORPUS)
    with_unknown = "Speak ☃ now"
    assert int(lengths[trained.encode(with_unknown)].sum()) == len(trained.decode(trained.encode(with_unknown)))


def test_training_is_deterministic_and_independent_of_chunking(trained):
    again = TextTokenizer.train(CORPUS, level=trained.level)
    assert again.to_json() == trained.to_json()
    odd_cuts = [CORPUS[start:start + 37] for start in range(0, len(CORPUS), 37)]
    assert TextTokenizer.train(iter(odd_cuts), level=trained.level).to_json() == trained.to_json()


def test_training_is_deterministic_across_processes(tmp_path):
    script = (
        "import sys; from textgen.tokenization.tokenizer import TextTokenizer; "
        "text = open(sys.argv[1], encoding='utf-8').read(); "
        "sys.stdout.write(TextTokenizer.train(text, 'bpe', 120).to_json())"
    )
    # Ties between equally frequent pairs make a good test of hash-order independence.
    text = "".join(f"{a}{b} {b}{a}\n" for a in "abcdefgh" for b in "ijklmnop")
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    # Each process seeds its hash maps afresh; the package is found wherever pytest runs.
    environment = {**os.environ, "PYTHONPATH": str(Path(tokenizer_module.__file__).resolve().parents[2])}
    outputs = {subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                              env=environment, check=True).stdout for _ in range(2)}
    assert outputs == {TextTokenizer.train(text, "bpe", 120).to_json()}


def test_char_level_has_one_id_per_code_point_ordered_by_frequency(char_tokenizer):
    text = "Café 😀\r\n"
    assert len(char_tokenizer.encode(text)) == len(text)
    vocab = char_tokenizer.backend.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    assert tokens[0] == UNK
    counts = [CORPUS.count(token) for token in tokens[1:]]
    assert counts == sorted(counts, reverse=True)
    for first, second in zip(tokens[1:], tokens[2:]):
        if CORPUS.count(first) == CORPUS.count(second):
            assert ord(first) < ord(second)
    assert set(tokens[1:]) == set(CORPUS)


def test_char_vocab_size_keeps_the_most_frequent_characters():
    tokenizer = TextTokenizer.train("aaaa bbb cc d\n", level="char", vocab_size=4)
    assert tokenizer.vocab_size == 4
    assert tokenizer.decode(tokenizer.encode("abcd")) == "ab" + UNK_REPLACEMENT * 2
    assert tokenizer.unknown_characters("dcba\n d") == ["d", "c", "\n"]


def test_unknown_character_becomes_unk_and_the_prompt_warns(char_tokenizer):
    assert char_tokenizer.encode("e☃t")[1] == char_tokenizer.unk_id
    with pytest.warns(UnknownTokenWarning, match=r"never saw.*'☃', '\\x00'$") as record:
        ids = char_tokenizer.encode_prompt("e☃t\x00☃")
    assert len(record) == 1
    assert ids == char_tokenizer.encode("e☃t\x00☃").tolist()
    assert char_tokenizer.decode(ids) == f"e{UNK_REPLACEMENT}t{UNK_REPLACEMENT}{UNK_REPLACEMENT}"


def test_known_prompt_does_not_warn(trained):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert trained.encode_prompt("Speak, speak.\n") == trained.encode("Speak, speak.\n").tolist()


def test_lone_surrogates_are_unknown_not_errors(trained):
    with pytest.warns(UnknownTokenWarning, match="udc80"):
        ids = trained.encode_prompt("Speak\udc80 now")
    assert trained.unk_id in ids
    assert trained.unknown_characters("\udc80Speak\udc80") == ["\udc80"]


def test_unseen_word_is_one_unknown_piece_at_word_level():
    tokenizer = TextTokenizer.train(CORPUS, level="word")
    with pytest.warns(UnknownTokenWarning, match="'zebra'"):
        ids = tokenizer.encode_prompt("speak zebra speak")
    assert ids.count(tokenizer.unk_id) == 1
    assert tokenizer.decode(ids) == f"speak {UNK_REPLACEMENT} speak"


@pytest.mark.parametrize("level", ["word", "bpe"])
def test_vocab_size_is_an_upper_bound(level):
    tokenizer = TextTokenizer.train(CORPUS, level=level, vocab_size=30)
    assert tokenizer.vocab_size <= 30
    assert len(tokenizer.backend.get_vocab()) == tokenizer.vocab_size


def test_bpe_compresses_english_text():
    tokenizer = TextTokenizer.train(CORPUS * 2, level="bpe", vocab_size=200)
    assert len(tokenizer.encode(CORPUS)) < 0.6 * len(CORPUS)
    assert tokenizer.decode(tokenizer.encode(CORPUS)) == CORPUS


def test_encode_chunks_equals_encoding_the_joined_text(trained, monkeypatch):
    # Tiny pieces make the re-cutting happen even on this small corpus.
    monkeypatch.setattr(tokenizer_module, "_PIECE_CHARS", 5)
    monkeypatch.setattr(tokenizer_module, "_BATCH_CHARS", 23)
    whole = np.asarray(trained.backend.encode(CORPUS).ids, dtype=np.int32)
    lines = CORPUS.splitlines(keepends=True)
    assert np.array_equal(trained.encode_chunks(lines), whole)
    assert np.array_equal(trained.encode_chunks(iter(["".join(lines[:3]), "", "".join(lines[3:])])), whole)
    assert np.array_equal(trained.encode(CORPUS), whole)
    arbitrary_cuts = [CORPUS[start:start + 11] for start in range(0, len(CORPUS), 11)]
    assert np.array_equal(trained.encode_chunks(arbitrary_cuts), whole)
    assert trained.encode_chunks([]).shape == (0,)


@settings(deadline=None, max_examples=50)
@given(text=TEXT, cuts=st.lists(st.integers(min_value=0, max_value=200)), piece_chars=st.integers(1, 9))
def test_re_cutting_never_changes_tokens(trained, text, cuts, piece_chars):
    edges = sorted({0, len(text), *(cut for cut in cuts if cut < len(text))})
    chunks = [text[start:end] for start, end in zip(edges, edges[1:])]
    original = tokenizer_module._PIECE_CHARS
    tokenizer_module._PIECE_CHARS = piece_chars
    try:
        pieces = list(tokenizer_module._safe_pieces(chunks, cut_anywhere=trained.level == "char"))
        encoded = trained.encode_chunks(chunks)
    finally:
        tokenizer_module._PIECE_CHARS = original
    assert "".join(pieces) == text and all(pieces)
    assert encoded.tolist() == trained.backend.encode(text).ids


@settings(deadline=None, max_examples=50)
@given(text=st.text(min_size=1))
def test_char_tokenizer_round_trips_any_text_it_was_trained_on(text):
    tokenizer = TextTokenizer.train([text], level="char")
    ids = tokenizer.encode(text)
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == text


@settings(deadline=None, max_examples=50)
@given(text=TEXT.filter(bool))
def test_word_tokenizer_round_trips_any_text_it_was_trained_on(text):
    tokenizer = TextTokenizer.train([text], level="word")
    assert tokenizer.decode(tokenizer.encode(text)) == text


@settings(deadline=None, max_examples=50)
@given(text=TEXT.filter(bool))
def test_bpe_tokenizer_round_trips_any_text_it_was_trained_on(text):
    tokenizer = TextTokenizer.train([text], level="bpe", vocab_size=len(set(text)) + 20)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert int(tokenizer.token_lengths()[ids].sum()) == len(text)


@settings(deadline=None, max_examples=50)
@given(text=PROMPT_TEXT)
def test_prompts_of_random_text_only_warn(trained, text):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = trained.encode_prompt(text)
    unknown = trained.unknown_characters(text)
    assert [type(warning.message) for warning in caught] == ([UnknownTokenWarning] if unknown else [])
    if trained.level != "word":  # at the word level a whole unknown word becomes one [UNK]
        known = set(CORPUS)
        assert trained.decode(ids) == "".join(char if char in known else UNK_REPLACEMENT for char in text)
        assert unknown == list(dict.fromkeys(char for char in text if char not in known))


def test_save_and_load_round_trip(trained, tmp_path):
    path = tmp_path / "tokenizer.json"
    trained.save(path)
    loaded = TextTokenizer.load(path)
    assert loaded.level == trained.level
    assert loaded.to_json() == trained.to_json()
    assert np.array_equal(loaded.encode(CORPUS), trained.encode(CORPUS))
    assert [entry.name for entry in tmp_path.iterdir()] == ["tokenizer.json"]


def test_load_of_a_missing_file_is_a_tokenizer_error(tmp_path):
    with pytest.raises(TokenizerError, match="cannot read"):
        TextTokenizer.load(tmp_path / "missing.json")


def _edited(tokenizer, edit):
    data = json.loads(tokenizer.to_json())
    edit(data)
    return json.dumps(data)


def _set_pattern(data, pattern):
    data["pre_tokenizer"]["pattern"]["Regex"] = pattern


BAD_EDITS = {
    "unknown model type": lambda data: data["model"].update(type="Lambda"),
    "unigram model": lambda data: data.update(model={"type": "Unigram", "unk_id": 0, "vocab": [["[UNK]", 0.0]]}),
    "byte-level pre-tokenizer": lambda data: data.update(
        pre_tokenizer={"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}),
    "unbalanced regex": lambda data: _set_pattern(data, "("),
    "huge repetition": lambda data: _set_pattern(data, "(a{1000}){1000}{1000}"),
    "other regex": lambda data: _set_pattern(data, r"\w+|\s"),
    "normalizer": lambda data: data.update(normalizer={"type": "Lowercase"}),
    "post-processor": lambda data: data.update(post_processor={"type": "ByteLevel", "trim_offsets": True}),
    "other decoder": lambda data: data.update(decoder={"type": "ByteLevel"}),
    "added token": lambda data: data["added_tokens"].append({"id": 0, "content": "[UNK]", "special": True}),
    "dropout": lambda data: data["model"].update(dropout=0.5),
    "integer for false": lambda data: data["model"].update(fuse_unk=0),
    "unexpected key": lambda data: data.update(extra=1),
    "missing model": lambda data: data.pop("model"),
    "gap in ids": lambda data: data["model"]["vocab"].update({"a": 10**6}),
    "merge of unknown tokens": lambda data: data["model"]["merges"].append(["no such", "tokens"]),
}


@pytest.mark.parametrize("name", sorted(BAD_EDITS))
def test_from_json_rejects_what_textgen_does_not_write(name):
    tokenizer = TextTokenizer.train(CORPUS, level="bpe", vocab_size=80)
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        TextTokenizer.from_json(_edited(tokenizer, BAD_EDITS[name]))


def test_from_json_rejects_a_changed_level_structure(char_tokenizer):
    with pytest.raises(TokenizerError, match="not one textgen writes"):
        TextTokenizer.from_json(_edited(char_tokenizer, lambda data: data.update(
            pre_tokenizer=json.loads(tokenizer_json._split(WORD_PATTERN)))))

    def two_characters_as_token_1(data):
        vocab = data["model"]["vocab"]
        del vocab[next(token for token, token_id in vocab.items() if token_id == 1)]
        vocab["ab"] = 1

    with pytest.raises(TokenizerError, match="longer than one character"):
        TextTokenizer.from_json(_edited(char_tokenizer, two_characters_as_token_1))


@pytest.mark.parametrize("text", ["", "{", "[1, 2", "null", "[]", '"tokenizer"', "[" * 100_000])
def test_from_json_rejects_non_tokenizer_json_in_one_line(text):
    with pytest.raises(TokenizerError) as caught:
        TextTokenizer.from_json(text)
    assert "\n" not in str(caught.value)


def test_from_json_rejects_oversized_vocabularies(monkeypatch, char_tokenizer):
    monkeypatch.setattr(tokenizer_json, "MAX_VOCAB", 5)
    with pytest.raises(TokenizerError, match="at most 5 tokens"):
        TextTokenizer.from_json(char_tokenizer.to_json())


def test_backend_panics_become_tokenizer_errors(monkeypatch, char_tokenizer):
    class FakePanic(BaseException):
        """Stands in for pyo3_runtime.PanicException, which derives from BaseException."""

    def panicking_from_str(text):
        raise FakePanic("called `Option::unwrap()` on a `None` value\nstack backtrace")

    fake = types.SimpleNamespace(Tokenizer=types.SimpleNamespace(from_str=panicking_from_str))
    monkeypatch.setattr(tokenizer_json, "tokenizers", fake)
    with pytest.raises(TokenizerError, match=r"cannot be loaded: FakePanic: called `Option::unwrap\(\)`[^\n]*$"):
        TextTokenizer.from_json(char_tokenizer.to_json())

    def interrupted_from_str(text):
        raise KeyboardInterrupt

    fake.Tokenizer.from_str = interrupted_from_str
    with pytest.raises(KeyboardInterrupt):
        TextTokenizer.from_json(char_tokenizer.to_json())


def test_decode_handles_unk_and_rejects_bad_ids(char_tokenizer):
    assert char_tokenizer.decode([]) == ""
    assert char_tokenizer.decode(np.array([0, 0], dtype=np.int64)) == UNK_REPLACEMENT * 2
    for bad in ([char_tokenizer.vocab_size], [-1]):
        with pytest.raises(TokenizerError, match=r"Received: id=-?\d+$"):
            char_tokenizer.decode(bad)
    with pytest.raises(TokenizerError, match="flat sequence of integers"):
        char_tokenizer.decode([[1, 2]])
    with pytest.raises(TokenizerError, match="flat sequence of integers"):
        char_tokenizer.decode([1.0])


@pytest.mark.parametrize("level, vocab_size, message", [
    ("chars", None, "Received: level='chars'"),
    ("char", 1, "Received: vocab_size=1"),
    ("word", 1_000_001, "Received: vocab_size=1000001"),
    ("bpe", 2.5, "Received: vocab_size=2.5"),
    ("bpe", True, "Received: vocab_size=True"),
])
def test_bad_settings_are_config_errors(level, vocab_size, message):
    with pytest.raises(ConfigError, match=message):
        TextTokenizer.train(CORPUS, level=level, vocab_size=vocab_size)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("chunks", ["", [], ["", ""], iter([])])
def test_empty_text_is_a_tokenizer_error(level, chunks):
    with pytest.raises(TokenizerError, match="empty text"):
        TextTokenizer.train(chunks, level=level)


def test_vocab_size_two_keeps_one_character_per_level():
    for level in LEVELS:
        tokenizer = TextTokenizer.train("ab ab ab\n", level=level, vocab_size=2)
        assert tokenizer.vocab_size == 2
