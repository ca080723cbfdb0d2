"""The errors textgen raises for problems a user can cause.

Every error carries an ``exit_code`` so the command line can turn it into one
line and a documented exit status without knowing the details:

* 1: a runtime problem (a corpus that cannot be read, a broken model directory);
* 2: a usage problem (an option value that is out of range);
* 75: a distributed run lost a worker (``ClusterError``); restart with ``--resume``.
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


class ClusterError(TrainingError):
    """A distributed run lost a worker, or its workers did not all start. Exit code 75.

    75 is sysexits' EX_TEMPFAIL: restarting every worker (with ``--resume``)
    may well succeed, which a supervisor can tell from other failures.
    """

    exit_code = 75


class ReportError(TextgenError):
    """An inspection report cannot be written (its files exist, the folder is unwritable)."""


class ExperimentError(TextgenError):
    """An experiment cannot write its results (they exist, the folder is unwritable, matplotlib is missing)."""


class SampleFileError(TextgenError):
    """A prompt file cannot be read, or a sample's output file cannot be written (it exists, its folder does not)."""


class PlotError(TextgenError):
    """A plot cannot be drawn or written (the file exists, matplotlib is missing, a model has no curve)."""


class ServeError(TextgenError):
    """The server cannot start: its address cannot be listened on."""
