"""The HTTP API of ``textgen serve``: routes, request bodies, limits and errors, over one ``Batcher`` per model.

Routes: ``POST /v1/generate`` (textgen's own: every sampling setting, the
samples as ``textgen sample --format jsonl`` writes them, or server-sent
events token by token), ``POST /v1/completions`` and ``GET /v1/models``
(the subset of OpenAI's API that completion clients use), ``POST
/v1/inspect`` (the gates and states behind a text, for the page),
``GET /health``, ``GET /openapi.json`` and the page at ``/``.

Every request is checked by the same rules as ``textgen sample``
(``SampleRequest.check``) before any work; every refusal is a JSON body
``{"error": {"message", "type", "param", "code"}}`` with a 4xx status, and
the server goes on serving everyone else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.resources
import json
import threading
import time
import uuid
from typing import AsyncIterator, Literal

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from textgen.config import SampleConfig
from textgen.errors import ConfigError, TextgenError
from textgen.generation.batching import Batcher, RowUpdate
from textgen.generation.request import SampleRequest
from textgen.generation.samples import STOP_STRING

PAGE = "page.html"


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    """What one request, and the server as a whole, may ask for. Anything beyond is refused with a 4xx."""

    max_length: int = 2000  # tokens per sample
    max_requests: int = 512  # requests open at once, streaming or waiting; beyond: 429
    max_body_bytes: int = 1 << 20  # a request body's size; beyond: 413
    max_inspect_chars: int = 4000  # the text ``/v1/inspect`` traces


class ApiError(Exception):
    """A refusal: an HTTP status, and the one-line message the client reads."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.kind, "param": self.param,
                                       "code": self.code}}, status_code=self.status)


# --- request bodies: types and names here; values are checked by SampleRequest.check -------------

_STRICT = ConfigDict(extra="forbid", strict=True)


class GenerateBody(BaseModel):
    """``POST /v1/generate``: each prompt continued ``num_samples`` times, as ``textgen sample`` does."""

    model_config = _STRICT
    model: str | None = Field(None, description="A served model's name (GET /v1/models); default: the first.")
    prompt: str | list[str] = Field("", description="Text to continue, or a list of texts (one batch).")
    length: int = Field(SampleConfig.length, description="Tokens to generate per sample.")
    temperature: float = Field(SampleConfig.temperature, description="0 is greedy.")
    top_k: int = Field(0, description="Sample among the k likeliest tokens (0: off).")
    top_p: float = Field(1.0, description="Nucleus sampling mass (1: off).")
    seed: int | None = Field(None, description="0 to 2**31-1; the same seed gives the same text. Default: drawn.")
    num_samples: int = Field(1, description="Samples per prompt.")
    stop: str | list[str] | None = Field(None, description="End a sample before this text (or any of these).")
    stream: bool = Field(False, description="Send server-sent events: token, sample (each row's end), done.")


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


class CompletionBody(BaseModel):
    """``POST /v1/completions``: OpenAI's completion request; parameters textgen has no use for must keep
    their defaults. ``top_k`` is textgen's addition (``extra_body`` in OpenAI's client)."""

    model_config = _STRICT
    model: str | None = None
    prompt: str | list[str] = ""
    max_tokens: int | None = 16
    temperature: float | None = 1.0
    top_p: float | None = 1.0
    top_k: int | None = 0
    n: int | None = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    echo: bool | None = False
    user: str | None = None
    # Accepted only at their defaults, so that clients that send them explicitly still work.
    logprobs: None = None
    best_of: Literal[1] | None = None
    suffix: None = None
    presence_penalty: Literal[0] | None = None
    frequency_penalty: Literal[0] | None = None
    logit_bias: dict[str, float] | None = None


class InspectBody(BaseModel):
    """``POST /v1/inspect``: every layer's gates and states for each token of ``text``."""

    model_config = _STRICT
    model: str | None = None
    prompt: str = Field("", description="Text read before ``text``: its tokens are marked as given, the rest as "
                                        "generated.")
    text: str
    format: Literal["json", "html"] = Field("json", description="json: the values; html: inspect's report page.")


