"""Atomic checkpoint bundles, kept in ``<model dir>/checkpoints/``.

A bundle is a directory ``ckpt-<step>`` holding everything needed to carry on
exactly where training was: every model and optimizer variable (random
generator states included), the best weights so far, the loop's position and
counters, and the tokenizer. It is written to a temporary directory, fsynced
and renamed into place; then the ``latest`` pointer is replaced atomically and
old bundles are pruned. Its manifest lists the sha256 of every file, and a
bundle that fails its check is skipped, with a warning, for the one before.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from textgen.errors import ModelDirError, TrainingError
from textgen.files import bytes_sha256, file_sha256, fsync_dir, write_atomically, write_synced
from textgen.model_dir import CHECKPOINTS_DIR, MANIFEST_FILE, TOKENIZER_FILE

LATEST = "latest"
STATE_FILE = "state.npz"
PROGRESS_FILE = "progress.json"
BUNDLE_FILES = (STATE_FILE, PROGRESS_FILE, TOKENIZER_FILE)
BUNDLE_FORMAT = "textgen-checkpoint"
BUNDLE_VERSION = 1


class CheckpointWarning(UserWarning):
    """A checkpoint bundle was unreadable and an older one is used instead."""


def _save_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _disk_error(exc: OSError, what: str, path: Path) -> TrainingError:
    reason = "no space left on the device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return TrainingError(f"could not write {what}: {reason}; the previous checkpoint is kept. "
                         f"Received: path='{path}'")


class CheckpointManager:
    """Writes and finds checkpoint bundles under ``model_dir/checkpoints``."""

    def __init__(self, model_dir, keep: int = 3):
        self.root = Path(model_dir) / CHECKPOINTS_DIR
        self.keep = keep

    def exists(self) -> bool:
        """True if any bundle has been written here."""
        return (self.root / LATEST).exists() or bool(self._bundles())

    def clean_leftovers(self) -> None:
        """Remove temporary directories that a crash left behind."""
        if self.root.is_dir():
            for entry in self.root.iterdir():
                if entry.name.startswith(".tmp-"):
                    shutil.rmtree(entry, ignore_errors=True)

    def remove_all(self) -> None:
        """Forget every bundle (a fresh run with --overwrite)."""
        shutil.rmtree(self.root, ignore_errors=True)

    def save(self, step: int, arrays: dict[str, np.ndarray], progress: dict, tokenizer_json: str) -> Path:
        """Write one bundle atomically, point ``latest`` at it, prune old ones."""
        for name, array in arrays.items():
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                raise TrainingError(f"training diverged: {name} holds NaN or infinite values, so it is not saved and "
                                    f"the previous checkpoint is kept; try a lower --learning-rate or --clipnorm. "
                                    f"Received: step={step}")
        name = f"ckpt-{step:010d}"
        staging = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(staging, 0o777 & ~umask)  # mkdtemp's private mode is not wanted for a bundle
            contents = {
                STATE_FILE: _save_arrays(arrays),
                PROGRESS_FILE: json.dumps(progress, sort_keys=True).encode("utf-8"),
                TOKENIZER_FILE: tokenizer_json.encode("utf-8"),
            }
            for file_name, data in contents.items():
                write_synced(staging / file_name, data)
            manifest = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, "step": step,
                        "files": {n: bytes_sha256(d) for n, d in contents.items()}}
            write_synced(staging / MANIFEST_FILE, json.dumps(manifest, sort_keys=True).encode("utf-8"))
            fsync_dir(staging)
            final = self.root / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
            staging = None
            write_atomically(self.root / LATEST, name.encode("ascii"))
        except OSError as exc:
            raise _disk_error(exc, "a checkpoint", self.root) from None
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        self._prune(keep_name=name)
        return final

    def keep_latest_only(self) -> None:
        """After a finished run, one bundle is enough to continue training later."""
        bundles = self._bundles()
        if bundles:
            self._prune(keep_name=bundles[0].name, keep=1)

    def _bundles(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted((p for p in self.root.iterdir() if p.name.startswith("ckpt-") and p.is_dir()), reverse=True)

    def _prune(self, keep_name: str, keep: int | None = None) -> None:
        for old in self._bundles()[keep or self.keep:]:
            if old.name != keep_name:
                shutil.rmtree(old, ignore_errors=True)

    def load_latest(self) -> tuple[dict[str, np.ndarray], dict, str]:
        """(arrays, progress, tokenizer_json) of the newest bundle that passes its checks."""
        candidates = self._bundles()
        try:
            pointed = (self.root / LATEST).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            pointed = None
        # The pointer names the newest complete bundle; a newer directory can only
        # come from a crash between the rename and the pointer update.
        if pointed and (self.root / pointed) in candidates:
            candidates.remove(self.root / pointed)
            candidates.insert(0, self.root / pointed)
        if not candidates:
            raise ModelDirError(f"there is no checkpoint to resume from. Received: path='{self.root.parent}'")
        for bundle in candidates:
            try:
                return self._read(bundle)
            except (ModelDirError, OSError, ValueError) as exc:
                warnings.warn(f"checkpoint {bundle.name} is unusable ({exc}); trying an older one", CheckpointWarning)
        raise ModelDirError(f"every checkpoint is corrupt; nothing to resume from. Received: path='{self.root}'")

    def _read(self, bundle: Path) -> tuple[dict[str, np.ndarray], dict, str]:
        manifest = json.loads((bundle / MANIFEST_FILE).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise ModelDirError("not a textgen checkpoint")
        if manifest.get("format_version") != BUNDLE_VERSION:
            raise ModelDirError(f"checkpoint format {manifest.get('format_version')!r} is not supported")
        files = manifest.get("files", {})
        for name in BUNDLE_FILES:
            if files.get(name) != file_sha256(bundle / name):
                raise ModelDirError(f"{name} does not match its sha256")
        with np.load(bundle / STATE_FILE, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        progress = json.loads((bundle / PROGRESS_FILE).read_text(encoding="utf-8"))
        return arrays, progress, (bundle / TOKENIZER_FILE).read_text(encoding="utf-8")
