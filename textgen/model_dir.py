"""The model directory: every name in it, how it is written and how it is read back.

A model directory holds::

    config.json      settings the model is rebuilt from: sections model, tokenizer, training (validated on load)
    tokenizer.json   the Hugging Face tokenizer (only structures textgen writes)
    weights.npz      float32 arrays under textgen's own weight names
    manifest.json    format version, library versions, corpus, metrics, sha256 of each file
    checkpoints/     training's bundles, to resume or continue a run (``textgen.training.checkpoints``)
    saved_model/     where ``textgen export`` writes by default
    inspect/         where ``textgen inspect`` writes its report by default (INSPECT_FILES)
    cells/           where ``textgen cells`` writes its report by default (CELLS_FILES)

Models that ship with textgen (``textgen.pretrained``: the top-level
``models/`` folder) are found by name wherever a model directory is taken
(``locate``); an existing path always wins over a name. They are read-only:
what a command would write inside a model directory goes elsewhere for them.

Its files are staged and renamed into place with the manifest last, so a crash
never leaves a mix of two models, and a directory whose save was cut short is
still an unfinished run that ``--resume`` completes. When the weights change,
what other commands derived from the old ones (``saved_model/``, the
``inspect/`` and ``cells/`` reports) is removed, so nothing stale is ever served. Reading
trusts nothing in it: no pickle, no Keras deserialization, every hash, name,
shape, link and file type is checked first. ``textgen.model_info`` describes a
checked directory for people.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.util
import io
import json
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from textgen.config import TrainConfig
from textgen.errors import ConfigError, ModelDirError
from textgen.files import bytes_sha256, file_sha256, fsync_dir, lock, write_synced
from textgen.model.settings import ModelConfig
from textgen.provenance import library_versions
from textgen.tokenization.rules import LEVELS

FORMAT = "textgen-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "weights.npz"
MANIFEST_FILE = "manifest.json"
DATA_FILES = (CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE)
CHECKPOINTS_DIR = "checkpoints"
SAVED_MODEL_DIR = "saved_model"
INSPECT_DIR = "inspect"
# The files of a ``textgen inspect`` report, in inspect/ or in any folder the user names.
INSPECT_FILES = {"html": "trace.html", "png": "trace.png", "json": "trace.json"}
CELLS_DIR = "cells"
# The files of a ``textgen cells`` report, in cells/ or in any folder the user names.
CELLS_FILES = {"html": "cells.html", "json": "cells.json"}
# The report folders, each with the files a report writes there.
REPORTS = {INSPECT_DIR: INSPECT_FILES, CELLS_DIR: CELLS_FILES}
# Outputs made from a model by other commands, inside its directory; a rewrite of the model removes them.
DERIVED = (SAVED_MODEL_DIR, *REPORTS)
MAX_JSON_BYTES = 64 * 1024 * 1024
_STAGING_PREFIX = ".tmp-model-"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What config.json holds: the model's shape, its tokenizer's level, and how it was trained."""

    model: ModelConfig
    tokenizer_level: str
    training: TrainConfig

    def to_json(self) -> bytes:
        document = {"format": FORMAT, "model": self.model.to_dict(), "tokenizer": {"level": self.tokenizer_level},
                    "training": self.training.to_dict()}
        return json.dumps(document, indent=2, sort_keys=True).encode("utf-8")


# The package that holds the shipped models: the repository's models/ folder, installed as textgen.pretrained.
SHIPPED_PACKAGE = "textgen.pretrained"
# Beside a shipped model's files: how it was made. It marks the folder as shipped, so that a
# user's own models trained into the same folder (models/ in a source checkout) are not.
RECIPE_FILE = "RECIPE.md"


