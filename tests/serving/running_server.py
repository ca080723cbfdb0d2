"""A server on loopback, in a thread of the test process: what the serving tests run against.

A module of its own, not a conftest.py: the tests import from it, and a second conftest module
would shadow tests/conftest.py's helpers.
"""

import threading

import httpx

from textgen.generation.batching import Batcher
from textgen.serving.api import ServedModel, ServerLimits
from textgen.serving.server import bind, make_server, url_of


class RunningServer:
    """``textgen serve``'s server in a thread: ``url``, ``served`` and an ``httpx.Client`` at ``client``."""

    def __init__(self, served, limits=ServerLimits(), api_key=None, grace=5.0):
        self.served = served
        self.sock = bind("127.0.0.1", 0)
        self.url = url_of(self.sock)
        self.server = make_server(served, limits=limits, api_key=api_key, grace=grace)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            threading.Event().wait(0.02)
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def close(self):
        self.client.close()
        self.server.should_exit = True
        self.thread.join(30)
        for item in self.served:
            item.batcher.close(timeout=30)


def serve_models(models: dict, **options) -> RunningServer:
    """Start a server over ``{name: TextModel}``; close it with ``.close()``."""
    served = [ServedModel(name, model, Batcher(model.generator, model.tokenizer, max_rows=options.pop("max_rows", 256),
                                                chunk_tokens=options.pop("chunk_tokens", 8)))
              for name, model in models.items()]
    return RunningServer(served, **options)
