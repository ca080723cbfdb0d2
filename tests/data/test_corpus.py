"""Tests for textgen.data.corpus: resolving inputs to files and streaming them as text."""

import hashlib
import os
import sysconfig
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textgen.corpora.catalog import STDLIB_EXCLUDED_PARTS
from textgen.data.corpus import Corpus, open_corpus
from textgen.errors import ConfigError, CorpusError


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# --- resolving inputs ---------------------------------------------------------


def test_files_are_read_in_the_order_given_and_concatenated_as_is(tmp_path):
    first = write(tmp_path / "b.txt", "one\r\n")
    second = write(tmp_path / "a.txt", "two")
    corpus = open_corpus([str(first), str(second)])
    assert corpus.files == (first.resolve(), second.resolve())
    assert corpus.read_text() == "one\r\ntwo"
    assert corpus.description == "2 files"


def test_a_file_without_a_text_extension_is_read(tmp_path):
    path = write(tmp_path / "NOTES", "plain words")
    corpus = open_corpus([str(path)])
    assert corpus.read_text() == "plain words"
    assert corpus.description == str(path)


def test_a_lone_string_is_one_input(tmp_path):
    path = write(tmp_path / "a.txt", "hello")
    assert open_corpus(str(path)).files == (path.resolve(),)


def test_folder_is_read_recursively_in_relative_path_order(tmp_path):
    folder = tmp_path / "data"
    # Written in reverse so that creation order cannot pass for sorting.
    write(folder / "b" / "c" / "d.txt", "4")
    write(folder / "a.txt", "3")
    write(folder / "a-b.txt", "2")
    write(folder / "a" / "z.txt", "1")
    corpus = open_corpus([str(folder)])
    assert [p.relative_to(folder.resolve()).as_posix() for p in corpus.files] == [
        "a/z.txt",
        "a-b.txt",
        "a.txt",
        "b/c/d.txt",
    ]
    assert corpus.read_text() == "1234"
    assert corpus.description == f"{folder} (4 files)"


