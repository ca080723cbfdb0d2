"""Tests for textgen.tokenization.graph_tokenizer: the same ids as TextTokenizer, in a graph and in a SavedModel."""

import functools
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Regex, pre_tokenizers

from textgen.tokenization.graph_tokenizer import SPACE_CODE_POINTS, GraphTokenizer
from textgen.tokenization.rules import LEVELS, SPACE_CHAR
from textgen.tokenization.tokenizer import TextTokenizer

from conftest import MIXED_TEXT as CORPUS
from conftest import SHAKESPEARE_COPY

BATCH = ["", "speak", "Speak,  speak.", " \n", "日本語 😀!!", "", "x_1 = 42 ; y2=x_1*3\v\f\n", "unseen wørds ~"]

# Random text that is mostly made of the corpus's characters, with some unknown
# ones; never lone surrogates, which no UTF-8 string tensor can hold.
MIXED_TEXT = st.text(st.one_of(st.sampled_from(sorted(set(CORPUS))), st.characters(exclude_categories=["Cs"])),
                     max_size=40)


@pytest.fixture(scope="module", params=LEVELS)
def pair(request):
    """A TextTokenizer trained on CORPUS and its GraphTokenizer; vocabularies small enough to leave bpe pieces split."""
    tokenizer = TextTokenizer.train(CORPUS, level=request.param, vocab_size=None if request.param == "char" else 120)
    return tokenizer, GraphTokenizer(tokenizer)


def encoded_rows(graph, texts) -> list:
    """The graph's ids of each text, as lists."""
    return graph.encode(tf.constant(texts, tf.string)).to_list()


def assert_same_as_python(tokenizer, graph, texts):
    """Encoding ``texts`` as one batch gives each text's TextTokenizer ids, and they decode alike."""
    rows = graph.encode(tf.constant(texts, tf.string))
    assert rows.dtype == tf.int32 and rows.shape[0] == len(texts)
    assert rows.to_list() == [tokenizer.encode(text).tolist() for text in texts]
    decoded = [text.decode("utf-8") for text in graph.decode(rows).numpy()]
    assert decoded == [tokenizer.decode(tokenizer.encode(text)) for text in texts]


def test_encode_and_decode_match_on_the_training_text(pair):
    tokenizer, graph = pair
    assert_same_as_python(tokenizer, graph, [CORPUS])
    assert graph.decode(graph.encode([CORPUS]))[0].numpy().decode("utf-8") == CORPUS


def test_encode_matches_on_a_batch_of_rows_of_different_lengths(pair):
    tokenizer, graph = pair
    assert_same_as_python(tokenizer, graph, BATCH)
    assert graph.encode(tf.constant([], tf.string)).shape.as_list() == [0, None]


def test_decode_takes_dense_and_ragged_ids(pair):
    tokenizer, graph = pair
    dense = np.arange(12, dtype=np.int32).reshape(3, 4) % tokenizer.vocab_size
    decoded = graph.decode(tf.constant(dense)).numpy()
    assert [text.decode("utf-8") for text in decoded] == [tokenizer.decode(row) for row in dense]
    rows = [[3, 0, 1], [], [2]]
    decoded = graph.decode(tf.ragged.constant(rows, tf.int32)).numpy()
    assert [text.decode("utf-8") for text in decoded] == [tokenizer.decode(row) for row in rows]


def test_only_a_text_tokenizer_is_accepted():
    with pytest.raises(TypeError, match="Received: type=str"):
        GraphTokenizer("char")


@pytest.mark.parametrize("bad_id", [-1, 10_000])
def test_decode_rejects_ids_outside_the_vocabulary(pair, bad_id):
    _, graph = pair
    with pytest.raises(tf.errors.InvalidArgumentError, match="token id"):
        graph.decode(tf.constant([[1, bad_id]], tf.int32))


@settings(deadline=None, max_examples=60)
@given(texts=st.lists(MIXED_TEXT, min_size=1, max_size=4))
def test_random_text_of_mostly_known_characters_matches(pair, texts):
    assert_same_as_python(*pair, texts)


