"""The OpenAI-compatible HTTP protocol of `autojudge serve`: request bodies, errors, responses.

Pure translation, no Ray and no models: the ingress deployment (`actors/server.py`)
parses a body with `parse_completion` / `parse_chat` into a `GenerateRequest` for the
decode replica, and turns the replica's `GenerateChunk`s back into OpenAI JSON with the
`*_response` / `*_chunk` builders.

Bodies are validated strictly (an int field given a string is an error, not coerced);
unknown fields are ignored, as OpenAI-compatible servers do. Every problem is an
`APIError`, rendered in the OpenAI error shape
`{"error": {"message", "type", "param", "code"}}` with a 4xx/5xx status.

Speculation is controlled per request by an `autojudge` object
(`{"mode": "exact", "threshold": 0.05, "window": 8, "speculate": false}`) or by the
same names as top-level fields (the `extra_body` of the `openai` client); the object
wins where both are given. Responses carry `usage` and a `speculative` block.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

MAX_WINDOW = 64  # largest window a request may ask for
MAX_STOP_STRINGS = 4  # as OpenAI


class APIError(Exception):
    """An error answered to the client in the OpenAI error shape."""

    def __init__(self, status: int, message: str, *, type: str | None = None, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    @classmethod
    def from_dict(cls, error: dict[str, Any]) -> "APIError":
        return cls(int(error["status"]), str(error["message"]), param=error.get("param"), code=error.get("code"))


# --------------------------------------------------------------------------- request bodies

Number = Union[StrictInt, StrictFloat]


class SpeculationOptions(BaseModel):
    """The per-request `autojudge` object (also accepted as top-level fields)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    mode: StrictStr | None = None
    threshold: Number | None = Field(default=None, ge=0.0, le=1.0)
    window: StrictInt | None = Field(default=None, ge=0, le=MAX_WINDOW)
    speculate: StrictBool | None = None


class _CommonRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    model: StrictStr | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    stop: StrictStr | list[StrictStr] | None = None
    temperature: Number | None = None
    n: StrictInt = 1
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    return_token_ids: StrictBool = False
    autojudge: SpeculationOptions | None = None
    mode: StrictStr | None = None
    threshold: Number | None = Field(default=None, ge=0.0, le=1.0)
    window: StrictInt | None = Field(default=None, ge=0, le=MAX_WINDOW)
    speculate: StrictBool | None = None


class CompletionRequest(_CommonRequest):
    prompt: StrictStr | list[StrictInt] | list[StrictStr] | list[list[StrictInt]]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: StrictStr
    content: StrictStr | list[dict[str, Any]] | None = None


class ChatRequest(_CommonRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)


@dataclass
class GenerateRequest:
    """What the ingress asks of the decode replica (one prompt, one choice)."""

    kind: Literal["completion", "chat"]
    prompt_text: str | None = None
    """Raw prompt text (completions)."""
    prompt_ids: list[int] | None = None
    """Prompt token ids (completions given ids)."""
    messages: list[dict[str, str]] | None = None
    """Chat messages, rendered by the tokenizer's chat template."""
    max_tokens: int | None = None
    """Generation budget; None: the server default, clipped to the context left."""
    stop: tuple[str, ...] = ()
    mode: str | None = None
    """Acceptance rule; None: the server's."""
    threshold: float | None = None
    window: int | None = None
    speculate: bool = True
    model: str | None = None
    stream: bool = False
    """The client streams: the replica sends every cycle's tokens; otherwise one chunk at the end."""


