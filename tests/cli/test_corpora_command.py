"""``textgen corpora``: the named corpora listed, and one fetched to a file, from a loopback server."""

import hashlib

import pytest
from click.testing import CliRunner

from textgen.cli.main import cli
from textgen.corpora import catalog
from textgen.data.corpus import open_corpus

SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


@pytest.fixture
def served(monkeypatch, tmp_path, loopback_server, tinyshakespeare_bytes):
    """Tiny Shakespeare served on loopback, into a cache of this test's own (so it is really downloaded)."""
    for variable in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TEXTGEN_TINYSHAKESPEARE_URL", loopback_server.url("/tinyshakespeare.txt"))
    loopback_server.body, loopback_server.status = tinyshakespeare_bytes, 200
    loopback_server.paths.clear()
    return loopback_server


def test_the_list_names_each_corpus_with_its_size_and_description():
    result = CliRunner().invoke(cli, ["corpora"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["name", "size", "description"]
    assert [line.split()[0] for line in lines[1:]] == catalog.names()
    shakespeare = next(line for line in lines if line.startswith("tinyshakespeare "))
    assert "1,115,394 bytes  Tiny Shakespeare" in shakespeare
    python = next(line for line in lines if line.startswith("python "))
    assert f"{open_corpus('python').total_bytes:,} bytes" in python


def test_fetch_downloads_the_corpus_to_a_file_and_never_replaces_one_unasked(served, tmp_path):
    dest = tmp_path / "shakespeare.txt"
    result = CliRunner().invoke(cli, ["corpora", "--fetch", "tinyshakespeare", "-o", str(dest)])
    assert result.exit_code == 0, result.output
    assert served.paths == ["/tinyshakespeare.txt"]
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == SHAKESPEARE_SHA256
    assert result.stdout == "" and result.stderr.endswith(f"wrote {dest}: tinyshakespeare, 1,115,394 bytes\n")
    # The file is the corpus textgen trains on by that name.
    assert open_corpus(str(dest)).sha256() == open_corpus("tinyshakespeare").sha256()

    dest.write_text("my own notes")
    refused = CliRunner().invoke(cli, ["corpora", "--fetch", "tinyshakespeare", "-o", str(dest)])
    assert refused.exit_code == 1
    assert refused.stderr == (f"Error: {dest} already exists; pass --overwrite or choose another -o. "
                              f"Received: path='{dest}'\n")
    assert dest.read_text() == "my own notes"
    replaced = CliRunner().invoke(cli, ["corpora", "--fetch", "tinyshakespeare", "-o", str(dest), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == SHAKESPEARE_SHA256
    assert served.paths == ["/tinyshakespeare.txt"]  # the second fetch read the cache


def test_a_failed_download_leaves_no_file(served, tmp_path):
    served.status = 404
    dest = tmp_path / "shakespeare.txt"
    result = CliRunner().invoke(cli, ["corpora", "--fetch", "tinyshakespeare", "-o", str(dest)])
    assert result.exit_code == 1 and result.stderr.startswith("Error: cannot download corpus file: HTTP 404")
    assert not dest.exists()


@pytest.mark.parametrize("args, message", [
    (["--fetch", "python"], "Error: --fetch needs -o FILE, the file to write. Received: fetch='python'"),
    (["-o", "x.txt"], "Error: -o names the file --fetch writes; give --fetch NAME too. Received: out='x.txt'"),
    (["--fetch", "klingon", "-o", "x.txt"], "Error: Invalid value for '--fetch': 'klingon' is not one of"),
])
def test_fetch_needs_a_known_name_and_a_file(args, message, tmp_path):
    result = CliRunner().invoke(cli, ["corpora", *args])
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "x.txt").exists()