# --- the app -----------------------------------------------------------------------------------

class ServedModel:
    """A model the server serves: its name, the loaded ``TextModel`` and the ``Batcher`` its requests share."""

    def __init__(self, name: str, model, batcher: Batcher):
        self.name, self.model, self.batcher = name, model, batcher
        self.created = int(time.time())


def create_app(served: list[ServedModel], limits: ServerLimits = ServerLimits(), api_key: str | None = None) -> FastAPI:
    """The ASGI app serving ``served`` (the first is the default model). Batchers are started by the caller."""
    from textgen import __version__

    app = FastAPI(title="textgen", version=__version__, docs_url=None, redoc_url=None,
                  description="Text generation with textgen's LSTM models; continuous batching of every client.")
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    if api_key is not None:
        app.add_middleware(KeyCheck, key=api_key)
    by_name = {item.name: item for item in served}
    state = {"open": 0, "handoff": None}

    def find(name: str | None) -> ServedModel:
        if name is None:
            return served[0]
        if name not in by_name:
            raise ApiError(404, f"no model named {name!r} is served (GET /v1/models lists them). "
                                f"Received: model={name!r}", param="model", code="model_not_found")
        return by_name[name]

    @app.exception_handler(ApiError)
    async def refused(request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _validation_error(exc).response()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return importlib.resources.files(__package__).joinpath(PAGE).read_text(encoding="utf-8")

    @app.get("/health")
    async def health():
        """Whether the server is up, and how busy each model's loop is."""
        return {"status": "ok", "open_requests": state["open"],
                "models": {item.name: {"active_rows": item.batcher.active_rows} for item in served},
                "limits": dataclasses.asdict(limits)}

    @app.get("/v1/models")
    async def list_models():
        """The served models, in OpenAI's list format, with each one's size and validation loss."""
        return {"object": "list", "data": [_model_card(item) for item in served]}

    @app.post("/v1/generate")
    async def generate(body: GenerateBody):
        """Generate; with ``stream``, as server-sent events (``token``, ``sample`` per row, then ``done``)."""
        target = find(body.model)
        request = _checked(target, limits, body.prompt, body.stop, length=body.length, temperature=body.temperature,
                           top_k=body.top_k, top_p=body.top_p, seed=body.seed, num_samples=body.num_samples)
        updates = _admitted(state, limits, target, request)
        if body.stream:
            return _EventStream(_generate_events(target, request, updates), updates)
        samples = await _collect(updates)
        return {"model": target.name, "seed": request.settings.seed,
                "samples": [sample.to_dict() for sample in samples]}

    @app.post("/v1/completions")
    async def completions(body: CompletionBody):
        """OpenAI's completions: ``choices`` prompt by prompt, ``n`` each; streamed as ``data:`` chunks."""
        target = find(body.model)
        if body.logit_bias:
            raise ApiError(400, "logit_bias is not supported. Received: logit_bias=...", param="logit_bias")
        request = _checked(target, limits, body.prompt, body.stop, length=_default(body.max_tokens, 16),
                           temperature=_default(body.temperature, 1.0), top_k=_default(body.top_k, 0),
                           top_p=_default(body.top_p, 1.0), seed=body.seed, num_samples=_default(body.n, 1))
        updates = _admitted(state, limits, target, request)
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": target.name, "system_fingerprint": f"seed-{request.settings.seed}"}
        usage_wanted = body.stream_options is not None and body.stream_options.include_usage
        if body.stream:
            return _EventStream(_completion_chunks(target, request, updates, head, bool(body.echo), usage_wanted),
                                updates)
        samples = await _collect(updates)
        choices = [{"text": (sample.prompt if body.echo else "") + sample.text, "index": sample.index,
                    "logprobs": None, "finish_reason": _finish_reason(sample)} for sample in samples]
        return {**head, "choices": choices, "usage": _usage(target, request, samples)}

    @app.post("/v1/inspect")
    async def inspect(body: InspectBody):
        """Every layer's gates and states for each token of ``text`` (the page's gate view)."""
        from textgen.lab.inspect import render_html, view_json

        target = find(body.model)
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

    return app


def _default(value, default):
    """OpenAI's clients may send null for a parameter: it means the default."""
    return default if value is None else value


def _validation_error(exc: RequestValidationError) -> ApiError:
    """The first problem pydantic found, as one line naming the field."""
    error = exc.errors()[0]
    location = [str(part) for part in error.get("loc", ()) if part != "body"]
    field = ".".join(location) or None
    kind = error.get("type", "")
    if kind == "json_invalid":
        return ApiError(400, f"the body is not valid JSON: {error.get('ctx', {}).get('error', error.get('msg'))}")
    received = json.dumps(error.get("input"), default=str)[:80]
    if kind == "extra_forbidden":
        return ApiError(400, f"unknown field {field!r}. Received: {field}={received}", param=field)
    if kind == "missing" and not location:
        return ApiError(400, "the body must be a JSON object")
    if not location:
        return ApiError(400, f"the body must be a JSON object, sent with 'Content-Type: application/json'. "
                             f"Received: body={received}")
    return ApiError(400, f"{field}: {error.get('msg', 'invalid').lower()}. Received: {field}={received}", param=field)


def _checked(target: ServedModel, limits: ServerLimits, prompt, stop, **settings) -> SampleRequest:
    """The request as ``textgen sample`` checks it, plus the server's own limit on length."""
    length = settings["length"]
    if isinstance(length, int) and length > limits.max_length:
        raise ApiError(400, f"length must be at most {limits.max_length} on this server. Received: length={length}",
                       param="length")
    try:
        return SampleRequest.check(prompt, stop, vocab_size=target.model.config.vocab_size, **settings)
    except ConfigError as exc:
        message = str(exc)
        param = message.rsplit("Received: ", 1)[-1].split("=", 1)[0] if "Received: " in message else None
        raise ApiError(400, message, param=param) from None


class _Updates:
    """A request admitted to a model's loop: its updates arrive on an asyncio queue until every row has ended.

    Counted among the server's open requests from admission until ``release``,
    which also takes its rows out of the loop if they are still running (the
    client left, or the response failed).
    """

    def __init__(self, state: dict, target: ServedModel, request: SampleRequest):
        self.state, self.target, self.request = state, target, request
        self.queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        if state.get("handoff") is None or state["handoff"].loop is not loop:
            state["handoff"] = _Handoff(loop)
        handoff = state["handoff"]

        def listen(items):
            handoff.put(self.queue, items)

        try:
            self.ticket = target.batcher.submit(request, listen)
        except TextgenError as exc:  # a prompt the tokenizer refuses
            raise ApiError(400, str(exc), param="prompt") from None
        state["open"] += 1
        self.released = False

    async def __aiter__(self) -> AsyncIterator[list[RowUpdate]]:
        remaining = len(self.request.rows)
        try:
            while remaining:
                items = await self.queue.get()
                if isinstance(items, BaseException):
                    raise ApiError(500, f"generation failed: {items}", kind="server_error")
                remaining -= sum(item.sample is not None for item in items)
                yield items
        finally:
            self.release()

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.state["open"] -= 1
            if not self.ticket.done.is_set():
                self.target.batcher.cancel(self.ticket)


class _Handoff:
    """Updates from a model's loop thread to the event loop's queues, with one wake-up of the event loop per
    call of the loop rather than one per request: every request's updates of one call arrive together."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.pending: list = []
        self.lock = threading.Lock()

    def put(self, queue: asyncio.Queue, items) -> None:
        with self.lock:
            self.pending.append((queue, items))
            wake = len(self.pending) == 1
        if wake:
            try:
                self.loop.call_soon_threadsafe(self.deliver)
            except RuntimeError:  # the event loop has closed: nobody is listening any more
                pass

    def deliver(self) -> None:
        with self.lock:
            pending, self.pending = self.pending, []
        for queue, items in pending:
            queue.put_nowait(items)


def _admitted(state: dict, limits: ServerLimits, target: ServedModel, request: SampleRequest) -> _Updates:
    """Submit the request to the model's loop, or refuse it (429) when the server holds as many as it may."""
    if state["open"] >= limits.max_requests:
        raise ApiError(429, f"the server is serving as many requests as it may ({limits.max_requests}); try again "
                            f"shortly. Received: open_requests={state['open']}", kind="rate_limit_error",
                       code="too_many_requests")
    return _Updates(state, target, request)


async def _collect(updates: _Updates) -> list:
    samples = {}
    async for items in updates:
        samples.update({item.index: item.sample for item in items if item.sample is not None})
    return [samples[index] for index in sorted(samples)]


class _EventStream(StreamingResponse):
    """Server-sent events whose request is released however the response ends: finished, failed, or the
    client gone (then its rows leave the loop at the next call)."""

    def __init__(self, events: AsyncIterator[str], updates: _Updates):
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.updates = updates

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
            self.updates.release()


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
            return await refusal.response()(scope, receive, send)
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
            return await too_large.response()(scope, receive, send)
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
                return await too_large.response()(scope, receive, send)
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)




