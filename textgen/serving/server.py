"""Running the API: models loaded and their loops started, a socket bound, uvicorn serving until SIGTERM.

``serve`` is what ``textgen serve`` runs. On SIGTERM (or Ctrl-C) the server
stops taking connections, lets the responses in flight finish for up to
``grace`` seconds, then stops every model's loop and returns.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Callable, Sequence

from textgen.errors import ConfigError, ServeError
from textgen.generation.batching import Batcher
from textgen.serving.api import ServedModel, ServerLimits
from textgen.serving.app import create_app


# Seconds the responses in flight may take to finish after SIGTERM.
GRACE_SECONDS = 30.0
SWITCH_INTERVAL = 0.0005


def served_name(spec: str) -> str:
    """The name a model is served under: a shipped model's name, or its directory's name."""
    return Path(spec).name or spec


def load_models(specs: Sequence[str], *, max_rows: int, chunk_tokens: int, warm_up: bool = True) -> list[ServedModel]:
    """Load each model directory (or shipped model) and make its loop; names must differ."""
    from textgen.text_model import load

    served, names = [], set()
    for spec in specs:
        name = served_name(spec)
        if name in names:
            raise ConfigError(f"two models would be served under one name; serve models whose folders have "
                              f"different names. Received: model={spec!r}")
        names.add(name)
        model = load(spec)
        batcher = Batcher(model.generator, model.tokenizer, max_rows=max_rows, chunk_tokens=chunk_tokens)
        if warm_up:
            batcher.warm_up()
        served.append(ServedModel(name, model, batcher))
    return served


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=2048)
        # Accepted connections inherit it: each event goes out at once, not after the client's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ServeError(f"cannot listen on {host}:{port}: {reason}. Received: port={port}") from None


def make_server(served: list[ServedModel], *, limits: ServerLimits = ServerLimits(), api_key: str | None = None,
                grace: float = GRACE_SECONDS):
    """The uvicorn server of the API over ``served``, not yet running (``run(sockets=[sock])`` runs it;
    setting ``should_exit`` stops it as SIGTERM does). Starts every model's loop."""
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn's server, except that a SIGTERM, once the graceful shutdown is over, is not raised again:
        the process then ends normally, exit 0, as a supervisor expects of a clean stop."""

        def handle_exit(self, sig, frame):
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM and hasattr(self, "_captured_signals"):
                self._captured_signals = [item for item in self._captured_signals if item != signal.SIGTERM]

    app = create_app(served, limits, api_key)
    for item in served:
        item.batcher.start()
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=grace, lifespan="off",
                            access_log=False)
    return GracefulServer(config)


def url_of(sock: socket.socket) -> str:
    """The http URL a listening socket answers at."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(served: list[ServedModel], sock: socket.socket, *, limits: ServerLimits = ServerLimits(),
          api_key: str | None = None, grace: float = GRACE_SECONDS,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Serve ``served`` on ``sock`` until SIGTERM or Ctrl-C; ``on_ready`` gets the URL once it listens."""
    # The event loop and each model's loop share the GIL; a thread waiting for it gets it within this many
    # seconds rather than Python's default 5 ms, so neither holds up the other's next call for long.
    sys.setswitchinterval(SWITCH_INTERVAL)
    server = make_server(served, limits=limits, api_key=api_key, grace=grace)
    # Everything loaded so far (TensorFlow, the models, the app) lives as long as the server: kept out of
    # the garbage collector's full passes, which would otherwise walk it all and stall every stream.
    gc.collect()
    gc.freeze()
    if on_ready is not None:
        original_startup = server.startup

        async def startup(sockets=None):
            await original_startup(sockets)
            on_ready(url_of(sock))

        server.startup = startup
    try:
        server.run(sockets=[sock])
    finally:
        for item in served:
            item.batcher.close(timeout=grace)