@settings(deadline=None, max_examples=40)
@given(text=st.text())
def test_arbitrary_unicode_text_matches(pair, text):
    assert_same_as_python(*pair, [text])


def test_newer_unicode_word_characters_follow_the_hugging_face_tables():
    # RE2 in TensorFlow 2.21 does not count these Unicode 16 letters and digits
    # as \p{L} or \p{N}; the Hugging Face pre-tokenizer does.
    text = "a\u0897b \U00013460\U00013461 x\U0001e5f1y \U000105c0!\n" * 2
    for level in LEVELS:
        tokenizer = TextTokenizer.train(text, level=level)
        assert_same_as_python(tokenizer, GraphTokenizer(tokenizer), [text, "a\u0897b", "\u0897 \u0897"])


def test_space_code_points_are_what_the_pre_tokenizer_calls_space():
    spaces = pre_tokenizers.Split(Regex(f"{SPACE_CHAR}+"), behavior="removed", invert=True)
    everything = "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x110000)))
    found = {code for piece, _ in spaces.pre_tokenize_str(everything) for code in map(ord, piece)}
    assert found == set(SPACE_CODE_POINTS)


def crafted_bpe(tokens: list, merges: list) -> TextTokenizer:
    """A bpe tokenizer with a given vocabulary and merges, in any order the loader accepts."""
    data = json.loads(TextTokenizer.train("ab", level="bpe").to_json())
    data["model"]["vocab"] = {token: token_id for token_id, token in enumerate(["[UNK]", *tokens])}
    data["model"]["merges"] = merges
    return TextTokenizer.from_json(json.dumps(data))


# Text of the crafted tokenizers' characters, and "x", which they do not know.
CRAFTED_TEXT = st.text(st.sampled_from("ab éx"), max_size=16)


@st.composite
def merge_lists(draw):
    """Random merges of a few characters: repeats, any rank order, and merges with [UNK] too."""
    tokens, merges = ["a", "b", " ", "é"], []
    for _ in range(draw(st.integers(0, 12))):
        left, right = draw(st.sampled_from(["[UNK]", *tokens])), draw(st.sampled_from(["[UNK]", *tokens]))
        new_tokens = [] if left + right in tokens else [left + right]
        if len(merges) + 1 < len(tokens) + len(new_tokens) + 1:  # the loader wants fewer merges than tokens
            tokens += new_tokens
            merges.append([left, right])
    return tokens, merges


# Each example traces a new graph (about half a second), so examples are few and batches large.
@settings(deadline=None, max_examples=12)
@given(vocabulary=merge_lists(), texts=st.lists(CRAFTED_TEXT, min_size=1, max_size=8))
def test_bpe_merges_in_the_backend_order_whatever_the_merge_list(vocabulary, texts):
    tokenizer = crafted_bpe(*vocabulary)
    assert_same_as_python(tokenizer, GraphTokenizer(tokenizer), texts)


def test_an_early_merge_of_a_merged_token_preempts_the_rest_of_its_rank():
    # "abab": the backend merges the first "a b", then "ab a" (rank 0) before the second "a b".
    tokenizer = crafted_bpe(["a", "b", "ab", "aba"], [["ab", "a"], ["a", "b"]])
    assert tokenizer.encode("abab").tolist() == [4, 2]
    assert encoded_rows(GraphTokenizer(tokenizer), ["abab", "ababab"]) == [[4, 2], [4, 2, 3]]


def test_runs_of_one_repeated_pair_merge_left_to_right():
    tokenizer = crafted_bpe(["a", "aa", "aaa"], [["a", "a"], ["aa", "a"]])
    graph = GraphTokenizer(tokenizer)
    texts = ["a" * length for length in range(8)]
    assert encoded_rows(graph, texts) == [tokenizer.encode(text).tolist() for text in texts]


def test_encode_and_decode_work_inside_a_tf_function(pair):
    tokenizer, graph = pair

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def round_trip(texts):
        ids = graph.encode(texts)
        return ids, graph.decode(ids), graph.decode(ids.to_tensor())

    ids, ragged_text, dense_text = round_trip(tf.constant(BATCH))
    assert ids.to_list() == [tokenizer.encode(text).tolist() for text in BATCH]
    assert ragged_text.numpy().tolist() == [tokenizer.decode(tokenizer.encode(text)).encode() for text in BATCH]
    # Padding is id 0, [UNK], so the dense rows decode with trailing U+FFFD.
    assert dense_text.numpy().tolist() == [tokenizer.decode(row).encode() for row in ids.to_tensor().numpy()]


