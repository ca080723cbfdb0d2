"""``textgen serve``: the HTTP API and the web page over one or more models; thin over ``textgen.serving``."""

from __future__ import annotations

import click

from textgen.cli.completion import model_directories
from textgen.cli.edge import library_errors
from textgen.cli.options import ByteSize, Duration
from textgen.config import CHUNK_TOKENS, MAX_ROWS

# Hosts that only this machine can reach.
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@click.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(), shell_complete=model_directories)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 lets other machines in (there is no authentication without "
                   "--api-key).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--api-key", envvar="TEXTGEN_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1/ "
                                                          "(also read from TEXTGEN_API_KEY).")
@click.option("--max-length", default=2000, show_default=True, type=click.IntRange(1, 100_000),
              help="Most tokens a sample may ask for.")
@click.option("--max-requests", default=512, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Requests open at once; more are refused with 429.")
@click.option("--max-rows", default=MAX_ROWS, show_default=True, type=click.IntRange(1, 4096),
              help="Rows each model's loop runs at once; requests beyond wait for rows to end.")
@click.option("--chunk-tokens", default=CHUNK_TOKENS, show_default=True, type=click.IntRange(1, 64),
              help="Tokens each row gets per call of the loop: rows join and leave between calls, and a stream's "
                   "events carry this many tokens. Fewer: lower latency; more: more tokens/s.")
@click.option("--max-body", default="1MiB", show_default=True, type=ByteSize(), help="Largest request body (413).")
@click.option("--grace", default="30s", show_default=True, type=Duration(),
              help="On SIGTERM, how long the responses in flight may take to finish.")
def serve(models, host, port, api_key, max_length, max_requests, max_rows, chunk_tokens, max_body, grace):
    """Serve MODELS (directories or shipped names) over HTTP: a web page at /, a JSON API under /v1/.

    Every client's rows share one batched generation loop per model; a request's text equals
    what `textgen sample` gives with the same settings and seed.
    """
    with library_errors():
        from textgen.serving.api import ServerLimits
        from textgen.serving.server import bind, load_models, serve as run_server

        sock = bind(host, port)  # before the models load, so a port in use is said at once
        click.echo(f"loading {', '.join(models)} and compiling the generation loop", err=True)
        served = load_models(models, max_rows=max_rows, chunk_tokens=chunk_tokens)
        limits = ServerLimits(max_length=max_length, max_requests=max_requests, max_body_bytes=max_body)

        def ready(url):
            reach = "only this machine can reach it" if host in _LOOPBACK else \
                "other machines can reach it" + ("" if api_key else "; it has no authentication (see --api-key)")
            click.echo(f"serving {', '.join(item.name for item in served)} at {url} ({reach}); "
                       f"the API is under {url}/v1/, its description at {url}/openapi.json", err=True)

        run_server(served, sock, limits=limits, api_key=api_key or None, grace=grace, on_ready=ready)
        click.echo("stopped", err=True)