def _load_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise APIError(400, f"request body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise APIError(400, f"request body must be a JSON object, got {type(data).__name__}")
    return data


def _validate(model: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(part) for part in first["loc"]]
        param = loc[0] if loc else None
        where = ".".join(loc[:2]) if loc and loc[0] in ("autojudge", "messages") else param
        raise APIError(400, f"invalid field '{where}': {first['msg']}", param=param) from None


UNSUPPORTED = {  # OpenAI fields this server cannot honour: a value other than the neutral one is a 400
    "logprobs": (None, False, 0), "top_logprobs": (None, 0), "echo": (None, False), "best_of": (None, 1),
    "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0), "logit_bias": (None, {}), "suffix": (None, ""),
}  # fmt: skip


def _common_fields(request: _CommonRequest) -> dict[str, Any]:
    for name, neutral in UNSUPPORTED.items():
        value = (request.model_extra or {}).get(name)
        if not any(value == ok and type(value) is type(ok) for ok in neutral):
            raise APIError(400, f"'{name}' is not supported by this server (got {value!r})", param=name)
    if request.n != 1:
        raise APIError(400, f"n must be 1 (one choice per request), got {request.n}", param="n")
    if request.temperature not in (None, 0, 0.0):
        raise APIError(
            400, f"temperature must be 0: this server decodes greedily (no sampling yet), got {request.temperature}",
            param="temperature",
        )
    stop = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    if len(stop) > MAX_STOP_STRINGS or any(not s for s in stop):
        raise APIError(400, f"stop takes at most {MAX_STOP_STRINGS} non-empty strings", param="stop")
    options = request.autojudge or SpeculationOptions()
    pick = lambda name: getattr(options, name) if getattr(options, name) is not None else getattr(request, name)  # noqa: E731
    speculate = pick("speculate")
    return {
        "model": request.model, "max_tokens": request.max_tokens, "stop": stop, "mode": pick("mode"),
        "threshold": None if pick("threshold") is None else float(pick("threshold")), "window": pick("window"),
        "speculate": True if speculate is None else speculate, "stream": request.stream,
    }  # fmt: skip


def parse_completion(body: bytes) -> tuple[GenerateRequest, CompletionRequest]:
    """POST /v1/completions body -> the replica request and the parsed body."""
    request = _validate(CompletionRequest, _load_json(body))
    prompt = request.prompt
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        if len(prompt) != 1:
            raise APIError(400, "one prompt per request: send several requests for a batch", param="prompt")
        prompt = prompt[0]
    fields = _common_fields(request)
    if isinstance(prompt, str):
        if not prompt:
            raise APIError(400, "prompt is empty", param="prompt")
        return GenerateRequest("completion", prompt_text=prompt, **fields), request
    if not prompt:
        raise APIError(400, "prompt is empty", param="prompt")
    return GenerateRequest("completion", prompt_ids=list(prompt), **fields), request


def _message_text(message: ChatMessage) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    parts = []
    for part in message.content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise APIError(400, "only text content parts are supported", param="messages")
        parts.append(part["text"])
    return "".join(parts)


def parse_chat(body: bytes) -> tuple[GenerateRequest, ChatRequest]:
    """POST /v1/chat/completions body -> the replica request and the parsed body."""
    request = _validate(ChatRequest, _load_json(body))
    messages = [{"role": m.role, "content": _message_text(m)} for m in request.messages]
    if not any(m["content"] for m in messages):
        raise APIError(400, "messages have no content", param="messages")
    fields = _common_fields(request)
    fields["max_tokens"] = request.max_completion_tokens or request.max_tokens
    return GenerateRequest("chat", messages=messages, **fields), request


# --------------------------------------------------------------------------- replica output


@dataclass
class GenerateChunk:
    """One message of the replica's stream: the tokens of one engine cycle (or an error)."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    """Text delta (stop strings and incomplete characters held back)."""
    finish_reason: str | None = None
    """"stop" | "length" on the last chunk."""
    prompt_tokens: int = 0
    prompt_token_ids: list[int] | None = None
    """Set on the first chunk only."""
    speculative: dict[str, Any] | None = None
    """The request's speculative stats, on the last chunk."""
    error: dict[str, Any] | None = None
    """{status, message, param, code} when the request failed; the only chunk then."""


def _ids(kind: str) -> tuple[str, int]:
    return f"{'cmpl' if kind == 'completion' else 'chatcmpl'}-{uuid.uuid4().hex[:24]}", int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


def full_response(kind: str, model: str, chunks: list[GenerateChunk], return_token_ids: bool) -> dict[str, Any]:
    """The non-streaming response from all of a request's chunks."""
    response_id, created = _ids(kind)
    first, last = chunks[0], chunks[-1]
    text = "".join(c.text for c in chunks)
    token_ids = [t for c in chunks for t in c.token_ids]
    if kind == "completion":
        choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None, "finish_reason": last.finish_reason}
        obj = "text_completion"
    else:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": last.finish_reason}
        obj = "chat.completion"
    if return_token_ids:
        choice.update(token_ids=token_ids, prompt_token_ids=first.prompt_token_ids)
    return {
        "id": response_id, "object": obj, "created": created, "model": model, "choices": [choice],
        "usage": usage(first.prompt_tokens, len(token_ids)), "speculative": last.speculative,
    }  # fmt: skip


class StreamFormatter:
    """Turns a request's chunks into OpenAI streaming chunk objects (one id for the stream)."""

    def __init__(self, kind: str, model: str, return_token_ids: bool, include_usage: bool, accepted: GenerateChunk):
        """accepted: the replica's first chunk (its prompt tokens; `chunks` formats its tokens too)."""
        self.kind, self.model, self.return_token_ids, self.include_usage = kind, model, return_token_ids, include_usage
        self.id, self.created = _ids(kind)
        self.prompt_tokens = accepted.prompt_tokens
        self.prompt_token_ids = accepted.prompt_token_ids
        self.completion_tokens = 0
        self.first = True

    def _wrap(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        obj = "text_completion" if self.kind == "completion" else "chat.completion.chunk"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices, **extra}

    def chunks(self, chunk: GenerateChunk) -> list[dict[str, Any]]:
        """The streaming objects for one replica chunk (the last one also carries `speculative`)."""
        self.completion_tokens += len(chunk.token_ids)
        if self.kind == "completion":
            choice: dict[str, Any] = {"index": 0, "text": chunk.text, "logprobs": None, "finish_reason": chunk.finish_reason}
        else:
            delta: dict[str, Any] = {"content": chunk.text}
            if self.first:
                delta["role"] = "assistant"
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": chunk.finish_reason}
        if self.return_token_ids:
            choice["token_ids"] = chunk.token_ids
            if self.first:
                choice["prompt_token_ids"] = self.prompt_token_ids
        self.first = False
        out = [self._wrap([choice], **({"speculative": chunk.speculative} if chunk.finish_reason else {}))]
        if chunk.finish_reason and self.include_usage:
            out.append(self._wrap([], usage=usage(self.prompt_tokens, self.completion_tokens)))
        return out


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event line."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
