"""The Serve deployments of `autojudge serve`: a decode replica and a FastAPI ingress.

    client --HTTP--> Ingress (FastAPI, OpenAI routes)  --handle, stream=True-->  DecodeReplica  --socket-->  engine process
                     parse / validate / SSE / errors        tokenize, detokenize, stream     models + one EngineCore

`DecodeReplica` validates and tokenizes requests and streams their tokens back; the models
and the engine core (continuous batching) live in the replica's engine process
(`engine_process.py`), which runs its cycles back to back without sharing a GIL with the
replica's event loop. A request goes to the engine as soon as it is admitted and joins the
batch at the next cycle; an aborted one (its client went away) leaves it at the next cycle
boundary. The engine sends one message per cycle with every row's new tokens; the replica's
event loop reads it as it arrives and hands each request its tokens through an
`asyncio.Queue`. `generate` is a streaming method: one chunk per cycle with the request's
new tokens, or per `stream_interval` tokens after the first (the first also carries the
prompt's tokens, the last the finish reason and the speculative stats), or one error chunk
for a refused or failed request. The engine process runs at a higher CPU priority than the
replica (`engine_nice`). A replica whose engine process dies fails its requests and its
health check, and Serve restarts it.

Bounded wait: a request is refused (503) when `max_batch` rows run and `max_waiting`
requests already wait. Above `speculation_max_batch` running + waiting rows a new request
runs without speculation (window 0), where verifying draft tokens for a large batch costs
more target compute than it saves.

`Ingress` only translates HTTP <-> replica calls (`openai_api`); it holds no model.
Metrics: the replica records the project's counters and histograms with `ray.serve.metrics`
(exported by Ray's metrics agent with Serve's own); `GET /metrics` returns this node's
Prometheus text from that agent.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures (`request: Request`) at run time.

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from ray import serve

from autojudge.actors.openai_api import (
    APIError,
    GenerateChunk,
    GenerateRequest,
    StreamFormatter,
    full_response,
    parse_chat,
    parse_completion,
    sse,
)
from autojudge.actors.engine_process import EngineConfig, EngineProcess
from autojudge.decode.engine.acceptance import MODES
from autojudge.decode.engine.core import RequestSettings
from autojudge.setup import DecodingConfig

log = logging.getLogger(__name__)

TTFT_BUCKETS = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]
ITL_BUCKETS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]


@dataclass
class ReplicaConfig:
    """What one decode replica loads and how it schedules."""

    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    """The pair, the judge (needed for mode autojudge, as the server's default or a request's) and a
    request's defaults: rule, its parameter, window, and the budget of a request without max_tokens
    (clipped to the context left) (`setup.DecodingConfig`; `autojudge serve` ships the one
    `setup.resolve_setup` checked; a window of None is the judge's, else the default)."""
    max_batch: int = 32
    """Rows decoded together by the engine core."""
    max_waiting: int = 64
    """Requests that may wait for a row; more get 503."""
    speculation_max_batch: int | None = None
    """Rows (running + waiting) above which a new request runs without speculation (None: never)."""
    model_name: str | None = None
    """Name in /v1/models and the `model` field requests must use (default: the target spec)."""
    device: str = "auto"
    """torch device; auto = cuda when the replica has a GPU, else cpu."""
    threads: int = 1
    """torch CPU threads per replica."""
    engine_nice: int = -10
    """CPU priority of the engine process relative to the replica (`EngineConfig.nice`): ahead of
    the serving path, so a burst of request handling does not delay a running cycle; 0: the same."""
    stream_interval: int = 1
    """Streaming: after the first chunk, hold a request's tokens until at least this many are ready
    (or it ends), so a long answer travels in fewer, larger chunks; 1: a chunk per engine cycle."""
    same_pair: bool = False
    """The specs name the judge's models under other names (`--same-pair`): names are not compared."""

    @property
    def served_name(self) -> str:
        return self.model_name or self.decoding.target


# --------------------------------------------------------------------------- decode replica


class TextStream:
    """Incremental detokenization: the text of a row so far, minus what must be held back.

    Stop strings are cut off (OpenAI does not return them); while the row runs, a trailing
    incomplete character and a tail that could still become a stop string are held back."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...]):
        self.tokenizer, self.stop = tokenizer, stop
        self.token_ids: list[int] = []
        self.sent = 0

    def push(self, token_ids: list[int], finished: bool) -> str:
        self.token_ids += token_ids
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        cuts = [text.find(s) for s in self.stop if s in text]
        if cuts:
            text = text[: min(cuts)]
        elif not finished:
            text = text.rstrip("\ufffd")
            hold = max((n for s in self.stop for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
            text = text[: len(text) - hold]
        delta = text[self.sent :] if len(text) > self.sent else ""
        self.sent = max(self.sent, len(text))
        return delta


@dataclass
class _Stream:
    """One request inside the replica."""

    prompt_ids: list[int]
    settings: Any  # RequestSettings
    text: TextStream
    info: dict[str, Any]  # mode / threshold / window / speculation as decided
    queue: asyncio.Queue
    arrived: float
    key: int = -1
    """The request's name in the engine process."""
    last_emit: float | None = None
    done: bool = False


class ServeMetrics:
    """The project's Prometheus metrics of one replica (names get Ray's `ray_` prefix)."""

    def __init__(self, model: str):
        from ray.serve import metrics

        tags = {"model": model}
        self.requests = metrics.Counter("autojudge_requests_total", "Requests finished, by finish reason (stop, length, abort, error).", tag_keys=("model", "finish_reason"))
        self.running = metrics.Gauge("autojudge_running_rows", "Rows the engine core decodes now.", tag_keys=("model",))
        self.waiting = metrics.Gauge("autojudge_waiting_rows", "Requests waiting for a row.", tag_keys=("model",))
        counters = {
            "emitted": ("autojudge_emitted_tokens_total", "Tokens emitted to clients."),
            "prompt": ("autojudge_prompt_tokens_total", "Prompt tokens read."),
            "target_calls": ("autojudge_target_calls_total", "Target forward passes, per request (verification cycles)."),
            "draft_tokens": ("autojudge_draft_tokens_total", "Draft tokens proposed for verification."),
            "accepted": ("autojudge_accepted_tokens_total", "Draft tokens accepted."),
        }
        self.counters = {}
        for key, (name, description) in counters.items():
            self.counters[key] = metrics.Counter(name, description, tag_keys=("model",))
        self.ttft = metrics.Histogram("autojudge_time_to_first_token_seconds", "Seconds from arrival to the first token.", boundaries=TTFT_BUCKETS, tag_keys=("model",))
        self.itl = metrics.Histogram("autojudge_inter_token_latency_seconds", "Seconds between emissions of a request, per token emitted.", boundaries=ITL_BUCKETS, tag_keys=("model",))
        for metric in (self.requests, self.running, self.waiting, *self.counters.values(), self.ttft, self.itl):
            metric.set_default_tags(dict(tags))  # (Serve adds its own tags to the dict it is given)

    def count(self, key: str, value: float) -> None:
        if value:
            self.counters[key].inc(value)


def speculative_stats(metrics: Any, info: dict[str, Any]) -> dict[str, Any]:
    """The per-request speculative block (vLLM-like): counts, rates, accepted-length histogram."""
    draft_tokens = int(metrics.draft_tokens)
    histogram = list(metrics.accepted_lengths)
    accepted = sum(n * count for n, count in enumerate(histogram))
    new_tokens = int(metrics.new_tokens)
    return {
        **info,
        "new_tokens": new_tokens,
        "target_calls": int(metrics.target_calls),
        "draft_calls": int(metrics.draft_calls),
        "draft_tokens": draft_tokens,
        "accepted_tokens": accepted,
        "tokens_per_target_call": new_tokens / metrics.target_calls if metrics.target_calls else 0.0,
        "acceptance_rate": accepted / draft_tokens if draft_tokens else 0.0,
        "accepted_length_histogram": histogram,
    }


def coalesce(chunks: list[GenerateChunk], queue: asyncio.Queue) -> GenerateChunk:
    """One chunk from `chunks` plus whatever else is queued already (a slow reader gets
    fewer, larger chunks instead of falling behind one message per cycle)."""
    while not queue.empty() and chunks[-1].finish_reason is None and chunks[-1].error is None:
        chunks.append(queue.get_nowait())
    if len(chunks) == 1:
        return chunks[0]
    last = chunks[-1]
    if last.error is not None:
        return last
    return GenerateChunk(
        token_ids=[t for c in chunks for t in c.token_ids], text="".join(c.text for c in chunks),
        finish_reason=last.finish_reason, speculative=last.speculative,
    )  # fmt: skip


class DecodeReplica:
    """One engine process (a loaded pair and one engine core), serving `generate` streams."""

    def __init__(self, config: ReplicaConfig, num_gpus: float = 0.0):
        import torch

        from autojudge.models import load_tokenizer

        self.config = config
        device = config.device
        if device == "auto":
            device = "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"
        if config.decoding.mode == "autojudge" and not config.decoding.judge:
            raise ValueError("mode autojudge needs a judge (--judge JUDGE_DIR)")
        self.tokenizer = load_tokenizer(config.decoding.target)
        self.engine = EngineProcess(
            EngineConfig(decoding=config.decoding, max_batch=config.max_batch, device=device, threads=config.threads,
                         nice=config.engine_nice)
        )
        info = self.engine.info
        if info["nice_refused"]:
            log.warning("%s", info["nice_refused"])
        self.has_judge = bool(info["has_judge"])
        self.judge_threshold: float | None = info["judge_threshold"]
        self.default_window = int(info["default_window"])
        self.context_length = int(info["context_length"])
        self.vocab_size = int(info["vocab_size"])
        self.metrics = ServeMetrics(config.served_name)
        self._streams: dict[int, _Stream] = {}  # key -> a request sent to the engine and not finished
        self._next_key = 0
        self._reading: asyncio.AbstractEventLoop | None = None  # the loop that reads the engine's messages
        self._engine_error: str | None = None  # set when the engine process is gone
        self._client_aborts = 0  # requests dropped because their caller went away
        self._refused = 0  # requests answered 503 because the queue was full
        self._peak_active = 0  # most requests running and waiting at once so far
        self._steps, self._step_s, self._row_steps = 0, 0.0, 0  # cycles run, seconds in them, rows summed over them

    def __del__(self) -> None:
        engine = self.__dict__.get("engine")
        if engine is not None:
            engine.close()

    # ------------------------------------------------------------------ small calls

    def info(self) -> dict[str, Any]:
        """Model name, context length and the server's defaults (for /v1/models, /health)."""
        modes = [mode for mode in MODES if mode != "autojudge" or self.has_judge]
        return {
            "model": self.config.served_name, "context_length": self.context_length, "modes": modes,
            "default_mode": self.config.decoding.mode, "default_window": self.default_window, "max_batch": self.config.max_batch,
            "max_waiting": self.config.max_waiting, "pid": os.getpid(),
        }  # fmt: skip

    def _rows(self) -> tuple[int, int]:
        """(running, waiting): the engine admits up to `max_batch` of the requests sent to it at its
        next cycle, the rest wait."""
        active = len(self._streams)
        return min(active, self.config.max_batch), max(0, active - self.config.max_batch)

    def engine_state(self) -> dict[str, Any]:
        """Rows running and waiting now, and the replica's counters (for tests and /debug/engine)."""
        running, waiting = self._rows()
        return {
            "running": running, "waiting": waiting,
            "aborted": self._client_aborts, "refused": self._refused, "peak_active": self._peak_active,
            "pid": os.getpid(), "engine_pid": self.engine.pid, "engine_nice": self.engine.info["nice"],
            "steps": self._steps, "step_s": round(self._step_s, 3), "row_steps": self._row_steps,
        }  # fmt: skip

    def check_health(self) -> None:
        """Serve's health check (every 2 s): a replica whose engine process is gone is restarted.
        It also re-sets the row gauges: Ray drops a gauge not set for a while from /metrics, and
        an idle server must still show 0 rows."""
        self._set_row_gauges()
        if self._engine_error is not None or not self.engine.alive():
            raise RuntimeError(self._engine_error or f"the engine process exited with code {self.engine.process.returncode}")

    def inject_fault(self, message: str) -> None:
        """Tests: the engine's next cycle raises `RuntimeError(message)`."""
        self.engine.send("fault", message)

    def inject_delay(self, seconds: float) -> None:
        """Tests: every engine cycle sleeps `seconds` first (0: none), so a request runs long enough."""
        self.engine.send("delay", seconds)

    # ------------------------------------------------------------------ generate

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateChunk]:
        """Stream of chunks: the first tokens at once, then one chunk per engine cycle, or per
        `stream_interval` tokens (a non-streaming request: one chunk at the end); the first also
        carries the prompt's tokens. A refused or failed request gets one error chunk."""
        try:
            stream = self._admit(request)
        except APIError as err:
            self.metrics.requests.inc(tags={"finish_reason": "error"})
            yield GenerateChunk(error={"status": err.status, "message": err.message, "param": err.param, "code": err.code})
            return
        self._submit(stream)
        try:
            pending: list[GenerateChunk] = []  # tokens held back until the chunk is big enough
            interval = self.config.stream_interval if request.stream else 1 << 30  # not streamed: all at the end
            first = True
            while True:
                chunk = coalesce(pending + [await stream.queue.get()], stream.queue)
                pending = []
                ends = chunk.finish_reason is not None or chunk.error is not None
                if not ends and len(chunk.token_ids) < (1 if first and request.stream else interval):
                    pending = [chunk]
                    continue
                if first and chunk.error is None:
                    chunk.prompt_tokens, chunk.prompt_token_ids, first = len(stream.prompt_ids), stream.prompt_ids, False
                yield chunk
                if ends:
                    return
        finally:
            if not stream.done:  # the client went away (or the request was cancelled)
                stream.done = True
                self._client_aborts += 1
                self._streams.pop(stream.key, None)
                self.metrics.requests.inc(tags={"finish_reason": "abort"})
                self._send("abort", stream.key)

    def _admit(self, request: GenerateRequest) -> _Stream:
        """Validate and tokenize a request (APIError for the client's mistakes, 503 when full or down)."""
        config = self.config
        if request.model is not None and request.model != config.served_name:
            raise APIError(404, f"model '{request.model}' does not exist; this server serves '{config.served_name}'", param="model", code="model_not_found")
        if self._engine_error is not None:
            raise APIError(503, f"decode replica unavailable: {self._engine_error}")
        if len(self._streams) >= config.max_batch + config.max_waiting:
            self._refused += 1
            running, waiting = self._rows()
            raise APIError(503, f"server is full: {running} requests running and {waiting} waiting (limit {config.max_waiting}); retry later", code="queue_full")
        prompt_ids = self._prompt_ids(request)
        if not prompt_ids:
            raise APIError(400, "prompt is empty (no tokens)", param="prompt")
        vocab = self.vocab_size
        if any(t < 0 or t >= vocab for t in prompt_ids):
            raise APIError(400, f"prompt token ids must be in [0, {vocab})", param="prompt")
        room = self.context_length - len(prompt_ids)
        if room < 1 or (request.max_tokens is not None and request.max_tokens > room):
            asked = request.max_tokens or 1
            raise APIError(
                400, f"this model's maximum context length is {self.context_length} tokens; the request has "
                f"{len(prompt_ids)} prompt tokens and asks for {asked} more", param="prompt" if room < 1 else "max_tokens",
                code="context_length_exceeded",
            )  # fmt: skip
        settings, info = self._settings(request, min(request.max_tokens or config.decoding.max_new_tokens, room))
        return _Stream(prompt_ids, settings, TextStream(self.tokenizer, request.stop), info, asyncio.Queue(), time.perf_counter())

    def _prompt_ids(self, request: GenerateRequest) -> list[int]:
        if request.prompt_ids is not None:
            return list(request.prompt_ids)
        if request.messages is not None:
            if not getattr(self.tokenizer, "chat_template", None):
                raise APIError(400, f"model '{self.config.served_name}' has no chat template: use /v1/completions", param="messages")
            try:
                text = self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
            except Exception as err:  # the template refuses these messages (roles, order)
                raise APIError(400, f"the chat template cannot render these messages: {err}", param="messages") from None
            return list(self.tokenizer(text, add_special_tokens=False).input_ids)
        return list(self.tokenizer(request.prompt_text or "", add_special_tokens=False).input_ids)

    def _settings(self, request: GenerateRequest, max_tokens: int) -> tuple[Any, dict[str, Any]]:
        """RequestSettings of a request and the `info` part of its speculative stats."""
        defaults = self.config.decoding
        mode = request.mode or defaults.mode
        modes = self.info()["modes"]
        if mode not in modes:
            why = " (the server has no judge: start it with --judge)" if mode == "autojudge" else ""
            raise APIError(400, f"unknown or unavailable mode '{mode}'{why}; this server offers {', '.join(modes)}", param="mode")
        threshold = request.threshold if request.threshold is not None else (defaults.threshold if mode == defaults.mode else None)
        if mode == "autojudge" and threshold is None:
            threshold = self.judge_threshold
        if mode in ("exact", "topk"):
            threshold = None  # these rules take no threshold
        window = self.default_window if request.window is None else request.window
        speculation = "on"
        if not request.speculate or window == 0:
            window, speculation = 0, "off (request)"
        limit = self.config.speculation_max_batch
        if window and limit is not None and len(self._streams) >= limit:
            window, speculation = 0, f"off (server: batch >= {limit})"
        settings = RequestSettings(
            max_new_tokens=max_tokens, mode=mode, threshold=threshold,
            top_k=defaults.top_k, fly_window=defaults.fly_window, window=window, stop_strings=request.stop,
        )  # fmt: skip
        info = {"mode": mode, "threshold": threshold, "window": window, "speculation": speculation}
        return settings, info

    # ------------------------------------------------------------------ the engine process

    def _submit(self, stream: _Stream) -> None:
        """Send an admitted request to the engine (it joins the batch at the next cycle)."""
        self._ensure_reader()
        stream.key, self._next_key = self._next_key, self._next_key + 1
        self._streams[stream.key] = stream
        self._peak_active = max(self._peak_active, len(self._streams))
        self.metrics.count("prompt", len(stream.prompt_ids))
        self._send("add", stream.key, stream.prompt_ids, stream.settings)

    def _send(self, *command: Any) -> None:
        if self._engine_error is not None:
            return
        try:
            self.engine.send(*command)
        except OSError as err:
            self._engine_gone(f"the engine process is gone ({type(err).__name__}: {err})")

    def _ensure_reader(self) -> None:
        """Read the engine's messages on this event loop as they arrive."""
        loop = asyncio.get_running_loop()
        if self._reading is not loop:
            if self._reading is not None:
                self._reading.remove_reader(self.engine.conn.fileno())
            loop.add_reader(self.engine.conn.fileno(), self._on_engine_messages)
            self._reading = loop

    def _on_engine_messages(self) -> None:
        try:
            messages = self.engine.messages()
        except (EOFError, OSError):
            self._engine_gone(f"the engine process exited (code {self.engine.process.poll()})")
            return
        for message in messages:
            try:
                self._on_engine_message(message)
            except Exception:  # a bug in delivery: fail the active requests, keep reading
                log.exception("delivering an engine message failed")
                self._fail_all("delivering tokens failed")
        self._set_row_gauges()

    def _on_engine_message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "cycle":
            _, updates, step_s = message
            now = time.perf_counter()
            self._steps, self._step_s, self._row_steps = self._steps + 1, self._step_s + step_s, self._row_steps + len(updates)
            emitted = 0
            for key, token_ids, finished, stop_reason, metrics in updates:
                stream = self._streams.get(key)
                if stream is not None:
                    self._deliver(stream, token_ids, finished, stop_reason, metrics, now)
                    emitted += len(token_ids)
            self.metrics.count("emitted", emitted)
        elif kind == "rejected":
            stream = self._streams.pop(message[1], None)
            if stream is not None:
                stream.done = True
                stream.queue.put_nowait(GenerateChunk(error={"status": 400, "message": message[2], "param": None, "code": None}))
        elif kind == "failed":
            _, keys, text = message
            self._fail(keys, text)

    def _set_row_gauges(self) -> None:
        running, waiting = self._rows()
        self.metrics.running.set(running)
        self.metrics.waiting.set(waiting)

    def _deliver(self, stream: _Stream, token_ids: list[int], finished: bool, stop_reason: str | None, metrics: Any, now: float) -> None:
        text = stream.text.push(token_ids, finished)
        n = len(token_ids)
        if n:
            if stream.last_emit is None:
                self.metrics.ttft.observe(now - stream.arrived)
            else:
                self.metrics.itl.observe((now - stream.last_emit) / n)
            stream.last_emit = now
        chunk = GenerateChunk(token_ids=token_ids, text=text)  # (token_ids: this request's own list, unpickled)
        if finished:
            stream.done = True
            del self._streams[stream.key]
            chunk.finish_reason = "length" if stop_reason == "length" else "stop"
            stats = speculative_stats(metrics, stream.info)
            chunk.speculative = stats
            self.metrics.requests.inc(tags={"finish_reason": chunk.finish_reason})
            self.metrics.count("target_calls", stats["target_calls"])
            self.metrics.count("draft_tokens", stats["draft_tokens"])
            self.metrics.count("accepted", stats["accepted_tokens"])
        stream.queue.put_nowait(chunk)

    def _fail(self, keys: list[int], message: str) -> None:
        """These requests end with a 500 error chunk."""
        for key in keys:
            stream = self._streams.pop(key, None)
            if stream is None:
                continue
            stream.done = True
            stream.queue.put_nowait(GenerateChunk(error={"status": 500, "message": message, "param": None, "code": None}))
            self.metrics.requests.inc(tags={"finish_reason": "error"})

    def _fail_all(self, message: str) -> None:
        self._fail(list(self._streams), message)

    def _engine_gone(self, message: str) -> None:
        """The engine process died: every request fails now, later ones get 503, and the health
        check makes Serve restart this replica."""
        if self._engine_error is None:
            self._engine_error = message
            log.error("%s", message)
            if self._reading is not None:
                self._reading.remove_reader(self.engine.conn.fileno())
                self._reading = None
        self._fail_all(f"decode replica failed: {message}")


