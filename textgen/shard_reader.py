"""Reading a token cache back: its checks, and ``TokenShards``, the ids as one lazy sequence.

``textgen.shards`` builds a cache (see there for its layout); this module
opens one. ``checked_manifest`` accepts a cache folder only when its manifest
is textgen's, of this format version, and every shard it lists has the right
name, size and sha256. ``TokenCache`` is such a folder with its manifest, and
``TokenShards`` reads its ids from disk on demand, a range at a time, so a
corpus larger than memory can be trained on.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import os
import re
import threading
import weakref
from pathlib import Path

import numpy as np

from textgen.errors import CorpusError

FORMAT = "textgen-token-cache"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
_SHARD_NAME = re.compile(r"shard-\d{5}\.bin")
_HASH_BLOCK_BYTES = 1 << 20
_MAX_MANIFEST_BYTES = 64 << 20


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
        self._opening = threading.Lock()  # tf.data's reader thread and the main thread share the files
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
            if _file_sha256(file) != shard.get("sha256"):
                return None, f"{name} has the wrong sha256"
        except OSError as exc:
            return None, f"{name}: {exc.strerror or exc}"
        total += tokens
    if manifest.get("total_tokens") != total:
        return None, "total_tokens differs from the shards"
    return manifest, ""


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()