def _event(name: str | None, data) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (f"event: {name}\n" if name else "") + f"data: {payload}\n\n"


async def _generate_events(target: ServedModel, request: SampleRequest, updates: _Updates) -> AsyncIterator[str]:
    try:
        async for items in updates:
            for item in items:
                if item.text:
                    yield _event("token", {"index": item.index, "text": item.text})
                if item.sample is not None:
                    yield _event("sample", item.sample.to_dict())
        yield _event("done", {"model": target.name, "seed": request.settings.seed, "samples": len(request.rows)})
    except ApiError as exc:
        yield _event("error", {"error": {"message": exc.message, "type": exc.kind}})


async def _completion_chunks(target: ServedModel, request: SampleRequest, updates: _Updates, head: dict, echo: bool,
                             usage_wanted: bool) -> AsyncIterator[str]:
    def chunk(index, text, finish_reason=None):
        return {**head, "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}]}

    try:
        if echo:
            for index, prompt in enumerate(request.rows):
                yield _event(None, chunk(index, prompt))
        samples = []
        async for items in updates:
            for item in items:
                if item.text:
                    yield _event(None, chunk(item.index, item.text))
                if item.sample is not None:
                    samples.append(item.sample)
                    yield _event(None, chunk(item.index, "", _finish_reason(item.sample)))
        if usage_wanted:
            yield _event(None, {**head, "choices": [], "usage": _usage(target, request, samples)})
        yield _event(None, "[DONE]")
    except ApiError as exc:
        yield _event(None, {"error": {"message": exc.message, "type": exc.kind}})


def _finish_reason(sample) -> str:
    return "stop" if sample.stop_reason == STOP_STRING else "length"


def _usage(target: ServedModel, request: SampleRequest, samples) -> dict:
    tokenizer = target.model.tokenizer
    prompt_tokens = sum(len(tokenizer.encode_prompt(prompt)) if prompt else 0 for prompt in request.prompts)
    completion_tokens = sum(len(sample.token_ids) for sample in samples)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _model_card(item: ServedModel) -> dict:
    metrics = item.model.manifest.get("metrics") if isinstance(item.model.manifest, dict) else None
    best = metrics.get("best") if isinstance(metrics, dict) else None
    val_loss = best.get("val_loss") if isinstance(best, dict) else None
    config = item.model.config
    return {"id": item.name, "object": "model", "created": item.created, "owned_by": "textgen",
            "textgen": {"cell": config.cell, "layers": config.layers, "units": config.units,
                        "vocab_size": config.vocab_size, "tokenizer": item.model.tokenizer.level,
                        "val_loss": val_loss if isinstance(val_loss, (int, float)) else None}}
