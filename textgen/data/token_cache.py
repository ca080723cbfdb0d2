"""The token cache: a corpus tokenized once and kept on disk as shards of token ids, written and read here.

A training corpus may be larger than memory, so its ids are never held whole.
``open_token_cache`` streams the corpus through the tokenizer in bounded batches
(the ``tokenizers`` backend encodes each batch on all cores) and appends the ids
to shard files::

    <root>/<corpus fingerprint[:16]>-<tokenizer sha256[:16]>/
        shard-00000.bin   ids as raw little-endian uint16 (vocabulary <= 65,536), else uint32
        shard-00001.bin   ... at most SHARD_TOKENS ids each
        manifest.json     format, dtype, each shard's name, token count and sha256,
                          corpus fingerprint, tokenizer sha256, total tokens

The root is ``tokens`` inside textgen's cache folder (``textgen.corpora.fetch.cache_dir``),
beside the downloaded corpora. A cache is written into a temporary directory,
each shard fsynced, the manifest last, and the directory is then renamed into
place, so a directory under a cache's name is always complete: a crash leaves
only a temporary directory, which the next build removes. The name comes from
both fingerprints, so a changed corpus (its bytes, encoding or error policy)
or tokenizer never finds a stale cache; the manifest repeats both in full and
every shard is checked against its sha256 before reuse (``checked_manifest``),
and a cache that fails any check is rebuilt. A lock file per cache lets two
runs that need the same cache build it once.

Reading back, ``TokenShards`` gives a cache's ids as one lazy sequence, read
from disk a range at a time, so a corpus larger than memory can be trained on.
"""

from __future__ import annotations

import bisect
import codecs
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from textgen.corpora.fetch import cache_dir
from textgen.errors import CorpusError
from textgen.files import bytes_sha256, file_sha256, fsync_dir, lock, write_synced
from textgen.provenance import library_versions

FORMAT = "textgen-token-cache"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
# 64 Mi ids: 128 MiB of uint16 per shard, a size any file system handles well.
SHARD_TOKENS = 1 << 26
# Characters per batch handed to the backend: enough pieces for every core, while
# the backend's per-token bookkeeping (some 80 bytes a token) stays near 100 MB.
ENCODE_BATCH_CHARS = 1 << 20
_PROGRESS_SECONDS = 30.0
_SHARD_NAME = re.compile(r"shard-\d{5}\.bin")
_MAX_MANIFEST_BYTES = 64 << 20

_log = logging.getLogger(__name__)


def default_cache_root() -> Path:
    """Where token caches live: ``tokens`` inside textgen's cache folder (``$TEXTGEN_CACHE_DIR``)."""
    return cache_dir() / "tokens"


def ids_dtype(vocab_size: int) -> np.dtype:
    """The little-endian dtype that holds every id of a vocabulary: uint16 up to 65,536 tokens."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def corpus_fingerprint(corpus_sha256: str, encoding: str, errors: str) -> str:
    """The sha256 naming a corpus as the tokenizer sees it: its bytes and how they are decoded."""
    described = {"sha256": corpus_sha256, "encoding": codecs.lookup(encoding).name, "errors": errors}
    return bytes_sha256(json.dumps(described, sort_keys=True).encode("utf-8"))


def tokenizer_sha256(tokenizer) -> str:
    """The sha256 of a ``TextTokenizer``'s tokenizer.json text (the same tokenizer gives the same text)."""
    return bytes_sha256(tokenizer.to_json().encode("utf-8"))


