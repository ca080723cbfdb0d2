"""The catalog of named corpora, such as ``python`` and ``tinyshakespeare``.

A name can be given wherever a corpus file or folder can. ``corpus_files``
materializes a name into files, downloading and caching them under
``cache_dir()`` when the corpus is not shipped with Python itself.
"""

from textgen.corpora.catalog import corpus_files, describe, names
from textgen.corpora.fetch import cache_dir

__all__ = ["cache_dir", "corpus_files", "describe", "names"]
