"""Downloading a corpus file once, checking its SHA-256, and caching it.

A file is only ever put in place whole and verified: it is downloaded to a
temporary file beside its destination, hashed while it streams, flushed to
disk, and renamed over the destination only when the hash matches. A cached
file is checked again before each use, so a corrupted cache heals itself.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import pathlib
import tempfile
import urllib.error
import urllib.request

from textgen.errors import CorpusError
from textgen.files import file_sha256

_log = logging.getLogger(__name__)
_BLOCK_BYTES = 1 << 16


def cache_dir() -> pathlib.Path:
    """Where downloaded corpora are kept.

    ``$TEXTGEN_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/textgen``, else
    ``~/.cache/textgen``. The folder is created on first download, not here.
    """
    explicit = os.environ.get("TEXTGEN_CACHE_DIR")
    if explicit:
        return pathlib.Path(explicit).expanduser()
    xdg_cache = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg_cache and os.path.isabs(xdg_cache):
        return pathlib.Path(xdg_cache) / "textgen"
    return pathlib.Path.home() / ".cache" / "textgen"


def fetch(url: str, sha256: str, dest: str | os.PathLike[str], timeout: float = 60) -> pathlib.Path:
    """Return ``dest``, downloading it from ``url`` first unless a copy with ``sha256`` is there.

    Raises ``CorpusError`` when the download fails or its SHA-256 differs;
    ``dest`` is then left as it was, or absent, never partly written.
    """
    dest = pathlib.Path(dest)
    expected = sha256.lower()
    if dest.is_file():
        if file_sha256(dest) == expected:
            return dest
        _log.warning("cached %s has the wrong sha256; downloading it again", dest)

    _log.info("downloading %s from %s", dest.name, url)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise CorpusError(
            f"cannot create the download cache folder: {exc.strerror or exc}. Received: folder='{dest.parent}'"
        ) from None
    temp_path = pathlib.Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            actual = _download(url, out, timeout)
            out.flush()
            # Without fsync a crash right after the rename could leave a
            # cache file of the right name but with missing contents.
            os.fsync(out.fileno())
        if actual != expected:
            raise CorpusError(
                f"downloaded file has sha256 {actual}, expected {expected}; the server sent other "
                f"contents, so download the file by hand and pass its path. Received: url={url!r}"
            )
        os.replace(temp_path, dest)
    except OSError as exc:
        raise CorpusError(
            f"cannot write the download to the cache: {exc.strerror or exc}. Received: folder='{dest.parent}'"
        ) from None
    finally:
        temp_path.unlink(missing_ok=True)
    return dest


def _download(url: str, out, timeout: float) -> str:
    """Copy the body at ``url`` into ``out``; return its hex SHA-256.

    Network failures become ``CorpusError``; a failure to write ``out`` stays
    an ``OSError`` so that ``fetch`` can blame the disk, not the network.
    """
    digest = hashlib.sha256()
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # URLError and HTTPError are OSErrors; ValueError is a URL urllib cannot parse.
        raise _download_error(url, exc) from None
    with response:
        while block := _read_block(response, url):
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def _read_block(response, url: str) -> bytes:
    try:
        return response.read(_BLOCK_BYTES)
    except (OSError, http.client.HTTPException) as exc:
        raise _download_error(url, exc) from None


def _download_error(url: str, exc: BaseException) -> CorpusError:
    if isinstance(exc, urllib.error.HTTPError):
        reason = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        reason = str(exc.reason)
    else:
        reason = str(exc) or type(exc).__name__
    return CorpusError(
        f"cannot download corpus file: {reason}; download it by hand and pass its path instead. "
        f"Received: url={url!r}"
    )