def open_token_cache(corpus, tokenizer, *, root=None, corpus_sha256: str | None = None,
                     log: Callable[[str], None] | None = None, shard_tokens: int = SHARD_TOKENS) -> TokenCache:
    """The token cache of ``corpus`` encoded by ``tokenizer``: reused if complete, else built now.

    ``corpus`` is a ``textgen.data.corpus.Corpus`` and ``tokenizer`` a
    ``TextTokenizer``; ``corpus_sha256`` saves hashing the corpus again when
    the caller already has it. ``root`` defaults to ``default_cache_root()``.
    One line goes to ``log`` (default: this module's logger) saying whether
    the cache was reused or written, with the tokenizing speed.
    """
    log = log or _log.info
    root = Path(root) if root is not None else default_cache_root()
    corpus_sha256 = corpus_sha256 or corpus.sha256()
    fingerprint = corpus_fingerprint(corpus_sha256, corpus.encoding, corpus.errors)
    expected = {"corpus_fingerprint": fingerprint, "tokenizer_sha256": tokenizer_sha256(tokenizer),
                "dtype": ids_dtype(tokenizer.vocab_size).name}
    key = f"{fingerprint[:16]}-{expected['tokenizer_sha256'][:16]}"
    path = root / key
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CorpusError(f"cannot create the token cache folder: {exc.strerror or exc}; set TEXTGEN_CACHE_DIR "
                          f"to a writable folder. Received: folder='{root}'") from None
    with _locked(root / f".{key}.lock", log):
        if path.exists():
            manifest, problem = checked_manifest(path, expected)
            if manifest is not None:
                log(f"token cache: reusing {path} ({manifest['total_tokens']:,} tokens)")
                return TokenCache(path, manifest, reused=True)
            log(f"token cache: {path} is unusable ({problem}); rebuilding it")
            shutil.rmtree(path, ignore_errors=True)
        # Holding the lock, any temporary folder of this key is a dead build's.
        for leftover in root.glob(f".tmp-{key}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        info = {"corpus_fingerprint": fingerprint, "tokenizer_sha256": expected["tokenizer_sha256"],
                "corpus": {"sha256": corpus_sha256, "encoding": codecs.lookup(corpus.encoding).name,
                           "errors": corpus.errors, "bytes": corpus.total_bytes},
                "level": tokenizer.level, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "libraries": library_versions(("tokenizers",))}
        manifest = _build(corpus, tokenizer, root, key, info, log, shard_tokens)
    return TokenCache(path, manifest, reused=False)


def write_shards(folder, id_batches: Iterable[np.ndarray], vocab_size: int, *, info: dict | None = None,
                 shard_tokens: int = SHARD_TOKENS) -> dict:
    """Write ids (given as consecutive 1-D arrays) as a complete cache in the new folder ``folder``.

    Shards are fsynced as they fill, then ``manifest.json`` is written last,
    with ``info`` merged in; returns the manifest. ``open_token_cache``
    writes through this into a temporary folder and renames it into place.
    """
    folder = Path(folder)
    dtype = ids_dtype(vocab_size)
    folder.mkdir(parents=True)
    shards, handle, hasher, count = [], None, None, 0

    def close_shard() -> None:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        shards.append({"name": Path(handle.name).name, "tokens": count, "sha256": hasher.hexdigest()})

    try:
        for ids in id_batches:
            ids = np.ascontiguousarray(ids, dtype=dtype)  # (n,) already in dtype when the tokenizer wrote it
            while len(ids):
                if handle is None:
                    handle = open(folder / f"shard-{len(shards):05d}.bin", "wb")
                    hasher, count = hashlib.sha256(), 0
                part, ids = ids[:shard_tokens - count], ids[shard_tokens - count:]
                handle.write(part.data)
                hasher.update(part.data)
                count += len(part)
                if count == shard_tokens:
                    close_shard()
                    handle = None
        if handle is not None:
            close_shard()
            handle = None
    finally:
        if handle is not None:
            handle.close()
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **(info or {}), "dtype": dtype.name,
                "byte_order": "little", "vocab_size": vocab_size,
                "total_tokens": sum(shard["tokens"] for shard in shards), "shards": shards}
    write_synced(folder / MANIFEST_FILE, json.dumps(manifest, indent=1).encode("utf-8"))
    fsync_dir(folder)
    return manifest


