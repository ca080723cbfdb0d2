"""Shell completion of the values textgen knows better than the shell: model directories and corpus inputs.

Click completes commands, options and choices by itself when the shell runs
``textgen`` with ``_TEXTGEN_COMPLETE`` set (``docs/cli.md`` has the line each
shell's startup file needs). These callbacks add the arguments: a model
directory completes to folders that hold a textgen model, and a corpus input
to the named corpora and to files. They run on every Tab, so they stay in
plain Python and never load TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

from click.shell_completion import CompletionItem

from textgen.corpora import catalog


def model_directories(ctx, param, incomplete: str) -> list[CompletionItem]:
    """Folders whose path starts with ``incomplete`` and hold a textgen model, such folders one level down, and
    the names of the shipped models.

    One level down finds ``models/my-shakespeare`` from nothing typed, the
    layout the docs use, without walking a whole tree on every Tab.
    """
    from textgen.model_dir import is_model_dir, shipped_models

    folder, separator, start = incomplete.rpartition("/")
    shown = folder + separator  # the candidates keep the folder as it was typed
    found = []
    for entry in _subfolders(Path(shown or "."), start):
        if is_model_dir(entry):
            found.append(shown + entry.name)
        else:
            found.extend(f"{shown}{entry.name}/{inner.name}" for inner in _subfolders(entry, "")
                         if is_model_dir(inner))
    shipped = [CompletionItem(name, help="shipped with textgen") for name in shipped_models()
               if not separator and name.startswith(start) and not Path(name).exists()]
    return [CompletionItem(path) for path in sorted(found)] + shipped


def corpus_inputs(ctx, param, incomplete: str) -> list[CompletionItem]:
    """The named corpora that start with ``incomplete``, and the shell's own completion of files and folders."""
    # The file item comes first: bash's script starts its list afresh at a file item, then adds the names after it.
    return [CompletionItem(incomplete, type="file"),
            *(CompletionItem(name, help=catalog.describe(name)) for name in catalog.names()
              if name.startswith(incomplete))]


def _subfolders(folder: Path, start: str) -> list[Path]:
    """The folders in ``folder`` whose names start with ``start``; hidden ones only when ``start`` is."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return sorted(Path(entry.path) for entry in entries
                  if entry.name.startswith(start) and (start.startswith(".") or not entry.name.startswith("."))
                  and entry.is_dir())
