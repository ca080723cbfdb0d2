"""Shared fixtures: a tiny corpus, one tiny trained model for the session, and a loopback HTTP server."""

import http.server
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

# Token caches that training writes (and anything else under the cache folder)
# go to a folder of this test session, removed at its end, never to ~/.cache.
# Set at import, so subprocesses started by tests inherit it too.
_SESSION_CACHE = tempfile.mkdtemp(prefix="textgen-test-cache-")
os.environ["TEXTGEN_CACHE_DIR"] = _SESSION_CACHE


def pytest_unconfigure(config):
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


# CI clones the repository next to a shared/ folder holding corpus copies.
SHAKESPEARE_COPY = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"


class LoopbackServer:
    """A local HTTP server whose response each test sets, counting requests."""

    def __init__(self) -> None:
        self.body = b""
        self.status = 200
        self.paths: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.paths.append(self.path)
                if server.status != 200:
                    self.send_error(server.status)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args) -> None:  # keep test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval makes shutdown(), and so each test, quick.
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str = "/input.txt") -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(scope="module")
def loopback_server():
    """A ``LoopbackServer`` shared by the tests of one module; they set its ``body`` and ``status``."""
    server = LoopbackServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def tinyshakespeare_bytes() -> bytes:
    """The local copy of Tiny Shakespeare (the bytes the catalog's pinned sha256 names)."""
    if not SHAKESPEARE_COPY.is_file():
        pytest.skip(f"no local copy of tinyshakespeare at {SHAKESPEARE_COPY}")
    return SHAKESPEARE_COPY.read_bytes()

TINY_TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\n"
    "It is the east, and Juliet is the sun.\n\n"
    "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n"
    "Deny thy father and refuse thy name.\n\n"
) * 30

# Text that exercises every tokenizer corner: CRLF, tabs, runs of spaces, accents,
# CJK, emoji, vertical tab and form feed, Unicode spaces, and the literal "[UNK]".
MIXED_TEXT = (
    "Test Speaker:\r\n"
    "Before the tokenizer goes any further, it reads this line.\r\n"
    "\tAll:\tSpeak,  speak.   \n"
    "Café naïve résumé — déjà vu; 日本語のテキスト 😀🎉!\n"
    "\n"
    "x_1 = 42 ; y2=x_1*3\v\f\n"
    "End\u00a0of\u2003text [UNK] stays literal... ?! \n \t\n"
) * 3

TINY_SETTINGS = dict(layers=2, units=16, embedding_dim=8, seq_length=20, batch_size=8, max_steps=30, seed=7)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_corpus) -> Path:
    import textgen

    out = tmp_path_factory.mktemp("models") / "tiny"
    textgen.train(str(tiny_corpus), out=out, quiet=True, **TINY_SETTINGS)
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    import textgen

    return textgen.load(tiny_model_dir)