def shipped_root() -> Path | None:
    """The folder of the models shipped with textgen, or None in an installation without it."""
    spec = importlib.util.find_spec(SHIPPED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else None


def shipped_models() -> dict[str, Path]:
    """The shipped models by name (the folder's name), sorted; each holds a manifest and its recipe."""
    root = shipped_root()
    if root is None or not root.is_dir():
        return {}
    return {entry.name: entry for entry in sorted(root.iterdir())
            if entry.is_dir() and (entry / MANIFEST_FILE).is_file() and (entry / RECIPE_FILE).is_file()}


def locate(model) -> Path:
    """The model directory ``model`` names: an existing path as it is, else a shipped model of that name.

    Anything else is returned as a path, for the reader to refuse with the
    names it could have been.
    """
    path = Path(model)
    if path.exists() or not isinstance(model, str):
        return path
    return shipped_models().get(model, path)


def is_shipped(path) -> bool:
    """True if ``path`` is one of the models shipped with textgen (read-only: nothing is written into it)."""
    resolved = Path(path).resolve()
    return any(resolved == shipped.resolve() for shipped in shipped_models().values())


def derived_output(model_path: Path, default_name: str, out) -> Path:
    """Where a command writes what it derives from a model: ``out``, or ``default_name`` inside the model's
    directory, which a shipped model does not allow (it is part of the installed package)."""
    if out is not None:
        return Path(out)
    if is_shipped(model_path):
        raise ModelDirError(f"{model_path.name} is a model shipped with textgen and is not written to; pass --out "
                            f"(out= in Python) to say where the output goes. Received: out=None")
    return Path(model_path) / default_name


def is_model_dir(path: Path) -> bool:
    """True if ``path`` holds a manifest that says it is a textgen model."""
    try:
        manifest = _read_json(Path(path) / MANIFEST_FILE, MANIFEST_FILE)
    except (ModelDirError, OSError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def check_destination(path, *, overwrite: bool = False) -> None:
    """Refuse, before any work, a destination whose contents would be lost.

    An empty or missing directory is fine. A textgen model, or an unfinished
    run (its checkpoints, and the files of a final save that was cut short),
    are replaced only with ``overwrite``; anything else is never touched.
    """
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise ModelDirError(f"the output path exists and is not a directory. Received: out='{path}'")
    entries = {entry.name for entry in path.iterdir() if not entry.name.startswith(".tmp-")}
    if not entries:
        return
    if is_model_dir(path):
        if not overwrite:
            raise ModelDirError(
                f"a textgen model already exists there; pass --overwrite to replace it. Received: out='{path}'")
        return
    if is_unfinished_run(path):
        if not overwrite:
            raise ModelDirError(
                f"an unfinished training run is there; pass --resume to continue it or --overwrite to start over. "
                f"Received: out='{path}'")
        return
    raise ModelDirError(
        f"refusing to write into a non-empty directory that is not a textgen model. Received: out='{path}'")


def is_unfinished_run(path: Path) -> bool:
    """True if ``path`` holds checkpoints and no model: a run still training, stopped, or cut short while saving.

    A save renames the model's files into place with its manifest last, so a
    crash part-way leaves some of them beside ``checkpoints/`` and no manifest.
    """
    entries = {entry.name for entry in Path(path).iterdir() if not entry.name.startswith(".tmp-")}
    return CHECKPOINTS_DIR in entries and entries <= {CHECKPOINTS_DIR, *DATA_FILES, *DERIVED}


@contextlib.contextmanager
def writing(path):
    """Hold the directory ``path`` for one writer (a training run) until the block ends.

    The lock is on the directory itself (no file is added to it), taken
    without waiting: another run on the same directory is refused at once with
    one line, instead of the two overwriting each other's checkpoints. The OS
    releases it if the process dies. A directory made here for the lock is
    removed again if it is still empty at the end.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ModelDirError(f"the output path exists and is not a directory. Received: out='{path}'")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ModelDirError(f"cannot write to the output directory: {exc.strerror or exc}. "
                            f"Received: out='{path}'") from None
    try:
        if not lock(descriptor, wait=False):
            raise ModelDirError(f"another textgen run is writing this model directory; wait for it to end or "
                                f"choose another --out. Received: out='{path}'")
        yield path
    finally:
        os.close(descriptor)
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()  # only if still empty


def check_writable(path: Path) -> None:
    """Fail now, not after an hour of training, if the model directory ``path`` cannot be written.

    The probe goes to ``path`` or, if it does not exist yet, to its nearest
    existing parent, so a run that fails early leaves no empty folder behind.
    """
    probe_dir = Path(path)
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    try:
        with tempfile.NamedTemporaryFile(prefix=".tmp-probe-", dir=probe_dir):
            pass
    except OSError as exc:
        raise ModelDirError(f"cannot write to the output directory: {exc.strerror or exc}. "
                            f"Received: out='{path}'") from None


def encode_weights(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive with fixed timestamps, so equal weights give equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name], np.float32), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def decode_weights(path: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Read exactly the expected float32 arrays from a weights file, checking each header before its data."""
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            expected = {name + ".npy" for name in shapes}
            if set(members) != expected:
                extra = sorted(set(members) ^ expected)
                raise ModelDirError(f"{WEIGHTS_FILE} does not hold this model's weights. Received: names={extra[:3]}")
            for name, shape in shapes.items():
                with archive.open(members[name + ".npy"]) as handle:
                    version = np.lib.format.read_magic(handle)
                    read_header = _HEADER_READERS.get(version)
                    if read_header is None:
                        raise ModelDirError(f"weight {name} has an unknown .npy version. Received: version={version}")
                    header = read_header(handle)  # (shape, fortran_order, dtype)
                    if tuple(header[0]) != tuple(shape) or header[2] != np.dtype("<f4") or header[1]:
                        raise ModelDirError(
                            f"weight {name} has the wrong shape or type for this model's settings. "
                            f"Received: shape={tuple(header[0])}, dtype={header[2]}")
                    data = handle.read(int(np.prod(shape)) * 4 + 1)
                    if len(data) != int(np.prod(shape)) * 4:
                        raise ModelDirError(f"weight {name} is truncated. Received: bytes={len(data)}")
                    array = np.frombuffer(data, dtype="<f4").reshape(shape).copy()
                if not np.all(np.isfinite(array)):
                    raise ModelDirError(f"weight {name} holds NaN or infinite values. Received: path='{path}'")
                arrays[name] = array
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ModelDirError(f"{WEIGHTS_FILE} is not a readable weights archive: {exc}. Received: path='{path}'") from None
    return arrays


def write_model_dir(path, *, settings: Settings, tokenizer_json: str, weights: dict[str, np.ndarray],
                    corpus: dict, metrics: dict, overwrite: bool = False) -> Path:
    """Write a complete model directory and return its path.

    Files are staged in a temporary folder inside ``path``, then the old
    manifest is removed, the files are renamed into place, and the new
    manifest comes last. Whatever the moment of a crash, the directory holds
    either a checked model or no manifest (an unfinished run that
    ``--resume`` completes, or a partial directory that loading refuses),
    never a mix; ``checkpoints/`` stays. Outputs derived from other weights
    (``DERIVED``) move into the staging folder before the first rename and
    go with it, so none outlives the model it was made from.
    """
    path = Path(path)
    check_destination(path, overwrite=overwrite)
    contents = {
        CONFIG_FILE: settings.to_json(),
        TOKENIZER_FILE: tokenizer_json.encode("utf-8"),
        WEIGHTS_FILE: encode_weights(weights),
    }
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "libraries": library_versions(), "corpus": corpus, "metrics": metrics,
        "files": {name: {"sha256": bytes_sha256(data), "bytes": len(data)} for name, data in contents.items()},
    }
    contents[MANIFEST_FILE] = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
    staging = None
    try:
        path.mkdir(parents=True, exist_ok=True)
        for leftover in path.glob(_STAGING_PREFIX + "*"):
            shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=path))
        for name, data in contents.items():
            write_synced(staging / name, data)
            os.chmod(staging / name, 0o644)
        if _weights_sha256(path) != manifest["files"][WEIGHTS_FILE]["sha256"]:
            _move_derived(path, staging / "derived")
        (path / MANIFEST_FILE).unlink(missing_ok=True)
        fsync_dir(path)
        for name in (*DATA_FILES, MANIFEST_FILE):
            os.replace(staging / name, path / name)
        fsync_dir(path)
    except OSError as exc:
        raise ModelDirError(f"could not write the model directory: {exc.strerror or exc}. Received: out='{path}'") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return path


