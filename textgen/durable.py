"""Writing files so that they survive a crash: fsync the data, then the directory.

A rename is atomic, but only durable once the directory holding it is
fsynced; a file's bytes are only on disk once the file is fsynced. The model
directory and the checkpoint bundles both build on these two calls.
"""

from __future__ import annotations

import os
from pathlib import Path


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
