"""textgen: train stacked LSTM text generators, sample them, export them.

The public API is imported lazily so that ``textgen --help`` and
``import textgen`` stay fast and do not load TensorFlow until a model is used.
"""

__version__ = "0.1.0"

__all__ = ["load", "train", "__version__"]


def load(path):
    """Load a model directory written by ``textgen train``; see ``textgen.text_model.load``."""
    from textgen.text_model import load as _load

    return _load(path)


def train(*args, **kwargs):
    """Train a model and write its directory; see ``textgen.training.run.train``."""
    from textgen.training.run import train as _train

    return _train(*args, **kwargs)
