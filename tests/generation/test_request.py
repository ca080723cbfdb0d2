"""A generation request is checked, and bounded, before any work; prompt files are read with bounds."""

import re

import pytest

from textgen.config import MAX_REQUEST_TOKENS, SEED_MAX
from textgen.errors import ConfigError, SampleFileError
from textgen.generation.request import MAX_PROMPT_FILE_BYTES, SampleRequest, read_prompt_file


def check(prompt="", stop=None, vocab_size=50, **settings):
    return SampleRequest.check(prompt, stop, vocab_size=vocab_size, **settings)


def test_a_request_lists_its_rows_prompt_by_prompt_and_always_has_a_seed():
    request = check(["a", "b"], "\n", num_samples=2, seed=4)
    assert request.rows == ["a", "a", "b", "b"]
    assert request.stop == ("\n",) and request.settings.seed == 4
    drawn = check("a")
    assert 0 <= drawn.settings.seed <= SEED_MAX


@pytest.mark.parametrize("prompt, stop, message", [
    (5, None, "Received: prompt=5"),
    ([], None, "Received: prompt=[]"),
    (["a", 5], None, "Received: prompt=['a', 5]"),
    ({"a"}, None, "Received: prompt={'a'}"),
    (b"bytes", None, "Received: prompt=b'bytes'"),
    (None, None, "Received: prompt=None"),
    ("a", 5, "Received: stop=5"),
    ("a", [5], "Received: stop=[5]"),
    ("a", b"x", "Received: stop=b'x'"),
])
def test_prompts_and_stops_of_the_wrong_type_are_a_config_error(prompt, stop, message):
    with pytest.raises(ConfigError, match=re.escape(message) + "$"):
        check(prompt, stop)


def test_the_seed_range_is_the_one_every_seed_has():
    assert check("a", seed=SEED_MAX).settings.seed == SEED_MAX
    for seed in (SEED_MAX + 1, -1, 2**63 - 1):
        with pytest.raises(ConfigError, match=f"Received: seed={seed}$"):
            check("a", seed=seed)


def test_top_k_is_checked_against_the_vocabulary():
    assert check("a", top_k=50).settings.top_k == 50
    with pytest.raises(ConfigError, match="vocabulary size .50.. Received: top_k=51"):
        check("a", top_k=51)


def test_what_a_request_may_allocate_is_bounded_before_anything_is_allocated():
    rows = 4096
    largest = MAX_REQUEST_TOKENS // rows - 1  # the longest length that fits with 1-character prompts
    assert check("a", num_samples=rows, length=largest).settings.length == largest
    with pytest.raises(ConfigError, match=f"Received: tokens={rows * (largest + 2)}"):
        check("a", num_samples=rows, length=largest + 1)
    # A long prompt counts as well as a long length: (B, W) is allocated too.
    with pytest.raises(ConfigError, match="at most 10,000,000 tokens"):
        check(["x" * 5_000_000, "y"], num_samples=1, length=1)
    with pytest.raises(ConfigError, match="Received: rows=4097"):
        check(["a"] * 4097)


def test_a_prompt_file_has_one_prompt_per_line(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes("ROMEO:\r\n\nJULIET: é\n".encode("utf-8"))
    assert read_prompt_file(path) == ["ROMEO:", "", "JULIET: é"]
    path.write_text("no final line end")
    assert read_prompt_file(path) == ["no final line end"]


def test_a_prompt_file_that_cannot_be_used_is_refused_with_its_name(tmp_path):
    with pytest.raises(SampleFileError, match="Received: prompt_file='.*missing.txt'"):
        read_prompt_file(tmp_path / "missing.txt")
    with pytest.raises(SampleFileError, match="Received: prompt_file="):
        read_prompt_file(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff")
    with pytest.raises(SampleFileError, match=r"not valid UTF-8 \(byte offset 5\)"):
        read_prompt_file(bad)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ConfigError, match="empty"):
        read_prompt_file(empty)
    many = tmp_path / "many.txt"
    many.write_text("a\n" * 4097)
    with pytest.raises(ConfigError, match="Received: prompts=4097"):
        read_prompt_file(many)


def test_a_prompt_file_larger_than_any_request_is_refused_without_reading_it_all(tmp_path, monkeypatch):
    import textgen.generation.request as request_module

    monkeypatch.setattr(request_module, "MAX_PROMPT_FILE_BYTES", 10)
    path = tmp_path / "big.txt"
    path.write_text("0123456789A")
    with pytest.raises(ConfigError, match="at most 10 bytes"):
        read_prompt_file(path)
    assert MAX_PROMPT_FILE_BYTES == 4 * MAX_REQUEST_TOKENS
