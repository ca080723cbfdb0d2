"""Files that survive a crash, their fingerprints, and outputs that are never overwritten by surprise.

A rename is atomic, but only durable once the directory holding it is
fsynced; a file's bytes are only on disk once the file is fsynced. Every
file textgen writes for a user goes through ``write_atomically`` (one file)
or is staged and renamed by its owner with ``write_synced`` and
``fsync_dir`` (a directory of files, such as a model or a checkpoint).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterable

try:  # advisory locks; without them (Windows) nothing is locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

_HASH_BLOCK_BYTES = 1 << 20


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it before returning."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    """Make the renames and creations inside ``path`` durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomically(path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step: readers see the old file or the new one, never half of one.

    The bytes go to a temporary file beside ``path``, are fsynced, and the
    file is renamed over ``path``; the temporary file is removed on any
    failure. The file is readable by everyone, as a plain write would make it.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp's private mode is not wanted: nothing here is secret
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def bytes_sha256(data: bytes) -> str:
    """The hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(*paths) -> str:
    """The hex sha256 of the files' bytes, concatenated in order, read a block at a time."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while block := handle.read(_HASH_BLOCK_BYTES):
                digest.update(block)
    return digest.hexdigest()


def existing_outputs(paths: Iterable[Path]) -> list[Path]:
    """Those of ``paths`` that something already occupies (a file, a folder or a link, even a broken one)."""
    return [Path(path) for path in paths if Path(path).exists() or Path(path).is_symlink()]


def refuse_to_overwrite(paths: Iterable[Path], *, overwrite: bool, error, hint: str) -> None:
    """Raise ``error`` (a ``TextgenError`` class) before any work if writing ``paths`` would lose something.

    Without ``overwrite`` no path may exist; with it, files may be replaced
    but a folder standing where a file goes never is. ``hint`` says what the
    user can do instead, e.g. "pass --overwrite or choose another --out".
    """
    taken = existing_outputs(paths)
    if taken and not overwrite:
        raise error(f"{taken[0]} already exists; {hint}. Received: path='{taken[0]}'")
    folders = [path for path in taken if path.is_dir() and not path.is_symlink()]
    if folders:
        raise error(f"a folder has the name of an output file. Received: path='{folders[0]}'")


def lock(descriptor: int, *, wait: bool) -> bool:
    """Take an exclusive advisory lock on an open file or folder, held until the descriptor is closed.

    The operating system releases it if the process dies, so a crash never
    leaves a stale lock. Without ``wait``, returns False at once if another
    process holds it; with ``wait``, blocks until it is free.
    """
    if fcntl is None:
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True
