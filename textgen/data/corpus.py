"""Reading a corpus: the text files a model is trained on, read as one stream.

A corpus is named on the command line by any mix of files, folders, glob
patterns and catalog names (see ``textgen.corpora.catalog``). ``open_corpus`` turns
those into a ``Corpus``: a fixed, ordered list of files. Reading streams the
files in binary chunks through an incremental decoder, so a corpus never has to
fit in memory twice and a decoding problem is reported with the exact byte
offset where it happened.
"""

from __future__ import annotations

import codecs
import contextlib
import glob
import os
import pathlib
import re
import stat
from collections.abc import Iterable, Iterator, Sequence

from textgen.corpora import catalog, fetch
from textgen.errors import ConfigError, CorpusError
from textgen.files import bytes_sha256, file_sha256, write_atomically

ERROR_POLICIES = ("strict", "replace", "ignore")
DEFAULT_CORPUS = "python"

# Enough to tell text from binary: file(1) and git sniff a similar prefix.
_SNIFF_BYTES = 8 * 1024
_GLOB_CHARACTERS = frozenset("*?[")
_SKIPPED_NAMES = frozenset({"__pycache__"})


class Corpus:
    """An ordered sequence of text files read as one stream.

    Files are concatenated exactly as stored: no separator is added between
    them and line endings are not translated, so ``sha256()`` describes
    precisely the bytes that ``iter_text()`` decodes.
    """

    def __init__(
        self,
        files: Iterable[str | os.PathLike[str]],
        *,
        encoding: str = "utf-8",
        errors: str = "strict",
        description: str | None = None,
    ) -> None:
        self._nul_marks_binary = _check_text_options(encoding, errors)
        self.files: tuple[pathlib.Path, ...] = tuple(pathlib.Path(f).resolve() for f in files)
        self.encoding = encoding
        self.errors = errors
        self.description = description or _count_files(len(self.files))

    def __repr__(self) -> str:
        return f"Corpus({self.description!r}, encoding={self.encoding!r}, errors={self.errors!r})"

    @property
    def total_bytes(self) -> int:
        """The size of all files together, in bytes, as they are on disk now."""
        return sum(_stat(path).st_size for path in self.files)

    def iter_text(self, chunk_bytes: int = 1 << 20) -> Iterator[str]:
        """Yield the decoded text of every file in order, reading ``chunk_bytes`` at a time.

        Raises ``CorpusError`` for a file that contains a NUL byte (binary), or
        that cannot be decoded when ``errors`` is ``"strict"``.
        """
        if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1:
            raise ConfigError(f"chunk_bytes must be a positive integer. Received: chunk_bytes={chunk_bytes!r}")
        for path in self.files:
            yield from self._iter_file_text(path, chunk_bytes)

    def iter_sample(self, max_bytes: int, excerpt_bytes: int = 1 << 20) -> Iterator[str]:
        """Yield excerpts of the text spread evenly over the corpus, from at most ``max_bytes`` of it.

        The corpus is read in chunks of ``excerpt_bytes`` (1 MiB, or ``max_bytes``
        if smaller); ``max_bytes // excerpt_bytes`` of them, one from the middle
        of each of that many equal stretches of the corpus, are yielded, each
        as the text of one chunk (to within the few bytes of a character split
        between chunks). Every byte is still read and decoded, so a decoding
        problem anywhere is reported here; one chunk is held at a time.
        """
        for name, value in (("max_bytes", max_bytes), ("excerpt_bytes", excerpt_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer. Received: {name}={value!r}")
        excerpt_bytes = min(excerpt_bytes, max_bytes)
        chunks = max(1, sum(-(-_stat(path).st_size // excerpt_bytes) for path in self.files))  # ceil per file
        wanted = max_bytes // excerpt_bytes
        taken = 0

        def picks_before(index: int) -> int:
            # How many of ``wanted`` picks, one in the middle of each of ``wanted``
            # equal stretches of the ``chunks`` chunks, come before chunk ``index``.
            return (index * wanted + chunks // 2) // chunks

        for index, text in enumerate(self.iter_text(excerpt_bytes)):
            if taken < wanted and picks_before(index + 1) > picks_before(index):
                taken += 1
                yield text

    def read_text(self) -> str:
        """Return the whole corpus as one string."""
        return "".join(self.iter_text())

    def read_head(self, characters: int) -> str:
        """Return the first ``characters`` characters of the text (all of it if shorter), reading no further."""
        if isinstance(characters, bool) or not isinstance(characters, int) or characters < 0:
            raise ConfigError(f"characters must be an integer >= 0. Received: characters={characters!r}")
        parts, count = [], 0
        # A character is at most 4 bytes in UTF-8, so a short head needs one small read.
        with contextlib.closing(self.iter_text(max(1024, min(4 * characters, 1 << 20)))) as texts:
            for text in texts:
                parts.append(text)
                count += len(text)
                if count >= characters:
                    break
        return "".join(parts)[:characters]

    def sha256(self) -> str:
        """Return the hex SHA-256 of the raw bytes of all files, concatenated in order."""
        try:
            return file_sha256(*self.files)
        except OSError as exc:
            raise CorpusError(f"cannot read corpus file: {exc.strerror or exc}. "
                              f"Received: file='{exc.filename}'") from None

    def _iter_file_text(self, path: pathlib.Path, chunk_bytes: int) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder(self.encoding)(errors=self.errors)
        offset = 0  # of the next chunk's first byte within the file
        with _open_binary(path) as stream:
            while True:
                chunk = stream.read(chunk_bytes)
                if self._nul_marks_binary:
                    nul_at = chunk.find(b"\x00")
                    if nul_at >= 0:
                        raise _binary_file_error(path, offset + nul_at)
                # The decoder keeps an incomplete multi-byte sequence from the
                # previous chunk and reports error positions relative to those
                # kept bytes plus this chunk; remember how many it kept.
                pending = len(decoder.getstate()[0])
                try:
                    text = decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as exc:
                    bad_byte = exc.object[exc.start]
                    raise CorpusError(
                        f"corpus file '{path}' is not valid {self.encoding}: bad byte 0x{bad_byte:02x} "
                        f"at byte offset {offset - pending + exc.start}; pass --encoding or "
                        f"--errors replace|ignore. Received: encoding={self.encoding!r}"
                    ) from None
                if text:
                    yield text
                if not chunk:
                    return
                offset += len(chunk)


def texts_file(texts: str | Sequence[str]) -> pathlib.Path:
    """A UTF-8 file in the cache that holds ``texts`` (a string, or strings joined by newlines), to train on.

    Text held in memory becomes a corpus file like any other, so a run on it
    has the same validation split, token cache and exact resume. The file is
    named by its content's sha256, so the same texts give the same file (a
    resumed run finds it again) and it is written once, atomically.
    """
    if isinstance(texts, str):
        texts = [texts]
    elif not isinstance(texts, Sequence) or not all(isinstance(text, str) for text in texts):
        raise ConfigError(f"texts must be a string or a list of strings. Received: texts={type(texts).__name__}")
    try:
        data = "\n".join(texts).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"texts hold a character UTF-8 cannot store (a lone surrogate). "
                          f"Received: character={exc.object[exc.start]!r}") from None
    if not data.strip():
        raise ConfigError(f"texts hold no text to train on. Received: texts={len(texts)} strings, {len(data)} bytes")
    path = fetch.cache_dir() / "texts" / f"{bytes_sha256(data)}.txt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data)
    return path


def open_corpus(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str] | None = None,
    *,
    encoding: str = "utf-8",
    errors: str = "strict",
    output: str | os.PathLike[str] | None = None,
) -> Corpus:
    """Resolve files, folders, glob patterns and corpus names to a ``Corpus``.

    ``inputs`` None or empty means the default named corpus, ``"python"``.
    Each input is tried as, in order: an existing file, an existing folder
    (its text files, recursively), a name from ``textgen.catalog.names()``,
    a glob pattern. A file reached twice is read once. ``output``, the folder
    a training run writes, is never read as a folder of text: ``textgen train
    python --out python`` trains on the named corpus.
    """
    nul_marks_binary = _check_text_options(encoding, errors)
    if inputs is None or isinstance(inputs, (str, os.PathLike)):
        # A lone string is one input, not a sequence of one-letter inputs.
        inputs = [] if inputs is None else [inputs]
    texts = [os.fspath(item) for item in inputs] or [DEFAULT_CORPUS]

    files: dict[pathlib.Path, None] = {}  # an ordered set keyed by resolved path
    skipped = pathlib.Path(output).resolve() if output is not None else None
    for text in texts:
        for path in _resolve_input(text, nul_marks_binary, skipped):
            files.setdefault(path.resolve(), None)

    if len(texts) == 1:
        only = texts[0]
        description = only if len(files) == 1 else f"{only} ({_count_files(len(files))})"
    else:
        description = _count_files(len(files))
    corpus = Corpus(files, encoding=encoding, errors=errors, description=description)
    if corpus.total_bytes == 0:
        raise CorpusError(f"corpus is empty: every file in it has zero bytes. Received: inputs={texts!r}")
    return corpus


# How open_corpus describes one input that became several files: "python (580 files)".
_FILE_COUNT = re.compile(r" \((?:1 file|\d+ files)\)$")


def recorded_corpus(record: dict | None) -> tuple[Corpus, bool] | None:
    """The corpus a model's manifest records (its ``corpus`` section), if it can be read here without a download.

    A training run records how ``open_corpus`` described its corpus (the one
    input it was given: a named corpus, a file, a folder or a glob) with the
    corpus's size and sha256. Returns that corpus, read as UTF-8 with
    undecodable bytes replaced, and whether its bytes are the ones the model
    was trained on. A path counts only if they are (a relative path was
    relative to wherever training ran); a named corpus also when they differ
    (the ``python`` corpus of another Python version). None when the record
    names no single input, or its corpus is not here: a path that is gone, or
    a named corpus that would have to be downloaded.
    """
    description = record.get("description") if isinstance(record, dict) else None
    if not isinstance(description, str) or not description:
        return None
    single = _FILE_COUNT.sub("", description)
    named = single in catalog.names() and not pathlib.Path(single).expanduser().exists()
    try:
        if named:
            files = catalog.files_on_disk(single)
            if files is None:
                return None
            corpus = Corpus(files, errors="replace", description=single)
        else:
            corpus = open_corpus(single, errors="replace")
        same = corpus.total_bytes == record.get("bytes") and corpus.sha256() == record.get("sha256")
    except CorpusError:
        return None
    return (corpus, same) if same or named else None


def _resolve_input(text: str, nul_marks_binary: bool, skipped: pathlib.Path | None = None) -> list[pathlib.Path]:
    if not text:
        # pathlib reads "" as ".", which would quietly read the working folder.
        raise CorpusError("a corpus input is an empty string. Received: input=''")
    path = pathlib.Path(text).expanduser()
    # Existing paths win over catalog names, so a local folder called
    # "python" is never shadowed by the built-in corpus.
    if path.is_file():
        _refuse_binary(path, nul_marks_binary)
        return [path]
    if path.is_dir() and path.resolve() != skipped:
        return _text_files_in_folder(path, nul_marks_binary)
    if path.exists() and not path.is_dir():
        raise _not_a_file_error(path)
    if text in catalog.names():
        return catalog.corpus_files(text)
    if _GLOB_CHARACTERS.intersection(text):
        return _glob_matches(text, nul_marks_binary)
    if path.exists():
        raise CorpusError(f"this is the folder the run writes its model to, not a corpus. Received: input={text!r}")
    raise CorpusError(
        "no such file, folder, glob match or named corpus "
        f"(named corpora: {', '.join(catalog.names())}). Received: input={text!r}"
    )


def _glob_matches(pattern: str, nul_marks_binary: bool) -> list[pathlib.Path]:
    matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    if not matches:
        raise CorpusError(f"glob pattern matched no files or folders. Received: pattern={pattern!r}")
    files: list[pathlib.Path] = []
    for match in map(pathlib.Path, matches):
        if match.is_dir():
            files.extend(_text_files_in_folder(match, nul_marks_binary))
        elif match.is_file():
            # A file the pattern picked out was asked for, like a named file,
            # so a binary one is an error rather than silently dropped.
            _refuse_binary(match, nul_marks_binary)
            files.append(match)
        else:
            raise _not_a_file_error(match)
    return files


def _text_files_in_folder(folder: pathlib.Path, nul_marks_binary: bool) -> list[pathlib.Path]:
    """All text files under ``folder``, sorted by relative path.

    Hidden entries, ``__pycache__``, empty files and binary files are skipped.
    Symlinked files are read; symlinked folders are not entered, which keeps a
    link back up the tree from looping forever.
    """
    relative_paths: list[pathlib.PurePath] = []
    for root, dir_names, file_names in os.walk(folder):
        dir_names[:] = [name for name in dir_names if _is_visible(name)]
        root_path = pathlib.Path(root)
        for name in file_names:
            path = root_path / name
            if _is_visible(name) and path.is_file() and _looks_like_text(path, nul_marks_binary):
                relative_paths.append(path.relative_to(folder))
    if not relative_paths:
        raise CorpusError(
            "folder has no text files (hidden, __pycache__, empty and binary files are skipped). "
            f"Received: folder='{folder}'"
        )
    # Sorting path parts, not strings, keeps each folder's files together.
    return [folder / relative for relative in sorted(relative_paths, key=lambda p: p.parts)]


def _is_visible(name: str) -> bool:
    return not name.startswith(".") and name not in _SKIPPED_NAMES


def _looks_like_text(path: pathlib.Path, nul_marks_binary: bool) -> bool:
    head = _read_head(path)
    return bool(head) and not (nul_marks_binary and b"\x00" in head)


def _refuse_binary(path: pathlib.Path, nul_marks_binary: bool) -> None:
    if nul_marks_binary:
        nul_at = _read_head(path).find(b"\x00")
        if nul_at >= 0:
            raise _binary_file_error(path, nul_at)


# What a path that is neither a regular file nor a folder is, by its stat mode.
_SPECIAL_FILES = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _not_a_file_error(path: pathlib.Path) -> CorpusError:
    """The error for an input that exists but is no regular file or folder.

    A corpus is read several times (its sha256, the tokenizer, the token
    cache), so a stream that can be read only once cannot be one.
    """
    mode = _stat(path).st_mode
    kind = next((name for test, name in _SPECIAL_FILES if test(mode)), "not a regular file")
    return CorpusError(
        f"corpus input is {kind}, not a regular file or folder; textgen reads a corpus more than once, "
        f"so save the text to a file first. Received: input='{path}'"
    )


def _binary_file_error(path: pathlib.Path, offset: int) -> CorpusError:
    return CorpusError(
        f"corpus file looks like a binary file (NUL byte at byte offset {offset}); "
        f"pass text files only. Received: file='{path}'"
    )


def _read_head(path: pathlib.Path) -> bytes:
    with _open_binary(path) as stream:
        return stream.read(_SNIFF_BYTES)


def _open_binary(path: pathlib.Path):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file: {exc.strerror or exc}. Received: file='{path}'") from None


def _stat(path: pathlib.Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file: {exc.strerror or exc}. Received: file='{path}'") from None


def _check_text_options(encoding: str, errors: str) -> bool:
    """Validate ``encoding`` and ``errors``; return whether a NUL byte marks a binary file.

    UTF-16 and UTF-32 put NUL bytes in ordinary text, so for them the NUL
    test would call every file binary; for ASCII-compatible encodings it is
    the cheapest reliable sign of one.
    """
    if errors not in ERROR_POLICIES:
        raise ConfigError(f"errors must be one of 'strict', 'replace', 'ignore'. Received: errors={errors!r}")
    if not isinstance(encoding, str):
        raise ConfigError(f"encoding must be the name of a text encoding. Received: encoding={encoding!r}")
    try:
        # str.encode, unlike codecs.lookup, also refuses codecs that are not
        # text encodings, such as "hex" or "zlib".
        sample = "Aa\n".encode(encoding)
    except LookupError:
        raise ConfigError(f"unknown text encoding. Received: encoding={encoding!r}") from None
    except UnicodeError:
        return True
    return b"\x00" not in sample


def _count_files(count: int) -> str:
    return "1 file" if count == 1 else f"{count} files"