def _weights_sha256(path: Path) -> str | None:
    """The sha256 of the weights the directory's manifest vouches for, or None (no model there)."""
    try:
        files = _read_json(path / MANIFEST_FILE, MANIFEST_FILE)["files"]
        return files[WEIGHTS_FILE]["sha256"]
    except (ModelDirError, OSError, KeyError, TypeError):
        return None


def _move_derived(path: Path, into: Path) -> None:
    """Move what was derived from the directory's weights out of it (into ``into``, to be removed).

    ``saved_model/`` goes whole. Of ``inspect/`` and ``cells/`` only the
    reports' own files go: a folder may hold the user's notes beside them.
    """
    into.mkdir()
    if (path / SAVED_MODEL_DIR).exists() or (path / SAVED_MODEL_DIR).is_symlink():
        os.replace(path / SAVED_MODEL_DIR, into / SAVED_MODEL_DIR)
    for folder, names in REPORTS.items():
        report = path / folder
        if report.is_dir() and not report.is_symlink():
            (into / folder).mkdir()
            for name in names.values():
                if (report / name).is_file() or (report / name).is_symlink():
                    os.replace(report / name, into / folder / name)
            if not any(report.iterdir()):
                report.rmdir()


def _regular_file(path: Path, what: str) -> os.stat_result:
    """The stat of ``path``, once it is known to be a regular file (never a FIFO, device or folder)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ModelDirError(f"the model directory is partial: {what} is missing. "
                            f"Received: path='{path.parent}'") from None
    if not stat.S_ISREG(info.st_mode):
        raise ModelDirError(f"{what} is not a regular file. Received: path='{path}'")
    return info


def _read_json(path: Path, what: str):
    if _regular_file(path, what).st_size > MAX_JSON_BYTES:
        raise ModelDirError(f"{what} is larger than {MAX_JSON_BYTES} bytes. Received: path='{path}'")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{what} is not valid JSON: {exc}. Received: path='{path}'") from None
    except RecursionError:
        raise ModelDirError(f"{what} is nested too deeply to be a textgen file. Received: path='{path}'") from None


def read_manifest(path) -> tuple[Path, dict]:
    """Check a model directory's files against its manifest; return (dir, manifest)."""
    path = locate(path)
    if not path.exists():
        names = ", ".join(shipped_models()) or "none in this installation"
        raise ModelDirError(f"no model directory there, nor a shipped model of that name (shipped: {names}). "
                            f"Received: path='{path}'")
    if not path.is_dir():
        raise ModelDirError(f"not a directory. Received: path='{path}'")
    root = path.resolve()
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.exists():
        raise ModelDirError(
            f"not a textgen model directory, or a partial one: {MANIFEST_FILE} is missing. Received: path='{path}'")
    if not manifest_path.resolve().is_relative_to(root):
        raise ModelDirError(f"{MANIFEST_FILE} is a link that points outside the model directory. Received: path='{path}'")
    manifest = _read_json(manifest_path, MANIFEST_FILE)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelDirError(f"{MANIFEST_FILE} does not describe a textgen model. Received: path='{path}'")
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelDirError(f"{MANIFEST_FILE} has no valid format_version. Received: format_version={version!r}")
    if version > FORMAT_VERSION:
        raise ModelDirError(
            f"this model was written by a newer textgen (format {version}; this textgen reads up to "
            f"{FORMAT_VERSION}); upgrade textgen. Received: format_version={version}")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(DATA_FILES):
        raise ModelDirError(f"{MANIFEST_FILE} does not list exactly {', '.join(DATA_FILES)}. Received: path='{path}'")
    for name in DATA_FILES:
        file_path = path / name
        if not file_path.exists():
            raise ModelDirError(f"the model directory is partial: {name} is missing. Received: path='{path}'")
        if not file_path.resolve().is_relative_to(root):
            raise ModelDirError(f"{name} is a link that points outside the model directory. Received: path='{path}'")
        _regular_file(file_path, name)
        expected = files[name].get("sha256") if isinstance(files[name], dict) else None
        if file_sha256(file_path) != expected:
            raise ModelDirError(
                f"{name} does not match the sha256 in {MANIFEST_FILE}: the directory is corrupt or was edited. "
                f"Received: path='{path}'")
    return path, manifest


