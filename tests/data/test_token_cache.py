"""The on-disk token cache: exact ids, dtype, atomic writes, reuse and invalidation, bounded memory."""

import io
import json
import os
import re
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import textgen
from textgen.data import token_cache
from textgen.tokenization import tokenizer as tokenizer_module
from textgen.data.corpus import open_corpus
from textgen.errors import ConfigError, CorpusError
from textgen.data.token_cache import load_token_cache
from textgen.data.token_cache import ids_dtype, open_token_cache, tokenizer_sha256, write_shards
from textgen.tokenization.rules import LEVELS
from textgen.tokenization.tokenizer import TextTokenizer

from conftest import MIXED_TEXT, TINY_SETTINGS, TINY_TEXT

# One long line: only the "space after a visible ASCII character" cut can split it.
ONE_LINE = ("Call me Ishmael. Some years ago - never mind how long precisely - having little or no money "
            "in my purse, and nothing particular to interest me on shore, I thought I would sail about. ") * 40


def corpus_file(tmp_path, text, name="corpus.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return open_corpus(str(path))


def cache_of(corpus, tokenizer, root, **kwargs):
    lines = []
    cache = open_token_cache(corpus, tokenizer, root=root, log=lines.append, **kwargs)
    return cache, lines


@pytest.fixture
def small_pieces(monkeypatch):
    """Cut text into tiny pieces and batches, so a small corpus crosses many boundaries."""
    monkeypatch.setattr(tokenizer_module, "_PIECE_CHARS", 7)
    monkeypatch.setattr(token_cache, "ENCODE_BATCH_CHARS", 29)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("text", [MIXED_TEXT, ONE_LINE], ids=["mixed", "one-line"])
def test_cached_ids_equal_encoding_the_whole_text(tmp_path, small_pieces, level, text):
    corpus = corpus_file(tmp_path, text)
    tokenizer = TextTokenizer.train(text, level=level, vocab_size=None if level == "char" else 120)
    cache, _ = cache_of(corpus, tokenizer, tmp_path / "cache", shard_tokens=101)
    whole = tokenizer.backend.encode(text, add_special_tokens=False).ids
    assert np.asarray(cache.tokens()).tolist() == whole
    assert len(cache.manifest["shards"]) == -(-len(whole) // 101)


def test_one_long_line_is_cut_into_bounded_pieces(small_pieces):
    pieces = list(tokenizer_module._safe_pieces([ONE_LINE], cut_anywhere=False))
    assert "".join(pieces) == ONE_LINE
    assert max(map(len, pieces)) < 30  # words and spaces, never the whole line


@settings(deadline=None, max_examples=60)
@given(text=st.text(st.sampled_from(list("ab9_ .,!?\n\t'é日")), min_size=1), piece_chars=st.integers(1, 6),
       cut=st.integers(0, 50))
def test_re_cutting_at_spaces_never_changes_word_or_bpe_tokens(text, piece_chars, cut):
    original = tokenizer_module._PIECE_CHARS
    tokenizer_module._PIECE_CHARS = piece_chars
    try:
        for tokenizer in _ascii_tokenizers():
            chunks = [text[:cut], text[cut:]]
            encoded = np.concatenate(list(tokenizer.iter_encoded(chunks, batch_chars=5)) or [np.zeros(0, np.int32)])
            assert encoded.tolist() == tokenizer.backend.encode(text, add_special_tokens=False).ids
    finally:
        tokenizer_module._PIECE_CHARS = original


_TOKENIZERS = []


def _ascii_tokenizers():
    if not _TOKENIZERS:
        sample = "ab a_b 9a!? b, a. \n\tab é日 'a'  b\n" * 20
        _TOKENIZERS.extend(TextTokenizer.train(sample, level=level, vocab_size=40) for level in ("word", "bpe"))
    return _TOKENIZERS


def test_ids_are_uint16_up_to_65536_tokens_and_uint32_beyond(tmp_path):
    assert ids_dtype(2) == ids_dtype(65_536) == np.dtype("<u2")
    assert ids_dtype(65_537) == ids_dtype(1_000_000) == np.dtype("<u4")
    for vocab, ids in ((65_536, [0, 1, 65_535]), (70_000, [0, 65_536, 69_999])):
        folder = tmp_path / str(vocab)
        manifest = write_shards(folder, [np.array(ids)], vocab_size=vocab)
        itemsize = 2 if vocab <= 65_536 else 4
        assert manifest["dtype"] == f"uint{8 * itemsize}" and manifest["byte_order"] == "little"
        assert (folder / "shard-00000.bin").stat().st_size == 3 * itemsize
        assert np.asarray(load_token_cache(folder).tokens()).tolist() == ids


def test_manifest_records_shards_hashes_and_fingerprints(tmp_path):
    corpus = corpus_file(tmp_path, TINY_TEXT)
    tokenizer = TextTokenizer.train(TINY_TEXT, level="char")
    cache, _ = cache_of(corpus, tokenizer, tmp_path / "cache", shard_tokens=1000)
    manifest = json.loads((cache.path / "manifest.json").read_text())
    assert manifest["format"] == "textgen-token-cache" and manifest["format_version"] == 1
    assert manifest["tokenizer_sha256"] == tokenizer_sha256(tokenizer)
    assert manifest["corpus"]["sha256"] == corpus.sha256() and manifest["corpus"]["encoding"] == "utf-8"
    assert manifest["total_tokens"] == len(TINY_TEXT) == sum(shard["tokens"] for shard in manifest["shards"])
    names = [f"shard-{i:05d}.bin" for i in range(-(-len(TINY_TEXT) // 1000))]
    assert [shard["name"] for shard in manifest["shards"]] == names
    assert sorted(os.listdir(cache.path)) == ["manifest.json"] + names
    assert not any(p.name.startswith(".tmp-") for p in cache.path.parent.iterdir())


def test_a_second_run_reuses_the_cache_and_says_so(tmp_path):
    corpus = corpus_file(tmp_path, TINY_TEXT)
    tokenizer = TextTokenizer.train(TINY_TEXT, level="word")
    first, first_lines = cache_of(corpus, tokenizer, tmp_path / "cache")
    second, second_lines = cache_of(open_corpus(str(tmp_path / "corpus.txt")), tokenizer, tmp_path / "cache")
    assert not first.reused and "wrote" in first_lines[-1] and "MB/s" in first_lines[-1]
    assert second.reused and second.path == first.path
    assert second_lines == [f"token cache: reusing {first.path} ({first.total_tokens:,} tokens)"]


def test_a_changed_corpus_tokenizer_or_encoding_never_reuses_a_cache(tmp_path):
    root = tmp_path / "cache"
    corpus = corpus_file(tmp_path, TINY_TEXT)
    tokenizer = TextTokenizer.train(TINY_TEXT, level="char")
    base, _ = cache_of(corpus, tokenizer, root)
    changed_text, _ = cache_of(corpus_file(tmp_path, TINY_TEXT + "x"), tokenizer, root)
    other_tokenizer, _ = cache_of(corpus, TextTokenizer.train(TINY_TEXT + "€", level="char"), root)
    other_encoding, _ = cache_of(open_corpus(str(tmp_path / "corpus.txt"), encoding="latin-1"), tokenizer, root)
    paths = {base.path, changed_text.path, other_tokenizer.path, other_encoding.path}
    assert len(paths) == 4 and not any(c.reused for c in (changed_text, other_tokenizer, other_encoding))


@pytest.mark.parametrize("damage", ["no manifest", "truncated shard", "flipped byte", "foreign manifest"])
def test_an_incomplete_or_damaged_cache_is_rebuilt(tmp_path, damage):
    corpus = corpus_file(tmp_path, TINY_TEXT)
    tokenizer = TextTokenizer.train(TINY_TEXT, level="char")
    cache, _ = cache_of(corpus, tokenizer, tmp_path / "cache", shard_tokens=1000)
    shard = cache.path / "shard-00001.bin"
    if damage == "no manifest":
        (cache.path / "manifest.json").unlink()
    elif damage == "truncated shard":
        shard.write_bytes(shard.read_bytes()[:-2])
    elif damage == "flipped byte":
        data = bytearray(shard.read_bytes())
        data[10] ^= 1
        shard.write_bytes(bytes(data))
    else:
        manifest = json.loads((cache.path / "manifest.json").read_text())
        manifest["tokenizer_sha256"] = "0" * 64
        (cache.path / "manifest.json").write_text(json.dumps(manifest))
    rebuilt, lines = cache_of(corpus, tokenizer, tmp_path / "cache", shard_tokens=1000)
    assert not rebuilt.reused and "rebuilding" in lines[0]
    assert np.asarray(rebuilt.tokens()).tolist() == tokenizer.encode(TINY_TEXT).tolist()


def test_a_crash_while_writing_leaves_no_cache_that_looks_complete(tmp_path, monkeypatch):
    corpus = corpus_file(tmp_path, TINY_TEXT)
    tokenizer = TextTokenizer.train(TINY_TEXT, level="char")
    root = tmp_path / "cache"

    def crash(path, data):  # the manifest is the last file written
        raise KeyboardInterrupt

    monkeypatch.setattr(token_cache, "write_synced", crash)
    with pytest.raises(KeyboardInterrupt):
        cache_of(corpus, tokenizer, root, shard_tokens=1000)
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.undo()
    # A dead process's temporary folder (kill -9 leaves one) is removed by the next build.
    fingerprint = token_cache.corpus_fingerprint(corpus.sha256(), "utf-8", "strict")
    key_folder = f"{fingerprint[:16]}-{tokenizer_sha256(tokenizer)[:16]}"
    leftover = root / f".tmp-{key_folder}-dead"
    (leftover / "cache").mkdir(parents=True)
    (leftover / "cache" / "shard-00000.bin").write_bytes(b"\0\0")
    cache, _ = cache_of(corpus, tokenizer, root)
    assert cache.path.name == key_folder and not leftover.exists()


def test_an_unwritable_cache_folder_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    corpus = corpus_file(tmp_path, TINY_TEXT)
    with pytest.raises(CorpusError, match="cannot create the token cache folder.*TEXTGEN_CACHE_DIR.*Received: folder="):
        open_token_cache(corpus, TextTokenizer.train(TINY_TEXT), root=blocker / "tokens")


def test_the_cache_root_follows_textgen_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(tmp_path / "c"))
    assert token_cache.default_cache_root() == tmp_path / "c" / "tokens"


def test_token_shards_slice_lazily_and_read_across_shard_borders(tmp_path):
    write_shards(tmp_path / "c", [np.arange(0, 40), np.arange(40, 100)], vocab_size=100, shard_tokens=13)
    tokens = load_token_cache(tmp_path / "c").tokens()
    assert len(tokens) == 100 and tokens[12] == 12 and tokens[-1] == 99
    view = tokens[10:90][5:30]  # nothing read yet
    assert len(view) == 25 and np.asarray(view).tolist() == list(range(15, 40))
    assert np.asarray(tokens[95:200]).tolist() == [95, 96, 97, 98, 99] and len(tokens[50:10]) == 0
    with pytest.raises(IndexError):
        tokens[100]


def test_building_a_cache_holds_one_batch_not_the_corpus(tmp_path):
    # 4 MB of text: kept whole, as text and int32 ids, it would take 20 MB.
    text = ("the quick brown fox jumps over the lazy dog " * 20 + "\n") * 4600
    corpus = corpus_file(tmp_path, text)
    tokenizer = TextTokenizer.train(text[:100_000], level="char")
    tracemalloc.start()
    try:
        cache, _ = cache_of(corpus, tokenizer, tmp_path / "cache")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert cache.total_tokens == len(text) > 4_000_000
    assert peak < 12_000_000, peak  # about one 1 MiB batch of text, its pieces and its ids


def test_the_tokenizer_learns_from_an_evenly_spread_sample(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    for name, letter in (("1.txt", "a"), ("2.txt", "b"), ("3.txt", "c"), ("4.txt", "d")):
        (folder / name).write_text((letter * 99 + "\n") * 100)  # 10,000 bytes each
    corpus = open_corpus(str(folder))
    sample = list(corpus.iter_sample(8_000, excerpt_bytes=2_000))
    assert [excerpt[0] for excerpt in sample] == ["a", "b", "c", "d"]  # one from each quarter
    assert sum(len(excerpt) for excerpt in sample) <= 8_000


def test_a_corpus_larger_than_the_sample_trains_the_tokenizer_on_its_middle_not_its_start(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    for name, letter in (("1.txt", "a"), ("2.txt", "b"), ("3.txt", "c")):
        (folder / name).write_text((letter * 1023 + "\n") * 1024)  # 1 MiB each
    corpus = open_corpus(str(folder))
    sampled = TextTokenizer.train_on_corpus(corpus, level="char", sample_bytes=1 << 20)
    assert sampled.token_strings()[1:] == ["b", "\n"]  # the first MiB would have given "a"
    whole = TextTokenizer.train_on_corpus(corpus, level="char", sample_bytes=3 << 20)
    assert whole.to_json() == TextTokenizer.train(corpus.iter_text(), level="char").to_json()


def test_sampled_excerpts_never_teach_a_word_across_two_of_them():
    excerpts = ["alpha beta gamma\n", "delta epsilon zeta\n"]
    tokenizer = TextTokenizer.train(excerpts, level="word", excerpts=True)
    vocab = set(tokenizer.token_strings())
    assert "beta" in vocab and "epsilon" in vocab  # whole words inside an excerpt
    assert "alpha" not in vocab and "zeta" not in vocab  # maybe cut short at an excerpt's ends
    assert "gamma\ndelta" not in vocab and "gammadelta" not in vocab


def test_a_tokenizer_sample_size_that_is_not_positive_is_refused(tiny_corpus, tmp_path):
    with pytest.raises(ConfigError, match="Received: tokenizer_sample_bytes=0"):
        textgen.train(str(tiny_corpus), out=tmp_path / "m", tokenizer_sample_bytes=0, quiet=True)


def test_training_reuses_the_cache_and_resume_rebuilds_a_deleted_one_identically(tiny_corpus, tiny_model_dir,
                                                                                 tmp_path):
    out, first = tmp_path / "m", io.StringIO()
    model = textgen.train(str(tiny_corpus), out=out, log=first, **{**TINY_SETTINGS, "max_steps": 1})
    # tiny_model_dir's run, on the same corpus with the same tokenizer, wrote the cache.
    reused = re.search(r"token cache: reusing (\S+) \(", first.getvalue())
    assert reused, first.getvalue()
    assert model.manifest["corpus"]["tokenizer_sample_bytes"] == 100_000_000
    assert model.manifest["corpus"]["tokens"] == len(tiny_corpus.read_text())
    path = Path(reused.group(1))
    before = json.loads((path / "manifest.json").read_text())
    shutil.rmtree(path)  # the cache is only a cache
    resumed = io.StringIO()
    model = textgen.train(out=out, resume=True, max_steps=2, log=resumed)
    assert f"to {path} in" in resumed.getvalue() and model.manifest["metrics"]["steps"] == 2
    after = json.loads((path / "manifest.json").read_text())
    assert after["shards"] == before["shards"]


@pytest.mark.parametrize("text, size", [("500000", 500_000), ("100k", 100_000), ("100M", 100_000_000),
                                        ("2G", 2_000_000_000), ("1.5k", 1_500), ("64MiB", 64 << 20),
                                        ("8 MB", 8_000_000)])
def test_sample_sizes_take_suffixes(text, size):
    from textgen.cli.options import ByteSize

    assert ByteSize().convert(text, None, None) == size


def test_a_bad_sample_size_is_a_usage_error(tiny_corpus, tmp_path):
    from click.testing import CliRunner

    from textgen.cli.main import cli

    result = CliRunner().invoke(cli, ["train", str(tiny_corpus), "--out", str(tmp_path / "m"),
                                      "--tokenizer-sample-bytes", "lots"])
    assert result.exit_code == 2 and "tokenizer_sample_bytes must be a positive size" in result.output
