"""The errors textgen raises for problems a user can cause.

Every error carries an ``exit_code`` so the command line can turn it into one
line and a documented exit status without knowing the details:

* 1: a runtime problem (a corpus that cannot be read, a broken model directory);
* 2: a usage problem (an option value that is out of range).
"""


class TextgenError(Exception):
    """Base class for every error a user can cause. Exit code 1."""

    exit_code = 1


class ConfigError(TextgenError, ValueError):
    """A setting is out of range or of the wrong type. Exit code 2."""

    exit_code = 2


class CorpusError(TextgenError):
    """A corpus cannot be found, downloaded, decoded or is too small."""


class TokenizerError(TextgenError):
    """A tokenizer cannot be trained, or a tokenizer file is not acceptable."""


class ModelDirError(TextgenError):
    """A model directory is missing, partial, corrupt, unsafe or not ours."""


class TrainingError(TextgenError):
    """Training cannot start or cannot go on (too little data, NaN loss)."""