def test_folder_skips_hidden_pycache_binary_and_empty_files(tmp_path):
    folder = tmp_path / "src"
    kept = write(folder / "kept.py", "x = 1\n")
    write(folder / ".hidden.txt", "secret")
    write(folder / ".git" / "config", "[core]")
    write(folder / "__pycache__" / "kept.cpython-311.pyc", "not really bytecode")
    write(folder / "image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    write(folder / "empty.txt", b"")
    assert open_corpus([str(folder)]).files == (kept.resolve(),)


def test_folder_with_no_text_files_is_an_error_naming_it(tmp_path):
    folder = tmp_path / "blobs"
    write(folder / "blob.bin", b"\x00\x01\x02")
    write(folder / "empty.txt", b"")
    with pytest.raises(CorpusError, match="no text files") as caught:
        open_corpus([str(folder)])
    assert str(caught.value).endswith(f"Received: folder='{folder}'")


def test_glob_matches_files_sorted_and_expands_folders(tmp_path):
    write(tmp_path / "b.txt", "B")
    write(tmp_path / "a.txt", "A")
    write(tmp_path / "c.md", "C")
    write(tmp_path / "d.txt" / "inner.txt", "D")  # a folder the pattern matches
    corpus = open_corpus([str(tmp_path / "*.txt")])
    assert corpus.read_text() == "ABD"


def test_glob_without_matches_is_an_error(tmp_path):
    pattern = str(tmp_path / "*.nothing")
    with pytest.raises(CorpusError, match="matched no files") as caught:
        open_corpus([pattern])
    assert str(caught.value).endswith(f"Received: pattern={pattern!r}")


def test_glob_matching_a_binary_file_is_an_error(tmp_path):
    write(tmp_path / "a.txt", "A")
    write(tmp_path / "b.txt", b"B\x00")
    with pytest.raises(CorpusError, match="binary"):
        open_corpus([str(tmp_path / "*.txt")])


def test_a_file_reached_twice_is_read_once(tmp_path):
    path = write(tmp_path / "data" / "a.txt", "A")
    link = tmp_path / "link.txt"
    link.symlink_to(path)
    corpus = open_corpus([str(path), str(tmp_path / "data"), str(link)])
    assert corpus.files == (path.resolve(),)
    assert corpus.read_text() == "A"


def test_named_python_corpus_is_the_default_and_holds_stdlib_sources():
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    corpus = open_corpus(["python"])
    assert len(corpus.files) > 100
    assert all(path.suffix == ".py" for path in corpus.files)
    assert not any(STDLIB_EXCLUDED_PARTS & set(p.relative_to(stdlib).parts) for p in corpus.files)
    assert corpus.description == f"python ({len(corpus.files)} files)"
    assert open_corpus().files == corpus.files
    assert open_corpus([]).files == corpus.files


def test_an_existing_path_wins_over_a_corpus_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = write(tmp_path / "python" / "mine.txt", "my own python")
    corpus = open_corpus(["python"])
    assert corpus.files == (local.resolve(),)


def test_an_unknown_input_lists_the_named_corpora(tmp_path):
    missing = str(tmp_path / "missing.txt")
    with pytest.raises(CorpusError) as caught:
        open_corpus([missing])
    message = str(caught.value)
    assert "no such file, folder, glob match or named corpus" in message
    assert "python, tinyshakespeare" in message
    assert message.endswith(f"Received: input={missing!r}")
    assert "\n" not in message


def test_an_empty_input_string_is_an_error_not_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.txt", "A")
    with pytest.raises(CorpusError, match="Received: input=''"):
        open_corpus([""])


def test_a_binary_file_named_explicitly_is_an_error(tmp_path):
    path = write(tmp_path / "model.bin", b"abc\x00def")
    with pytest.raises(CorpusError, match=r"binary file \(NUL byte at byte offset 3\)") as caught:
        open_corpus([str(path)])
    assert str(caught.value).endswith(f"Received: file='{path}'")


def test_a_nul_byte_past_the_sniffed_head_is_caught_while_reading(tmp_path):
    offset = 20_000
    path = write(tmp_path / "late.txt", b"a" * offset + b"\x00tail")
    corpus = open_corpus([str(path)])
    with pytest.raises(CorpusError, match=f"NUL byte at byte offset {offset}"):
        corpus.read_text()
    with pytest.raises(CorpusError, match=f"NUL byte at byte offset {offset}"):
        list(corpus.iter_text(chunk_bytes=4096))


def test_an_all_empty_corpus_is_an_error(tmp_path):
    path = write(tmp_path / "empty.txt", b"")
    with pytest.raises(CorpusError, match="corpus is empty"):
        open_corpus([str(path)])


def test_an_empty_file_beside_text_is_harmless(tmp_path):
    empty = write(tmp_path / "empty.txt", b"")
    text = write(tmp_path / "text.txt", "words")
    assert open_corpus([str(empty), str(text)]).read_text() == "words"


@pytest.mark.parametrize(
    ("options", "expected_ending"),
    [
        ({"errors": "bogus"}, "Received: errors='bogus'"),
        ({"encoding": "no-such-codec"}, "Received: encoding='no-such-codec'"),
        ({"encoding": "hex"}, "Received: encoding='hex'"),  # a codec, but not a text encoding
    ],
)
def test_bad_text_options_are_config_errors(tmp_path, options, expected_ending):
    path = write(tmp_path / "a.txt", "A")
    with pytest.raises(ConfigError) as caught:
        open_corpus([str(path)], **options)
    assert str(caught.value).endswith(expected_ending)
    with pytest.raises(ConfigError):
        Corpus([path], **options)


@pytest.mark.parametrize("chunk_bytes", [0, -1, 1.5, True])
def test_chunk_bytes_must_be_a_positive_integer(tmp_path, chunk_bytes):
    corpus = open_corpus([str(write(tmp_path / "a.txt", "A"))])
    with pytest.raises(ConfigError, match="chunk_bytes"):
        list(corpus.iter_text(chunk_bytes=chunk_bytes))


# --- decoding -----------------------------------------------------------------


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 7, 13, 14, 1 << 20])
def test_a_bad_byte_is_reported_at_its_absolute_offset(tmp_path, chunk_bytes):
    path = write(tmp_path / "bad.txt", b"hello, world!\xffmore text")
    corpus = open_corpus([str(path)])
    with pytest.raises(CorpusError) as caught:
        list(corpus.iter_text(chunk_bytes=chunk_bytes))
    message = str(caught.value)
    assert str(path.resolve()) in message
    assert "not valid utf-8: bad byte 0xff at byte offset 13;" in message
    assert "--errors replace|ignore" in message
    assert message.endswith("Received: encoding='utf-8'")


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 6, 7, 8, 1 << 20])
def test_a_broken_sequence_across_chunks_is_reported_where_it_starts(tmp_path, chunk_bytes):
    # \xe2\x82 starts a three-byte character that "x" then breaks.
    path = write(tmp_path / "bad.txt", b"abcdef\xe2\x82xyz")
    with pytest.raises(CorpusError, match="bad byte 0xe2 at byte offset 6;"):
        list(open_corpus([str(path)]).iter_text(chunk_bytes=chunk_bytes))