def test_saved_model_loads_and_encodes_with_tensorflow_alone(tmp_path):
    texts = ["ab ab!", "", "a\tb  é?", "zzz"]
    module = tf.Module()
    tokenizers = {level: TextTokenizer.train("ab ab! a\tb  b?\n", level=level) for level in LEVELS}
    for level, tokenizer in tokenizers.items():
        setattr(module, level, GraphTokenizer(tokenizer))
    tf.saved_model.save(module, str(tmp_path / "saved"))
    script = (
        "import json, sys\n"
        "sys.modules['textgen'] = sys.modules['tokenizers'] = None  # importing either now fails\n"
        "import tensorflow as tf\n"
        "loaded = tf.saved_model.load(sys.argv[1])\n"
        "texts = tf.constant(json.loads(sys.argv[2]))\n"
        "result = {}\n"
        "for level in ('char', 'word', 'bpe'):\n"
        "    graph = getattr(loaded, level)\n"
        "    ids = graph.encode(texts)\n"
        "    result[level] = [ids.to_list(), [text.decode() for text in graph.decode(ids).numpy()],\n"
        "                     [text.decode() for text in graph.decode(tf.constant([[1, 2, 1]])).numpy()]]\n"
        "print(json.dumps(result))\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run([sys.executable, "-c", script, str(tmp_path / "saved"), json.dumps(texts)],
                               capture_output=True, text=True, env=env, timeout=180)
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout.splitlines()[-1])
    for level, tokenizer in tokenizers.items():
        expected_ids = [tokenizer.encode(text).tolist() for text in texts]
        assert result[level] == [expected_ids, [tokenizer.decode(ids) for ids in expected_ids],
                                 [tokenizer.decode([1, 2, 1])]]


PYTHON_CHARS = 1 << 40  # the whole python corpus (about 11 MB)


@functools.lru_cache(maxsize=None)
def corpus_text(name: str) -> str:
    """All of tinyshakespeare, or the first PYTHON_CHARS characters of the python corpus."""
    if name == "tinyshakespeare":
        if not SHAKESPEARE_COPY.is_file():
            pytest.skip(f"{SHAKESPEARE_COPY} is absent")
        return SHAKESPEARE_COPY.read_text(encoding="utf-8")
    from textgen.data.corpus import open_corpus

    text = ""
    for chunk in open_corpus(["python"]).iter_text():
        text += chunk
        if len(text) >= PYTHON_CHARS:
            break
    return text[:PYTHON_CHARS]


@pytest.mark.skipif(os.environ.get("TEXTGEN_SLOW") != "1", reason="corpus-scale parity; set TEXTGEN_SLOW=1")
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("corpus", ["tinyshakespeare", "python"])
def test_corpus_scale_parity(corpus, level):
    text = corpus_text(corpus)
    tokenizer = TextTokenizer.train(text, level=level, vocab_size=None if level == "char" else 2000)
    graph = GraphTokenizer(tokenizer)
    graph.encode(["warm up the function"])
    start = time.perf_counter()
    ids = graph.encode([text])
    seconds = time.perf_counter() - start
    expected = tokenizer.encode(text)
    np.testing.assert_array_equal(ids.flat_values.numpy(), expected)
    assert graph.decode(ids)[0].numpy().decode("utf-8") == tokenizer.decode(expected)
    lines = text.splitlines(keepends=True)
    start = time.perf_counter()
    line_ids = graph.encode(lines)
    line_seconds = time.perf_counter() - start
    assert line_ids.to_list() == [tokenizer.encode(line).tolist() for line in lines]
    print(f"\n{corpus} {level}: {len(text)} chars, {len(expected)} tokens; in-graph encode "
          f"{len(text) / seconds:,.0f} chars/s as one text, {len(text) / line_seconds:,.0f} chars/s "
          f"as {len(lines)} lines")
