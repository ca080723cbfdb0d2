"""The generation routes, ``POST /v1/generate`` and ``POST /v1/completions``, answered in plain ASGI.

These two routes carry nearly all of a busy server's traffic, so they do not
pass through the framework that answers the others: a request is read,
checked and admitted to its model's loop, and its response's headers sent,
in one turn of the event loop (a busy event loop makes every extra turn
wait behind the other clients' events), and a stream's updates from one call
of the loop leave in one write. A task beside the response waits for the
client to leave, so that its rows leave the loop at the next call.

``/v1/generate`` answers each sample as ``textgen sample --format jsonl``
writes it, or streams server-sent events: ``token`` (a row's new text),
``sample`` (a row has ended) and ``done``. ``/v1/completions`` is OpenAI's
completion API. ``DESCRIBED`` is what the OpenAPI description says of both.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Callable

from fastapi import APIRouter

from textgen.generation.batching import RowUpdate
from textgen.generation.request import SampleRequest
from textgen.generation.samples import STOP_STRING
from textgen.serving.api import (ApiError, CompletionBody, GenerateBody, ServedModel, checked, find_model,
                                 or_default, parse_body, send_json)
from textgen.serving.updates import Admissions, Updates

EVENT_STREAM_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no")]


class GenerationRoutes:
    """ASGI: answers the generation routes over ``served``; every other request goes on to ``app``."""

    def __init__(self, app, served: list[ServedModel], admissions: Admissions):
        self.app, self.served, self.admissions = app, served, admissions
        self.routes = {"/v1/generate": self._generate, "/v1/completions": self._completions}

    async def __call__(self, scope, receive, send):
        route = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            return await self.app(scope, receive, send)
        if scope["method"] != "POST":
            refusal = ApiError(405, f"{scope['path']} answers POST only. Received: method={scope['method']}")
            return await send_json(send, refusal.status, refusal.body(), [(b"allow", b"POST")])
        raw = await _read_body(receive)
        if raw is None:
            return  # the client left before its body arrived
        try:
            updates, answer = route(raw, _header(scope, b"content-type"))
        except ApiError as refusal:
            return await send_json(send, refusal.status, refusal.body())
        watcher = asyncio.get_running_loop().create_task(_watch_for_leaving(receive, updates))
        try:
            await answer(send)
        finally:
            watcher.cancel()
            updates.release()

    def _generate(self, raw: bytes, content_type: str | None):
        body = parse_body(GenerateBody, raw, content_type)
        target = find_model(self.served, body.model)
        request = checked(target, self.admissions.limits, body.prompt, body.stop, length=body.length,
                          temperature=body.temperature, top_k=body.top_k, top_p=body.top_p, seed=body.seed,
                          num_samples=body.num_samples)
        updates = self.admissions.admit(target, request)
        if body.stream:
            return updates, lambda send: _stream(send, updates, _GenerateEvents(target, request))

        def whole(samples):
            return {"model": target.name, "seed": request.settings.seed,
                    "samples": [sample.to_dict() for sample in samples]}

        return updates, lambda send: _answer_whole(send, updates, whole)

    def _completions(self, raw: bytes, content_type: str | None):
        body = parse_body(CompletionBody, raw, content_type)
        target = find_model(self.served, body.model)
        if body.logit_bias:
            raise ApiError(400, "logit_bias is not supported. Received: logit_bias=...", param="logit_bias")
        request = checked(target, self.admissions.limits, body.prompt, body.stop,
                          length=or_default(body.max_tokens, 16), temperature=or_default(body.temperature, 1.0),
                          top_k=or_default(body.top_k, 0), top_p=or_default(body.top_p, 1.0), seed=body.seed,
                          num_samples=or_default(body.n, 1))
        updates = self.admissions.admit(target, request)
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": target.name, "system_fingerprint": f"seed-{request.settings.seed}"}
        echo = bool(body.echo)
        if body.stream:
            usage_wanted = body.stream_options is not None and body.stream_options.include_usage
            return updates, lambda send: _stream(send, updates,
                                                 _CompletionChunks(target, request, head, echo, usage_wanted))

        def whole(samples):
            choices = [{"text": (sample.prompt if echo else "") + sample.text, "index": sample.index,
                        "logprobs": None, "finish_reason": _finish_reason(sample)} for sample in samples]
            return {**head, "choices": choices, "usage": _usage(target, request, samples)}

        return updates, lambda send: _answer_whole(send, updates, whole)


# --- answering --------------------------------------------------------------------------------

async def _answer_whole(send, updates: Updates, whole: Callable[[list], dict]) -> None:
    """Wait for every sample, then answer them in one JSON body."""
    samples = {}
    try:
        async for items in updates:
            samples.update({item.index: item.sample for item in items if item.sample is not None})
    except ApiError as failure:
        return await send_json(send, failure.status, failure.body())
    await send_json(send, 200, whole([samples[index] for index in sorted(samples)]))


async def _stream(send, updates: Updates, events) -> None:
    """Server-sent events: the headers at once, then one write per call of the loop that gave this request text."""
    await send({"type": "http.response.start", "status": 200, "headers": EVENT_STREAM_HEADERS})
    pieces = events.begin()
    try:
        async for items in updates:
            pieces += events.updates(items)
            if pieces:
                await send({"type": "http.response.body", "body": "".join(pieces).encode(), "more_body": True})
                pieces = []
        pieces += events.end()
    except ApiError as failure:
        pieces.append(_event(None if events.unnamed else "error", {"error": {"message": failure.message,
                                                                             "type": failure.kind}}))
    await send({"type": "http.response.body", "body": "".join(pieces).encode(), "more_body": False})


async def _watch_for_leaving(receive, updates: Updates) -> None:
    """Wait for the client to go; then its rows leave the loop and the response stops."""
    while (await receive())["type"] != "http.disconnect":
        pass
    updates.leave()


async def _read_body(receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _event(name: str | None, data) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (f"event: {name}\n" if name else "") + f"data: {payload}\n\n"


class _GenerateEvents:
    """``/v1/generate``'s events: ``token`` with a row's new text, ``sample`` when it ends, then ``done``."""

    unnamed = False

    def __init__(self, target: ServedModel, request: SampleRequest):
        self.target, self.request = target, request

    def begin(self) -> list[str]:
        return []

    def updates(self, items: list[RowUpdate]) -> list[str]:
        pieces = []
        for item in items:
            if item.text:
                pieces.append(_event("token", {"index": item.index, "text": item.text}))
            if item.sample is not None:
                pieces.append(_event("sample", item.sample.to_dict()))
        return pieces

    def end(self) -> list[str]:
        return [_event("done", {"model": self.target.name, "seed": self.request.settings.seed,
                                "samples": len(self.request.rows)})]


class _CompletionChunks:
    """``/v1/completions``' stream as OpenAI sends it: ``data:`` chunks of text, a finishing chunk per choice,
    the usage if asked for, then ``[DONE]``."""

    unnamed = True

    def __init__(self, target: ServedModel, request: SampleRequest, head: dict, echo: bool, usage_wanted: bool):
        self.target, self.request, self.head = target, request, head
        self.echo, self.usage_wanted = echo, usage_wanted
        self.samples = []

    def _chunk(self, index: int, text: str, finish_reason: str | None = None) -> str:
        return _event(None, {**self.head, "choices": [{"text": text, "index": index, "logprobs": None,
                                                       "finish_reason": finish_reason}]})

    def begin(self) -> list[str]:
        return [self._chunk(index, prompt) for index, prompt in enumerate(self.request.rows)] if self.echo else []

    def updates(self, items: list[RowUpdate]) -> list[str]:
        pieces = []
        for item in items:
            if item.text:
                pieces.append(self._chunk(item.index, item.text))
            if item.sample is not None:
                self.samples.append(item.sample)
                pieces.append(self._chunk(item.index, "", _finish_reason(item.sample)))
        return pieces

    def end(self) -> list[str]:
        usage = [_event(None, {**self.head, "choices": [], "usage": _usage(self.target, self.request, self.samples)})]
        return (usage if self.usage_wanted else []) + [_event(None, "[DONE]")]


def _finish_reason(sample) -> str:
    return "stop" if sample.stop_reason == STOP_STRING else "length"


def _usage(target: ServedModel, request: SampleRequest, samples) -> dict:
    tokenizer = target.model.tokenizer
    prompt_tokens = sum(len(tokenizer.encode_prompt(prompt)) if prompt else 0 for prompt in request.prompts)
    completion_tokens = sum(len(sample.token_ids) for sample in samples)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


# --- what the OpenAPI description says of these routes (GenerationRoutes answers them) -------------

DESCRIBED = APIRouter()


@DESCRIBED.post("/v1/generate", summary="Generate", operation_id="generate")
def describe_generate(body: GenerateBody):
    """Generate; with ``stream``, as server-sent events (``token``, ``sample`` per row, then ``done``)."""


@DESCRIBED.post("/v1/completions", summary="Completions", operation_id="completions")
def describe_completions(body: CompletionBody):
    """OpenAI's completions: ``choices`` prompt by prompt, ``n`` each; streamed as ``data:`` chunks."""
