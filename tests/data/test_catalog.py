"""Tests for textgen.corpora: the named corpora, the cache and verified downloads.

Downloads go to a loopback HTTP server serving a local copy of Tiny
Shakespeare; nothing here touches the internet.
"""

import hashlib
import socket
import sysconfig
from pathlib import Path

import pytest

from textgen.corpora import catalog
from textgen.corpora.catalog import STDLIB_EXCLUDED_PARTS
from textgen.corpora.fetch import cache_dir, fetch
from textgen.data.corpus import open_corpus
from textgen.errors import CorpusError

from conftest import LoopbackServer

SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


@pytest.fixture
def shakespeare(tinyshakespeare_bytes) -> bytes:
    return tinyshakespeare_bytes


@pytest.fixture
def server(monkeypatch, tmp_path):
    # A proxy from the environment must not intercept loopback requests.
    for variable in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(tmp_path / "cache"))
    loopback = LoopbackServer()
    monkeypatch.setenv("TEXTGEN_TINYSHAKESPEARE_URL", loopback.url())
    yield loopback
    loopback.close()


# --- the catalog --------------------------------------------------------------


def test_names_and_descriptions():
    assert catalog.names() == ["python", "tinyshakespeare"]
    for name in catalog.names():
        description = catalog.describe(name)
        assert description and "\n" not in description


@pytest.mark.parametrize("lookup", [catalog.describe, catalog.corpus_files])
def test_an_unknown_name_is_a_corpus_error(lookup):
    with pytest.raises(CorpusError, match="python, tinyshakespeare") as caught:
        lookup("klingon")
    assert str(caught.value).endswith("Received: name='klingon'")


def test_python_corpus_is_the_sorted_stdlib_sources_without_tests():
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = catalog.corpus_files("python")
    relative = [path.relative_to(stdlib) for path in files]
    assert len(files) > 100
    assert all(path.suffix == ".py" and path.is_file() for path in files)
    assert not any(STDLIB_EXCLUDED_PARTS & set(path.parts) for path in relative)
    assert relative == sorted(relative, key=lambda path: path.parts)
    assert Path("os.py") in relative and Path("json", "decoder.py") in relative


def test_cache_dir_prefers_textgen_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("TEXTGEN_CACHE_DIR")
    assert cache_dir() == tmp_path / "xdg" / "textgen"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    assert cache_dir() == tmp_path / "home" / ".cache" / "textgen"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / "home" / ".cache" / "textgen"


# --- downloading tinyshakespeare ----------------------------------------------


def test_tinyshakespeare_is_downloaded_once_then_read_from_the_cache(server, shakespeare, tmp_path, capsys):
    assert hashlib.sha256(shakespeare).hexdigest() == SHAKESPEARE_SHA256
    server.body = shakespeare

    files = catalog.corpus_files("tinyshakespeare")
    assert files == [tmp_path / "cache" / "tinyshakespeare.txt"]
    assert files[0].read_bytes() == shakespeare
    assert server.paths == ["/input.txt"]

    corpus = open_corpus(["tinyshakespeare"])
    assert server.paths == ["/input.txt"]  # no second request
    assert corpus.description == "tinyshakespeare"
    assert corpus.total_bytes == 1115394
    assert corpus.sha256() == SHAKESPEARE_SHA256
    assert corpus.read_text() == shakespeare.decode("utf-8")
    assert list((tmp_path / "cache").iterdir()) == files  # no temporary files left
    assert capsys.readouterr().out == ""


def test_wrong_bytes_from_the_server_leave_nothing_behind(server, shakespeare, tmp_path):
    server.body = shakespeare[:-1] + b"!"
    with pytest.raises(CorpusError, match=f"expected {SHAKESPEARE_SHA256}") as caught:
        catalog.corpus_files("tinyshakespeare")
    assert str(caught.value).endswith(f"Received: url={server.url()!r}")
    cache = tmp_path / "cache"
    assert not (cache / "tinyshakespeare.txt").exists()
    assert list(cache.iterdir()) == []


def test_an_http_error_is_a_one_line_corpus_error(server, shakespeare, tmp_path):
    server.status = 404
    with pytest.raises(CorpusError, match="HTTP 404") as caught:
        catalog.corpus_files("tinyshakespeare")
    message = str(caught.value)
    assert "download it by hand and pass its path" in message
    assert message.endswith(f"Received: url={server.url()!r}")
    assert "\n" not in message
    assert not (tmp_path / "cache" / "tinyshakespeare.txt").exists()


def test_a_corrupted_cached_file_is_downloaded_again(server, shakespeare, tmp_path):
    server.body = shakespeare
    cached = tmp_path / "cache" / "tinyshakespeare.txt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(shakespeare[:1000])
    assert catalog.corpus_files("tinyshakespeare") == [cached]
    assert server.paths == ["/input.txt"]
    assert cached.read_bytes() == shakespeare


def test_a_cached_file_with_the_right_hash_needs_no_network(monkeypatch, shakespeare, tmp_path):
    monkeypatch.setenv("TEXTGEN_CACHE_DIR", str(tmp_path))
    # A URL nothing listens on: any attempt to use it would fail the test.
    monkeypatch.setenv("TEXTGEN_TINYSHAKESPEARE_URL", _unreachable_url())
    cached = tmp_path / "tinyshakespeare.txt"
    cached.write_bytes(shakespeare)
    assert catalog.corpus_files("tinyshakespeare") == [cached]


# --- fetch on its own ---------------------------------------------------------


def test_fetch_reports_an_unreachable_server(tmp_path):
    url = _unreachable_url()
    dest = tmp_path / "sub" / "file.txt"
    with pytest.raises(CorpusError, match="cannot download corpus file") as caught:
        fetch(url, hashlib.sha256(b"x").hexdigest(), dest, timeout=5)
    assert str(caught.value).endswith(f"Received: url={url!r}")
    assert list(dest.parent.iterdir()) == []


def test_fetch_reports_a_url_it_cannot_parse(tmp_path):
    with pytest.raises(CorpusError, match="cannot download corpus file"):
        fetch("not a url", hashlib.sha256(b"x").hexdigest(), tmp_path / "file.txt")


def test_fetch_keeps_the_old_file_when_a_new_download_fails(server, tmp_path):
    dest = tmp_path / "file.txt"
    dest.write_bytes(b"stale")
    server.body = b"fresh but not what was pinned"
    with pytest.raises(CorpusError, match="sha256"):
        fetch(server.url(), hashlib.sha256(b"fresh").hexdigest(), dest)
    assert dest.read_bytes() == b"stale"
    assert list(tmp_path.glob(".file.txt.*")) == []


def _unreachable_url() -> str:
    # Bind then release a port, so nothing listens on it for the test.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/input.txt"
