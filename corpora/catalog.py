"""The named corpora: what each one is, its size, how its files are obtained, and how one is written to a file.

``python`` is read from the running interpreter's own standard library, so it
is always there, offline, and is the default. ``tinyshakespeare`` is
downloaded once, checked against a pinned SHA-256, and cached; its URL can be
overridden with ``$TEXTGEN_TINYSHAKESPEARE_URL`` (a mirror, or a test server).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sysconfig
from collections.abc import Callable

from textgen.corpora.fetch import cache_dir, fetch
from textgen.errors import CorpusError
from textgen.files import refuse_to_overwrite, write_atomically

# Folders of the standard library that are not representative Python source:
# installed third-party packages, test suites (full of deliberately odd code
# and data) and demos.
STDLIB_EXCLUDED_PARTS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo", "__pycache__"}
)


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
    """One named corpus: a one-line description, a way to get its files, and its size in bytes.

    ``size`` is known without a download: counted on disk for a local corpus
    (None if it is missing), pinned with the sha256 for a downloaded one.
    ``on_disk`` gives the files only if no download is needed (None otherwise).
    """

    name: str
    description: str
    materialize: Callable[[], list[pathlib.Path]]
    size: Callable[[], int | None]
    on_disk: Callable[[], list[pathlib.Path] | None]  # the files if they are here now, without a download


def python_stdlib_files() -> list[pathlib.Path]:
    """The ``.py`` files of the running interpreter's standard library, sorted by relative path."""
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    relative_paths: list[pathlib.PurePath] = []
    # Exclusions are matched against paths relative to the stdlib folder, so
    # an interpreter installed under e.g. /home/tests/ still has a corpus.
    for root, dir_names, file_names in os.walk(stdlib):
        dir_names[:] = [name for name in dir_names if name not in STDLIB_EXCLUDED_PARTS]
        relative_root = pathlib.Path(root).relative_to(stdlib)
        relative_paths.extend(relative_root / name for name in file_names if name.endswith(".py"))
    if not relative_paths:
        raise CorpusError(
            "the Python standard library source is not available in this installation; "
            f"pass files or a folder instead. Received: stdlib='{stdlib}'"
        )
    return [stdlib / relative for relative in sorted(relative_paths, key=lambda p: p.parts)]


def python_stdlib_size() -> int | None:
    """The bytes of the ``python`` corpus, counted on disk; None where this Python has no stdlib source."""
    try:
        return sum(path.stat().st_size for path in python_stdlib_files())
    except CorpusError:
        return None


def downloaded_file(name: str, url: str, sha256: str) -> Callable[[], list[pathlib.Path]]:
    """A ``materialize`` for a one-file corpus fetched from ``url`` into the cache.

    ``$TEXTGEN_<NAME>_URL`` replaces ``url`` when set; the SHA-256 stays
    pinned, so a mirror must serve the very same bytes.
    """
    url_variable = f"TEXTGEN_{name.upper()}_URL"

    def materialize() -> list[pathlib.Path]:
        source = os.environ.get(url_variable) or url
        return [fetch(source, sha256, cache_dir() / f"{name}.txt")]

    return materialize


def cached_file(name: str) -> Callable[[], list[pathlib.Path] | None]:
    """An ``on_disk`` for a one-file corpus that ``downloaded_file(name, ...)`` fetches: its cached copy, if any.

    The copy is not hashed here; whoever reads it and cares checks its sha256.
    """

    def on_disk() -> list[pathlib.Path] | None:
        path = cache_dir() / f"{name}.txt"
        return [path] if path.is_file() else None

    return on_disk


def _python_stdlib_on_disk() -> list[pathlib.Path] | None:
    try:
        return python_stdlib_files()
    except CorpusError:
        return None


_ENTRIES = {
    entry.name: entry
    for entry in (
        CatalogEntry(
            name="python",
            description="the .py source of this Python's standard library (offline; the default)",
            materialize=python_stdlib_files,
            size=python_stdlib_size,
            on_disk=_python_stdlib_on_disk,
        ),
        CatalogEntry(
            name="tinyshakespeare",
            description="Tiny Shakespeare, 1.1 MB of plays (downloaded once from GitHub and cached)",
            materialize=downloaded_file(
                "tinyshakespeare",
                url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                # The 1115394-byte input.txt of karpathy/char-rnn.
                sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            ),
            size=lambda: 1_115_394,  # the bytes that sha256 names
            on_disk=cached_file("tinyshakespeare"),
        ),
    )
}


def names() -> list[str]:
    """The names of the catalog's corpora, in a fixed order."""
    return list(_ENTRIES)


def describe(name: str) -> str:
    """A one-line description of the named corpus."""
    return _entry(name).description


def corpus_files(name: str) -> list[pathlib.Path]:
    """The files of the named corpus, downloading them first if needed."""
    return _entry(name).materialize()


def files_on_disk(name: str) -> list[pathlib.Path] | None:
    """The files of the named corpus if they are on this machine now, or None where they would be downloaded."""
    return _entry(name).on_disk()


def size(name: str) -> int | None:
    """The size of the named corpus in bytes, known without downloading it (None: not known)."""
    return _entry(name).size()


def write_to_file(name: str, dest, *, overwrite: bool = False) -> pathlib.Path:
    """Write the named corpus to the file ``dest``, downloading it first if needed; return ``dest``.

    The file holds the corpus's files concatenated in order, exactly the
    bytes textgen trains on by that name (the same sha256, so the same token
    cache). An existing ``dest`` is refused before any download unless
    ``overwrite``; the file is written atomically, never half.
    """
    dest = pathlib.Path(dest)
    _entry(name)  # an unknown name is refused before anything else
    refuse_to_overwrite([dest], overwrite=overwrite, error=CorpusError, hint="pass --overwrite or choose another -o")
    data = b"".join(path.read_bytes() for path in corpus_files(name))
    try:
        write_atomically(dest, data)
    except OSError as exc:
        raise CorpusError(f"cannot write the corpus: {exc.strerror or exc}. Received: path='{dest}'") from None
    return dest


def _entry(name: str) -> CatalogEntry:
    try:
        return _ENTRIES[name]
    except (KeyError, TypeError):
        raise CorpusError(
            f"unknown named corpus (named corpora: {', '.join(_ENTRIES)}). Received: name={name!r}"
        ) from None
