"""Shared fixtures: a tiny corpus and one tiny trained model for the session."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Token caches that training writes (and anything else under the cache folder)
# go to a folder of this test session, removed at its end, never to ~/.cache.
# Set at import, so subprocesses started by tests inherit it too.
_SESSION_CACHE = tempfile.mkdtemp(prefix="textgen-test-cache-")
os.environ["TEXTGEN_CACHE_DIR"] = _SESSION_CACHE


def pytest_unconfigure(config):
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)

TINY_TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\n"
    "It is the east, and Juliet is the sun.\n\n"
    "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n"
    "Deny thy father and refuse thy name.\n\n"
) * 30

# Text that exercises every tokenizer corner: CRLF, tabs, runs of spaces, accents,
# CJK, emoji, vertical tab and form feed, Unicode spaces, and the literal "[UNK]".
MIXED_TEXT = (
    "First Citizen:\r\n"
    "Before we proceed any further, hear me speak.\r\n"
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