def _build(corpus, tokenizer, root: Path, key: str, info: dict, log, shard_tokens: int) -> dict:
    """Tokenize the corpus into a temporary folder, then rename it to ``root / key``."""
    began = time.monotonic()
    total_bytes = corpus.total_bytes
    temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
    try:
        batches = tokenizer.iter_encoded(_reporting(corpus.iter_text(), total_bytes, began, log),
                                         batch_chars=ENCODE_BATCH_CHARS, dtype=ids_dtype(tokenizer.vocab_size))
        manifest = write_shards(temporary / "cache", batches, tokenizer.vocab_size, info=info,
                                shard_tokens=shard_tokens)
        final = root / key
        os.rename(temporary / "cache", final)
        fsync_dir(root)
    except OSError as exc:
        raise CorpusError(f"cannot write the token cache: {exc.strerror or exc}; free some space or set "
                          f"TEXTGEN_CACHE_DIR to another folder. Received: folder='{root}'") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    seconds = max(time.monotonic() - began, 1e-9)
    log(f"token cache: wrote {manifest['total_tokens']:,} tokens in {len(manifest['shards'])} "
        f"shard{'s' if len(manifest['shards']) != 1 else ''} to {final} in {seconds:.1f}s "
        f"({total_bytes / seconds / 1e6:.1f} MB/s)")
    return manifest


def _reporting(chunks: Iterable[str], total_bytes: int, began: float, log) -> Iterable[str]:
    """Pass the chunks through, logging how far tokenizing has got every 30 seconds."""
    done, last = 0, began
    for chunk in chunks:
        yield chunk
        done += len(chunk)  # characters: a byte count for ASCII text, an underestimate otherwise
        now = time.monotonic()
        if now - last >= _PROGRESS_SECONDS:
            last = now
            rate = done / (now - began)
            log(f"token cache: about {min(done / total_bytes, 1.0):.0%} tokenized, {rate / 1e6:.1f} MB/s")


@contextlib.contextmanager
def _locked(lock_path: Path, log):
    """Hold an exclusive lock on ``lock_path`` (released by the OS if the process dies)."""
    try:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CorpusError(f"cannot create the token cache lock: {exc.strerror or exc}. "
                          f"Received: lock='{lock_path}'") from None
    try:
        if not lock(descriptor, wait=False):
            log("token cache: another run holds this cache (building or checking it); waiting for it")
            lock(descriptor, wait=True)
        yield
    finally:
        os.close(descriptor)


