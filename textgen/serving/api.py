"""What the HTTP API of ``textgen serve`` accepts and refuses: the request bodies, the server's limits, the
refusals, and the models it serves.

Bodies name the fields and their types (pydantic, unknown fields refused,
no type coercion); values are checked by the rules ``textgen sample`` uses
(``SampleRequest.check``), so the API and the command line cannot drift
apart. Every refusal is an ``ApiError``: a 4xx status and a JSON body
``{"error": {"message", "type", "param", "code"}}`` whose message is one line.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from textgen.config import SampleConfig
from textgen.errors import ConfigError
from textgen.generation.batching import Batcher
from textgen.generation.request import SampleRequest


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

    def body(self) -> dict:
        """The JSON body of the refusal."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    async def answer(self, send) -> None:
        """Send the refusal as a whole ASGI response."""
        await send_json(send, self.status, self.body())


async def send_json(send, status: int, content, headers: list[tuple[bytes, bytes]] = ()) -> None:
    """A whole ASGI response with a JSON body, written as FastAPI writes the other routes' answers."""
    body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


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


# --- what is served ------------------------------------------------------------------------------

class ServedModel:
    """A model the server serves: its name, the loaded ``TextModel`` and the ``Batcher`` its requests share."""

    def __init__(self, name: str, model, batcher: Batcher):
        self.name, self.model, self.batcher = name, model, batcher
        self.created = int(time.time())


def find_model(served: list[ServedModel], name: str | None) -> ServedModel:
    """The served model called ``name`` (None: the first), or a 404 refusal."""
    if name is None:
        return served[0]
    for item in served:
        if item.name == name:
            return item
    raise ApiError(404, f"no model named {name!r} is served (GET /v1/models lists them). Received: model={name!r}",
                   param="model", code="model_not_found")


def or_default(value, fallback):
    """OpenAI's clients may send null for a parameter: it means the default."""
    return fallback if value is None else value


def parse_body(body_class: type[BaseModel], raw: bytes, content_type: str | None):
    """The request body ``raw`` as a ``body_class``, or a 400 refusal naming the first problem.

    The body is JSON when its Content-Type says so (``application/json`` or
    ``*+json``) or when it has none, as FastAPI reads bodies for the other routes.
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise ApiError(400, f"the body must be a JSON object, sent with 'Content-Type: application/json'. "
                            f"Received: content_type={media!r}")
    try:
        return body_class.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


def validation_error(errors: list[dict]) -> ApiError:
    """The first problem pydantic found in a body, as one line naming the field."""
    error = errors[0]
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


def checked(target: ServedModel, limits: ServerLimits, prompt, stop, **settings) -> SampleRequest:
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
