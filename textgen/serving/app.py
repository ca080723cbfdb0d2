"""The HTTP API of ``textgen serve``: one ASGI app over one ``Batcher`` per model.

Routes: ``POST /v1/generate`` and ``POST /v1/completions`` (answered by
``serving.generation``), ``GET /v1/models`` (OpenAI's list of models),
``POST /v1/inspect`` (the gates and states behind a text, for the page),
``GET /health``, ``GET /openapi.json`` and the page at ``/``. An API key, if
set, and the body size limit are checked before any route, as plain ASGI.

Every request is checked by the same rules as ``textgen sample`` before
any work; every refusal is a JSON body ``{"error": {"message", "type",
"param", "code"}}`` with a 4xx status (``serving.api``), and the server goes
on serving everyone else.
"""

from __future__ import annotations

import dataclasses
import importlib.resources

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse

from textgen.serving.api import ApiError, InspectBody, ServedModel, ServerLimits, find_model, validation_error
from textgen.serving.generation import DESCRIBED, GenerationRoutes
from textgen.serving.updates import Admissions

PAGE = "page.html"


def create_app(served: list[ServedModel], limits: ServerLimits = ServerLimits(), api_key: str | None = None):
    """The ASGI app serving ``served`` (the first is the default model). Batchers are started by the caller."""
    from textgen import __version__

    app = FastAPI(title="textgen", version=__version__, docs_url=None, redoc_url=None,
                  description="Text generation with textgen's LSTM models; continuous batching of every client.")
    admissions = Admissions(limits)

    @app.exception_handler(ApiError)
    async def refused(request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        refusal = validation_error(exc.errors())
        return JSONResponse(refusal.body(), status_code=refusal.status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return importlib.resources.files(__package__).joinpath(PAGE).read_text(encoding="utf-8")

    @app.get("/health")
    async def health():
        """Whether the server is up, and how busy each model's loop is."""
        return {"status": "ok", "open_requests": admissions.open,
                "models": {item.name: {"active_rows": item.batcher.active_rows} for item in served},
                "limits": dataclasses.asdict(limits)}

    @app.get("/v1/models")
    async def list_models():
        """The served models, in OpenAI's list format, with each one's size and validation loss."""
        return {"object": "list", "data": [_model_card(item) for item in served]}

    @app.post("/v1/inspect")
    async def inspect(body: InspectBody):
        """Every layer's gates and states for each token of ``text`` (the page's gate view)."""
        from textgen.lab.inspect import render_html, view_json

        target = find_model(served, body.model)
        characters = len(body.prompt) + len(body.text)
        if characters > limits.max_inspect_chars:
            raise ApiError(400, f"prompt and text may hold at most {limits.max_inspect_chars} characters together. "
                                f"Received: characters={characters}", param="text")
        trace = await run_in_threadpool(target.model.trace, body.prompt + body.text)
        if body.prompt and body.text:
            given = len(target.model.tokenizer.encode_prompt(body.prompt))
            trace = dataclasses.replace(trace, generated_from=min(given, len(trace.tokens)))
        elif body.text:
            trace = dataclasses.replace(trace, generated_from=0)
        if body.format == "html":
            return HTMLResponse(render_html(trace))
        return view_json(trace)

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                             routes=[*DESCRIBED.routes, *app.routes])
        return app.openapi_schema

    app.openapi = openapi
    answering = BodyLimit(GenerationRoutes(app, served, admissions), limit=limits.max_body_bytes)
    return answering if api_key is None else KeyCheck(answering, key=api_key)


class KeyCheck:
    """ASGI middleware: every ``/v1/`` route needs ``Authorization: Bearer KEY`` (401 without it); the page and
    ``/health`` stay open."""

    def __init__(self, app, key: str):
        self.app, self.expected = app, f"Bearer {key}".encode("latin-1")

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/") and \
                dict(scope.get("headers", ())).get(b"authorization") != self.expected:
            refusal = ApiError(401, "a valid API key is needed: send 'Authorization: Bearer KEY'",
                               kind="authentication_error", code="invalid_api_key")
            return await refusal.answer(send)
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is refused with 413, declared or streamed."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", ())).get(b"content-length", b"0")
        too_large = ApiError(413, f"the request body may hold at most {self.limit:,} bytes. "
                                  f"Received: content_length={declared.decode('latin-1')[:20]}", code="body_too_large")
        if not declared.isdigit() or int(declared) > self.limit:
            return await too_large.answer(send)
        # The body is read here, whole (it is at most ``limit`` bytes), then handed on: a body sent in
        # chunks without a declared length is refused as soon as it passes the limit.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before its body arrived
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                return await too_large.answer(send)
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)



def _model_card(item: ServedModel) -> dict:
    metrics = item.model.manifest.get("metrics") if isinstance(item.model.manifest, dict) else None
    best = metrics.get("best") if isinstance(metrics, dict) else None
    val_loss = best.get("val_loss") if isinstance(best, dict) else None
    config = item.model.config
    return {"id": item.name, "object": "model", "created": item.created, "owned_by": "textgen",
            "textgen": {"cell": config.cell, "layers": config.layers, "units": config.units,
                        "vocab_size": config.vocab_size, "tokenizer": item.model.tokenizer.level,
                        "val_loss": val_loss if isinstance(val_loss, (int, float)) else None}}