class _ShardFiles:
    """The open shard files of one cache, read with ``pread`` (thread-safe, no file position)."""

    def __init__(self, folder: Path, manifest: dict):
        self.dtype = np.dtype(manifest["dtype"]).newbyteorder("<")
        self.paths = [folder / shard["name"] for shard in manifest["shards"]]
        counts = [int(shard["tokens"]) for shard in manifest["shards"]]
        self.starts = [0]  # the index of each shard's first id; the last entry is the total
        for count in counts:
            self.starts.append(self.starts[-1] + count)
        self.descriptors: list[int | None] = [None] * len(self.paths)
        self._opening = threading.Lock()  # the batch reader's thread and the main thread share the files
        # Closes the files when the last TokenShards over them goes away.
        self._closer = weakref.finalize(self, _close_all, self.descriptors)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Ids ``start`` to ``stop`` (global indices) as a new int32 array."""
        out = np.empty(stop - start, dtype=np.int32)
        shard = bisect.bisect_right(self.starts, start) - 1
        position = start
        while position < stop:
            first, end = self.starts[shard], min(stop, self.starts[shard + 1])
            count = end - position
            offset = (position - first) * self.dtype.itemsize
            data = os.pread(self._descriptor(shard), count * self.dtype.itemsize, offset)
            if len(data) != count * self.dtype.itemsize:
                raise CorpusError(f"a token cache shard is shorter than its manifest says; delete the cache "
                                  f"folder to rebuild it. Received: shard='{self.paths[shard]}'")
            out[position - start:end - start] = np.frombuffer(data, dtype=self.dtype)
            position, shard = end, shard + 1
        return out

    def _descriptor(self, shard: int) -> int:
        with self._opening:
            if self.descriptors[shard] is None:
                try:
                    self.descriptors[shard] = os.open(self.paths[shard], os.O_RDONLY)
                except OSError as exc:
                    raise CorpusError(f"cannot read a token cache shard: {exc.strerror or exc}. "
                                      f"Received: shard='{self.paths[shard]}'") from None
            return self.descriptors[shard]


def _close_all(descriptors: list) -> None:
    for index, descriptor in enumerate(descriptors):
        if descriptor is not None:
            os.close(descriptor)
            descriptors[index] = None


class TokenShards:
    """The ids of a token cache as one read-only 1-D sequence, read from disk on demand.

    Slicing is lazy: ``tokens[a:b]`` is another ``TokenShards`` over that
    range and reads nothing. ``np.asarray(tokens[a:b])`` (or ``.read()``)
    reads the range into a new int32 array, with one ``pread`` per shard it
    touches. Nothing is memory-mapped: pages of a mapped file count in the
    process's resident memory once touched, so one pass of validation over a
    large split would grow it by the split's size; reads into a fresh buffer
    leave only the buffer.
    """

    def __init__(self, files: _ShardFiles, start: int = 0, stop: int | None = None):
        self._files = files
        self._start = start
        self._stop = files.starts[-1] if stop is None else stop

    def __len__(self) -> int:
        return self._stop - self._start

    def __repr__(self) -> str:
        return f"TokenShards({len(self):,} ids, dtype={self._files.dtype.name})"

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise TypeError(f"TokenShards slices take no step. Received: step={key.step!r}")
            return TokenShards(self._files, self._start + start, self._start + max(start, stop))
        index = int(key)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"token index out of range. Received: index={key!r}")
        return int(self._files.read(self._start + index, self._start + index + 1)[0])

    def read(self) -> np.ndarray:
        """Every id of this range, as a new (len,) int32 array."""
        return self._files.read(self._start, self._stop)

    def __array__(self, dtype=None, copy=None):
        ids = self.read()
        return ids if dtype is None else ids.astype(dtype, copy=False)


@dataclasses.dataclass
class TokenCache:
    """A complete, checked token cache: its folder, its manifest, and whether it was reused."""

    path: Path
    manifest: dict
    reused: bool = False

    @property
    def total_tokens(self) -> int:
        return int(self.manifest["total_tokens"])

    def tokens(self) -> TokenShards:
        """All ids of the corpus, in order, as a lazy ``TokenShards``."""
        return TokenShards(_ShardFiles(self.path, self.manifest))


def load_token_cache(path) -> TokenCache:
    """Open a complete cache folder, checking its manifest and every shard's size and sha256."""
    path = Path(path)
    manifest, problem = checked_manifest(path, {})
    if manifest is None:
        raise CorpusError(f"not a usable token cache: {problem}. Received: path='{path}'")
    return TokenCache(path, manifest, reused=True)


def checked_manifest(path: Path, expected: dict) -> tuple[dict | None, str]:
    """The manifest of a complete cache matching ``expected``, or (None, what is wrong)."""
    try:
        with open(path / MANIFEST_FILE, "rb") as handle:
            raw = handle.read(_MAX_MANIFEST_BYTES + 1)
        manifest = json.loads(raw)
    except FileNotFoundError:
        return None, "no manifest: it was never finished"
    except (OSError, ValueError, RecursionError) as exc:
        return None, f"unreadable manifest: {exc}"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None, "not a textgen token cache"
    if manifest.get("format_version") != FORMAT_VERSION:
        return None, f"format version {manifest.get('format_version')!r}, not {FORMAT_VERSION}"
    for name, value in expected.items():
        if manifest.get(name) != value:
            return None, f"{name} differs"
    shards = manifest.get("shards")
    if manifest.get("dtype") not in ("uint16", "uint32") or not isinstance(shards, list):
        return None, "bad dtype or shard list"
    itemsize = np.dtype(manifest["dtype"]).itemsize
    total = 0
    for shard in shards:
        shard = shard if isinstance(shard, dict) else {}
        name, tokens = shard.get("name"), shard.get("tokens")
        if not isinstance(name, str) or not _SHARD_NAME.fullmatch(name) or type(tokens) is not int or tokens < 1:
            return None, "bad shard entry"
        file = path / name
        try:
            if file.stat().st_size != tokens * itemsize:
                return None, f"{name} has the wrong size"
            if file_sha256(file) != shard.get("sha256"):
                return None, f"{name} has the wrong sha256"
        except OSError as exc:
            return None, f"{name}: {exc.strerror or exc}"
        total += tokens
    if manifest.get("total_tokens") != total:
        return None, "total_tokens differs from the shards"
    return manifest, ""