# --------------------------------------------------------------------------- ingress

app = FastAPI(title="autojudge", description="OpenAI-compatible speculative decoding (AutoJudge) on Ray Serve")


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def node_metrics_text() -> str:
    """Prometheus text of this node's Ray metrics agent (Serve's metrics and the project's)."""
    import urllib.request

    import ray

    node_id = ray.get_runtime_context().get_node_id()
    node = next(n for n in ray.nodes() if n["NodeID"] == node_id)
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


@serve.ingress(app)
class Ingress:
    """HTTP <-> decode replica translation; no model and no decoding here."""

    def __init__(self, decode: Any, model_name: str):
        self.decode = decode
        self._generate_handle = decode.options(stream=True)  # made once, not per request
        self.model_name = model_name
        self._info: dict[str, Any] | None = None

    async def _replica_info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = await self.decode.info.remote()
        return self._info

    @app.get("/health")
    async def health(self) -> JSONResponse:
        try:
            info = await asyncio.wait_for(self.decode.info.remote(), timeout=10)
        except Exception as err:  # no replica answers (starting, restarting)
            return error_response(APIError(503, f"decode replica not ready: {type(err).__name__}"))
        return JSONResponse({"status": "ok", "model": info["model"]})

    @app.get("/v1/models")
    async def models(self) -> JSONResponse:
        info = await self._replica_info()
        card = {"id": info["model"], "object": "model", "created": 0, "owned_by": "autojudge", "max_model_len": info["context_length"]}
        return JSONResponse({"object": "list", "data": [card]})

    @app.get("/debug/engine")
    async def engine(self) -> JSONResponse:
        return JSONResponse(await self.decode.engine_state.remote())

    @app.get("/metrics")
    async def metrics(self) -> PlainTextResponse:
        try:
            text = await asyncio.to_thread(node_metrics_text)
        except Exception as err:
            return PlainTextResponse(f"# metrics agent unavailable: {err}\n", status_code=503)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> Any:
        return await self._generate(request, parse_completion)

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Any:
        return await self._generate(request, parse_chat)

    async def _generate(self, request: Request, parse: Any) -> Any:
        try:
            generate_request, body = parse(await request.body())
        except APIError as err:
            return error_response(err)
        stream = self._generate_handle.generate.remote(generate_request)
        try:
            first = await stream.__anext__()  # the first tokens, or the request's error
        except Exception as err:
            stream.cancel()
            return error_response(APIError(503, f"decode replica unavailable: {type(err).__name__}: {err}"))
        if first.error is not None:
            return error_response(APIError.from_dict(first.error))
        model = self.model_name
        if not body.stream:
            chunks = [first]
            try:
                while chunks[-1].finish_reason is None:  # (the replica sends a non-streaming request one chunk, at the end)
                    chunk = await stream.__anext__()
                    if chunk.error is not None:
                        return error_response(APIError.from_dict(chunk.error))
                    chunks.append(chunk)
            except Exception as err:
                return error_response(APIError(500, f"decode replica failed: {type(err).__name__}: {err}"))
            return JSONResponse(full_response(generate_request.kind, model, chunks, body.return_token_ids))
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        formatter = StreamFormatter(generate_request.kind, model, body.return_token_ids, include_usage, first)
        return StreamingResponse(self._events(stream, formatter, first), media_type="text/event-stream")

    async def _events(self, stream: Any, formatter: StreamFormatter, first: GenerateChunk) -> AsyncIterator[str]:
        """SSE text, one write per replica chunk (`first`, then the stream's); the last chunk (or an
        error) goes out with `data: [DONE]` in the same write, without waiting for the replica's end of stream."""
        finished = False

        async def chunks() -> AsyncIterator[GenerateChunk]:
            yield first
            if first.finish_reason is None:
                async for chunk in stream:
                    yield chunk

        try:
            async for chunk in chunks():
                if chunk.error is not None:
                    events = sse(APIError.from_dict(chunk.error).body())
                else:
                    events = "".join(sse(item) for item in formatter.chunks(chunk))
                if chunk.error is not None or chunk.finish_reason is not None:
                    finished = True
                    yield events + sse("[DONE]")
                    return
                yield events
            finished = True
            yield sse("[DONE]")
        except Exception as err:
            yield sse(APIError(500, f"decode replica failed: {type(err).__name__}: {err}").body()) + sse("[DONE]")
        finally:
            if not finished:
                stream.cancel()  # the client went away: the replica aborts the row


def build_app(config: ReplicaConfig, *, num_replicas: int = 1, gpus_per_replica: float = 0.0, cpus_per_replica: float = 1.0) -> Any:
    """The Serve application: Ingress bound to a DecodeReplica deployment."""
    decode = serve.deployment(
        DecodeReplica, name="DecodeReplica", num_replicas=num_replicas,
        ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
        max_ongoing_requests=config.max_batch + config.max_waiting + 16,
        health_check_period_s=2.0, health_check_timeout_s=30.0,
    )  # fmt: skip
    ingress = serve.deployment(Ingress, name="Ingress", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=10_000)
    return ingress.bind(decode.bind(config, gpus_per_replica), config.served_name)
