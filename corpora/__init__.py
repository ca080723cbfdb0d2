"""The named corpora, such as ``python`` and ``tinyshakespeare``, installed as ``textgen.corpora``.

``catalog`` says what each name is and materializes it into files; ``fetch``
downloads a file once, checks its sha256 and caches it in textgen's cache folder.
"""