def read_config(path: Path) -> dict:
    """The parsed config.json of a checked directory, as JSON (``read_settings`` validates it)."""
    config = _read_json(Path(path) / CONFIG_FILE, CONFIG_FILE)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelDirError(f"{CONFIG_FILE} is not a textgen config. Received: path='{path}'")
    return config


def read_settings(path: Path) -> Settings:
    """The validated settings of a checked directory: unknown sections, keys and values are refused."""
    raw = read_config(path)
    unknown = sorted(set(raw) - {"format", "model", "tokenizer", "training"})
    if unknown:
        raise ModelDirError(f"{CONFIG_FILE} has unknown sections. Received: key={unknown[0]!r}")
    try:
        model = ModelConfig.from_dict(raw.get("model"))
        training = TrainConfig.from_dict(raw.get("training", {}))
    except ConfigError as exc:
        raise ModelDirError(f"{CONFIG_FILE} has invalid settings: {exc}") from None
    level = raw.get("tokenizer", {}).get("level") if isinstance(raw.get("tokenizer"), dict) else None
    if level not in LEVELS:
        raise ModelDirError(f"{CONFIG_FILE} names no tokenizer level textgen knows. Received: level={level!r}")
    return Settings(model, level, training)


def read_text_file(path: Path, name: str) -> str:
    """A checked text file of the directory, such as tokenizer.json."""
    file_path = Path(path) / name
    if _regular_file(file_path, name).st_size > MAX_JSON_BYTES:
        raise ModelDirError(f"{name} is larger than {MAX_JSON_BYTES} bytes. Received: path='{path}'")
    try:
        return file_path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ModelDirError(f"{name} is not UTF-8 text. Received: path='{path}'") from None
