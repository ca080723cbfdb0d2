"""The token cache: a corpus tokenized once and kept on disk as shards of token ids.

A training corpus may be larger than memory, so its ids are never held whole.
``open_token_cache`` streams the corpus through the tokenizer in bounded batches
(the ``tokenizers`` backend encodes each batch on all cores) and appends the ids
to shard files::

    <root>/<corpus fingerprint[:16]>-<tokenizer sha256[:16]>/
        shard-00000.bin   ids as raw little-endian uint16 (vocabulary <= 65,536), else uint32
        shard-00001.bin   ... at most SHARD_TOKENS ids each
        manifest.json     format, dtype, each shard's name, token count and sha256,
                          corpus fingerprint, tokenizer sha256, total tokens

The root is ``$TEXTGEN_CACHE_DIR/tokens`` (else ``$XDG_CACHE_HOME/textgen/tokens``, else
``~/.cache/textgen/tokens``), beside the downloaded corpora. A cache is written into a temporary directory,
each shard fsynced, the manifest last, and the directory is then renamed into
place, so a directory under a cache's name is always complete: a crash leaves
only a temporary directory, which the next build removes. The name comes from
both fingerprints, so a changed corpus (its bytes, encoding or error policy)
or tokenizer never finds a stale cache; the manifest repeats both in full and
every shard is checked against its sha256 before reuse, and a cache that fails
any check is rebuilt. A lock file per cache lets two runs that need the same
cache build it once.

``textgen.shard_reader`` reads a cache back (``load_token_cache``) and checks
one before reuse; its ``TokenShards`` gives the ids as one lazy sequence.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from textgen.durable import fsync_dir, write_synced
from textgen.errors import CorpusError
from textgen.shard_reader import (FORMAT, FORMAT_VERSION, MANIFEST_FILE, TokenCache, TokenShards, checked_manifest,
                                  load_token_cache)

try:  # advisory locks; without them (Windows) two concurrent builds each write and one rename wins
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

# 64 Mi ids: 128 MiB of uint16 per shard, a size any file system handles well.
SHARD_TOKENS = 1 << 26
# Characters per batch handed to the backend: enough pieces for every core, while
# the backend's per-token bookkeeping (some 80 bytes a token) stays near 100 MB.
ENCODE_BATCH_CHARS = 1 << 20
_PROGRESS_SECONDS = 30.0

# TokenCache, TokenShards and load_token_cache live in textgen.shard_reader and
# are re-exported, so that ``from textgen.shards import TokenShards`` still works.
__all__ = ["ENCODE_BATCH_CHARS", "SHARD_TOKENS", "TokenCache", "TokenShards", "corpus_fingerprint",
           "default_cache_root", "ids_dtype", "load_token_cache", "open_token_cache", "tokenizer_sha256",
           "write_shards"]

_log = logging.getLogger(__name__)


def default_cache_root() -> Path:
    """Where token caches live: ``tokens`` inside textgen's cache folder (``$TEXTGEN_CACHE_DIR``)."""
    from textgen.corpora import cache_dir

    return cache_dir() / "tokens"


def ids_dtype(vocab_size: int) -> np.dtype:
    """The little-endian dtype that holds every id of a vocabulary: uint16 up to 65,536 tokens."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def corpus_fingerprint(corpus_sha256: str, encoding: str, errors: str) -> str:
    """The sha256 naming a corpus as the tokenizer sees it: its bytes and how they are decoded."""
    described = {"sha256": corpus_sha256, "encoding": codecs.lookup(encoding).name, "errors": errors}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode("utf-8")).hexdigest()


def tokenizer_sha256(tokenizer) -> str:
    """The sha256 of a ``TextTokenizer``'s tokenizer.json text (the same tokenizer gives the same text)."""
    return hashlib.sha256(tokenizer.to_json().encode("utf-8")).hexdigest()


def open_token_cache(corpus, tokenizer, *, root=None, corpus_sha256: str | None = None,
                     log: Callable[[str], None] | None = None, shard_tokens: int = SHARD_TOKENS) -> TokenCache:
    """The token cache of ``corpus`` encoded by ``tokenizer``: reused if complete, else built now.

    ``corpus`` is a ``textgen.corpus.Corpus`` and ``tokenizer`` a
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
                "libraries": {"tokenizers": _tokenizers_version()}}
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
        if fcntl is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log("token cache: another run holds this cache (building or checking it); waiting for it")
                fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _tokenizers_version() -> str:
    import tokenizers

    return tokenizers.__version__