@pytest.mark.parametrize("chunk_bytes", [1, 2, 4, 1 << 20])
def test_a_character_cut_off_at_the_end_of_a_file_is_reported(tmp_path, chunk_bytes):
    path = write(tmp_path / "cut.txt", b"abc\xe2\x82")
    with pytest.raises(CorpusError, match="bad byte 0xe2 at byte offset 3;"):
        list(open_corpus([str(path)]).iter_text(chunk_bytes=chunk_bytes))


def test_offsets_count_from_the_start_of_the_bad_file(tmp_path):
    good = write(tmp_path / "1.txt", "x" * 100)
    bad = write(tmp_path / "2.txt", b"ab\xff")
    with pytest.raises(CorpusError, match="byte offset 2;") as caught:
        open_corpus([str(good), str(bad)]).read_text()
    assert str(bad.resolve()) in str(caught.value)


def test_errors_replace_and_ignore(tmp_path):
    path = write(tmp_path / "bad.txt", b"ab\xffcd")
    assert open_corpus([str(path)], errors="replace").read_text() == "ab\ufffdcd"
    assert open_corpus([str(path)], errors="ignore").read_text() == "abcd"


def test_another_encoding_can_be_chosen(tmp_path):
    path = write(tmp_path / "latin.txt", b"caf\xe9 cr\xe8me")
    corpus = open_corpus([str(path)], encoding="latin-1")
    assert corpus.read_text() == "café crème"
    assert corpus.encoding == "latin-1"


def test_utf16_text_is_not_mistaken_for_binary(tmp_path):
    path = write(tmp_path / "wide.txt", "wide text".encode("utf-16"))
    assert open_corpus([str(tmp_path)], encoding="utf-16").read_text() == "wide text"
    assert open_corpus([str(path)], encoding="utf-16").read_text() == "wide text"


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 4, 5])
def test_characters_split_across_chunks_decode_whole(tmp_path, chunk_bytes):
    text = "aé€😀b\n" * 3  # one-, two-, three- and four-byte characters
    path = write(tmp_path / "mixed.txt", text)
    corpus = open_corpus([str(path)])
    assert "".join(corpus.iter_text(chunk_bytes=chunk_bytes)) == text == corpus.read_text()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(
        st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1),
        min_size=1,
        max_size=3,
    ),
    chunk_bytes=st.integers(min_value=1, max_value=64),
)
def test_utf8_text_reads_back_identically(tmp_path, texts, chunk_bytes):
    paths = [write(tmp_path / f"{i}.txt", text) for i, text in enumerate(texts)]
    corpus = Corpus(paths)
    assert "".join(corpus.iter_text(chunk_bytes=chunk_bytes)) == "".join(texts)


# --- size and fingerprint -----------------------------------------------------


def test_sha256_and_total_bytes_cover_all_files_in_order(tmp_path):
    first = write(tmp_path / "z.txt", "first ✓\n")
    second = write(tmp_path / "a.txt", b"second")
    corpus = open_corpus([str(first), str(second)])
    raw = first.read_bytes() + second.read_bytes()
    assert corpus.sha256() == hashlib.sha256(raw).hexdigest()
    assert corpus.total_bytes == len(raw)
    reversed_corpus = open_corpus([str(second), str(first)])
    assert reversed_corpus.sha256() != corpus.sha256()


def test_a_file_removed_after_opening_is_a_corpus_error(tmp_path):
    path = write(tmp_path / "gone.txt", "soon gone")
    corpus = open_corpus([str(path)])
    os.remove(path)
    with pytest.raises(CorpusError, match="cannot read corpus file"):
        corpus.read_text()


@pytest.mark.parametrize("as_glob", [False, True])
def test_a_named_pipe_is_named_as_such_not_missing(tmp_path, as_glob):
    fifo = tmp_path / "stream.txt"
    os.mkfifo(fifo)
    with pytest.raises(CorpusError, match=r"is a named pipe \(FIFO\), not a regular file or folder.*"
                                          r"Received: input='.*stream\.txt'$"):
        open_corpus([str(tmp_path / "*.txt") if as_glob else str(fifo)])


def test_the_runs_own_output_folder_is_never_read_as_a_corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "python").mkdir()  # the --out of `textgen train python --out python`, made before the corpus is read
    (tmp_path / "python" / "notes.txt").write_text("not the corpus\n")
    assert open_corpus("python").description == "python"  # without output=, the folder wins as any path does
    named = open_corpus("python", output="python")
    assert named.description.startswith("python (") and named.total_bytes > 1_000_000
    (tmp_path / "mine").mkdir()
    with pytest.raises(CorpusError, match="the folder the run writes its model to, not a corpus"):
        open_corpus("mine", output=tmp_path / "mine")
