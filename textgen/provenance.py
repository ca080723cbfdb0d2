"""What produced a file: the versions of textgen and the libraries it ran on.

Recorded in every model directory's manifest, in each token cache and in
experiment results, so a number can be traced to the code that made it, and
a bug report can say which.
"""

from __future__ import annotations

import importlib
import platform

LIBRARIES = ("textgen", "tensorflow", "keras", "tokenizers", "numpy")


def library_versions(libraries: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """The versions of ``libraries`` (importing each one) and of Python, by name."""
    versions = {name: importlib.import_module(name).__version__ for name in libraries}
    versions["python"] = platform.python_version()
    return versions
