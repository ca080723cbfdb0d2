"""The one place that imports TensorFlow and Keras, after setting them up.

textgen runs Keras on the TensorFlow backend and chooses that itself, so a
user's ``KERAS_BACKEND`` set for another project does not break it. oneDNN
kernels must be switched on before TensorFlow is imported, or they stay off on
AMD CPUs such as this project's reference machine.
"""

import importlib
import importlib.util
import os
import sys
import types

from textgen.errors import TextgenError

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

if "keras" in sys.modules and os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
    raise TextgenError(
        "keras was imported with another backend before textgen; textgen needs the TensorFlow backend. "
        f"Received: KERAS_BACKEND={os.environ.get('KERAS_BACKEND')!r}"
    )
os.environ["KERAS_BACKEND"] = "tensorflow"


class _DeferredPyplot(types.ModuleType):
    """Stands in for ``matplotlib.pyplot`` until one of its names is used, then imports it and hands over.

    Keras imports pyplot at start-up whenever matplotlib is installed, for
    image galleries textgen never draws, and executing pyplot is a noticeable
    part of every command's start. The stand-in carries the module's import
    record (``__spec__``, ``__file__``), so importing ``matplotlib.pyplot`` returns it without
    running anything; the first other name looked up imports the real module,
    which then replaces the stand-in in ``sys.modules``. Every later lookup,
    through the stand-in or not, reaches the real module.
    """

    def __init__(self, spec):
        super().__init__(spec.name)
        # What importing and module scans (autograph reads every module's __file__) look at.
        self.__spec__, self.__loader__, self.__file__ = spec, spec.loader, spec.origin
        self.__package__ = spec.parent

    def __getattr__(self, name):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


def _defer_pyplot():
    """Put the pyplot stand-in in place, if matplotlib is installed and pyplot not yet imported."""
    if "matplotlib.pyplot" in sys.modules:
        return
    try:
        spec = importlib.util.find_spec("matplotlib.pyplot")
    except ImportError:
        return
    if spec is not None:
        sys.modules["matplotlib.pyplot"] = _DeferredPyplot(spec)


def _import_quietly():
    """Import TensorFlow with its C++ start-up chatter kept off the terminal.

    TensorFlow's native code logs to file descriptor 2 before Python logging
    exists (oneDNN notices, a missing CUDA driver on CPU machines). The text is
    captured and replayed only if the import fails, so real errors still show.
    """
    import tempfile

    sys.stderr.flush()
    saved_fd = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
            import keras as keras_module

            tensorflow.config.list_physical_devices()  # device start-up logs here too
        except BaseException:
            os.dup2(saved_fd, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
    return tensorflow, keras_module


_defer_pyplot()
tf, keras = _import_quietly()

__all__ = ["tf", "keras"]
