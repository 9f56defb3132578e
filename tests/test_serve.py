"""`autojudge serve` end to end: a real Ray Serve app on loopback, called with the `openai`
client and with raw HTTP.

One server per module (toy pair, a random logistic judge for mode autojudge, max batch 16,
8 waiting). Every response in exact mode is compared token for token with the target's own
`generate(do_sample=False)`; bad input and faults are followed by a normal request.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from autojudge.actors.openai_api import APIError, parse_chat, parse_completion
from autojudge.actors.server import ReplicaConfig, TextStream
from autojudge.cli import main
from autojudge.models import eos_token_ids, load_model, load_tokenizer, tokenizer_fingerprint
from autojudge.setup import DecodingConfig
from tests.helpers import wait_until
from autojudge.toy.world import generate_problems

torch.set_num_threads(1)
MODEL = "toy:target"
MAX_BATCH, MAX_WAITING = 16, 8
SPECULATION_MAX_BATCH = 8  # a request arriving when 8 rows run or wait decodes without speculation


# --------------------------------------------------------------------------- no server


def test_parse_rejects_bad_bodies_in_openai_shape():
    cases = {
        b"{not json": "not valid JSON",
        b"[1, 2]": "JSON object",
        json.dumps({"prompt": "x", "max_tokens": "10"}).encode(): "max_tokens",
        json.dumps({"prompt": "x", "stream": "yes"}).encode(): "stream",
        json.dumps({"prompt": ""}).encode(): "empty",
        json.dumps({"prompt": []}).encode(): "empty",
        json.dumps({"prompt": "x", "temperature": 0.5}).encode(): "temperature",
        json.dumps({"prompt": "x", "n": 2}).encode(): "n must be 1",
        json.dumps({"prompt": "x", "autojudge": {"window": -1}}).encode(): "autojudge.window",
        json.dumps({"prompt": "x", "autojudge": {"colour": 1}}).encode(): "autojudge.colour",
        json.dumps({"prompt": ["a", "b"]}).encode(): "one prompt per request",
        json.dumps({"prompt": "x", "logprobs": 2}).encode(): "'logprobs' is not supported",
        json.dumps({"prompt": "x", "presence_penalty": 0.5}).encode(): "'presence_penalty' is not supported",
    }
    for body, needle in cases.items():
        with pytest.raises(APIError) as err:
            parse_completion(body)
        assert err.value.status == 400 and needle in err.value.message, (body, err.value.message)
        assert set(err.value.body()["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(APIError, match="messages"):
        parse_chat(json.dumps({"messages": []}).encode())


def test_parse_takes_speculation_settings_from_object_or_top_level():
    request, _ = parse_completion(json.dumps({"prompt": [5, 6], "mode": "topk", "window": 3, "autojudge": {"window": 2}, "unknown": 1}).encode())
    assert (request.prompt_ids, request.mode, request.window, request.speculate) == ([5, 6], "topk", 2, True)
    request, _ = parse_chat(json.dumps({"messages": [{"role": "user", "content": "hi"}], "speculate": False, "stop": "x", "temperature": 0}).encode())
    assert request.speculate is False and request.stop == ("x",) and request.messages[0]["content"] == "hi"


def test_text_stream_holds_back_stop_strings_and_cuts_them():
    tokenizer = load_tokenizer(MODEL)
    ids = tokenizer("So he has 12 apples.\n#### 12", add_special_tokens=False).input_ids
    stream = TextStream(tokenizer, ("####",))
    pieces = [stream.push([token], finished=False) for token in ids]
    assert "".join(pieces) == "So he has 12 apples.\n"  # nothing of the stop string leaks
    plain = TextStream(tokenizer, ())
    assert "".join(plain.push([t], False) for t in ids) == tokenizer.decode(ids)


@pytest.mark.parametrize("argv,message", [
    (["--mode", "autojudge"], "needs --judge"),
    (["--mode", "sampling"], "unknown --mode"),
    (["--max-batch", "0"], "--max-batch must be >= 1"),
    (["--window", "-1"], "--window must be >= 0"),
    (["--threshold", "2"], "--threshold must be <= 1"),
    (["--stream-interval", "0"], "--stream-interval must be >= 1"),
    (["--engine-nice", "-30"], "--engine-nice must be between -20 and 19"),
    (["--judge", "/nonexistent/judge"], "/nonexistent/judge"),
    (["--target", "toy:nothing"], "toy:nothing"),
])  # fmt: skip
def test_serve_cli_rejects_bad_arguments_before_starting_anything(capsys, argv, message):
    assert main(["serve", "--port", str(free_port()), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_serve_cli_refuses_a_port_in_use(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert main(["serve", "--port", str(sock.getsockname()[1])]) == 2
    assert "cannot listen there" in capsys.readouterr().err


def test_a_failed_engine_cycle_fails_its_requests_and_the_replica_keeps_serving():
    """The decode replica in this process (no Serve) with its real engine process: a cycle that
    raises (fault injected into the engine process) answers 500 to the requests in it, and a fresh
    engine core serves the next request."""
    import asyncio

    from autojudge.actors.openai_api import GenerateRequest
    from autojudge.actors.server import DecodeReplica

    replica = DecodeReplica(ReplicaConfig(max_batch=4))
    request = GenerateRequest("completion", prompt_text="Tom has 3 apples.", max_tokens=8)

    async def run() -> list[list]:
        outputs = []
        for broken in (True, False):
            if broken:
                replica.inject_fault("injected")
            outputs.append([chunk async for chunk in replica.generate(request)])
        return outputs

    try:
        failed, served = asyncio.run(run())
        assert failed[-1].error["status"] == 500 and "injected" in failed[-1].error["message"]
        assert len(served) == 1 and served[0].prompt_tokens > 0  # one chunk: not streamed
        assert served[0].finish_reason in ("stop", "length") and served[0].token_ids
        replica.check_health()  # the engine process lives on
    finally:
        replica.engine.close()


def test_stream_interval_sends_fewer_larger_chunks_with_the_same_tokens():
    """With --stream-interval N, a streamed request's first chunk comes at once, every later chunk
    but the last carries at least N tokens, and the tokens are those of a non-streamed request."""
    import asyncio

    from autojudge.actors.openai_api import GenerateRequest
    from autojudge.actors.server import DecodeReplica
    from autojudge.toy.world import generate_problems

    replica = DecodeReplica(ReplicaConfig(max_batch=4, stream_interval=8))
    question = generate_problems(1, seed=2)[0]["question"]  # a toy-world answer runs past 40 tokens
    kwargs = dict(messages=[{"role": "user", "content": question}], max_tokens=40, speculate=False)  # a token per cycle
    replica.inject_delay(0.03)  # cycles slower than the replica reads: tokens never pile up before the first chunk

    async def run() -> tuple[list, list]:
        streamed = [chunk async for chunk in replica.generate(GenerateRequest("chat", stream=True, **kwargs))]
        whole = [chunk async for chunk in replica.generate(GenerateRequest("chat", **kwargs))]
        return streamed, whole

    try:
        streamed, whole = asyncio.run(asyncio.wait_for(run(), timeout=60))
    finally:
        replica.engine.close()
    assert len(whole) == 1 and len(whole[0].token_ids) == 40
    assert [t for chunk in streamed for t in chunk.token_ids] == whole[0].token_ids
    assert len(streamed[0].token_ids) == 1 and streamed[0].prompt_tokens > 0  # the first token at once
    assert all(len(chunk.token_ids) >= 8 for chunk in streamed[1:-1]) and len(streamed) <= 1 + -(-39 // 8)
    assert "".join(chunk.text for chunk in streamed) == whole[0].text


def test_engine_process_runs_at_its_configured_priority():
    """`EngineConfig.nice` is added to the engine process's nice value before it loads (a raise is
    always allowed; a negative one needs root and is reported when refused)."""
    from autojudge.actors.engine_process import EngineConfig, EngineProcess

    engine = EngineProcess(EngineConfig(max_batch=2, nice=3))
    try:
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, engine.pid) == min(19, own + 3) == engine.info["nice"]
        assert engine.info["nice_refused"] is None
    finally:
        engine.close()


def test_a_dead_engine_process_fails_its_requests_and_the_health_check():
    """Killing the engine process (SIGKILL) ends the requests in flight with a 500, refuses new
    ones with a 503, and fails the replica's health check (so Serve restarts the replica)."""
    import asyncio

    from autojudge.actors.openai_api import GenerateRequest
    from autojudge.actors.server import DecodeReplica

    replica = DecodeReplica(ReplicaConfig(max_batch=4))
    long = GenerateRequest("completion", prompt_text="Tom has 3 apples.", max_tokens=200, stream=True, speculate=False)
    replica.inject_delay(0.05)  # the row (a few tokens to EOS) still runs when the kill lands, however loaded the machine

    async def run() -> tuple[list, list]:
        chunks = []
        async for chunk in replica.generate(long):
            chunks.append(chunk)
            if len(chunks) == 1:  # the row runs
                os.kill(replica.engine.pid, signal.SIGKILL)
        after = [chunk async for chunk in replica.generate(long)]
        return chunks, after

    try:
        chunks, after = asyncio.run(asyncio.wait_for(run(), timeout=60))
        assert chunks[-1].error["status"] == 500 and "engine process" in chunks[-1].error["message"]
        assert after[0].error["status"] == 503
        with pytest.raises(RuntimeError, match="engine process"):
            replica.check_health()
    finally:
        replica.engine.close()


def test_ingress_sends_the_last_chunk_and_done_at_once_without_waiting_for_the_stream_end():
    """The SSE writer answers `data: [DONE]` in the same write as the last chunk: a stream that
    never ends after its finishing chunk (the replica's end-of-stream message still on its way)
    does not hold the response open, and is not cancelled."""
    import asyncio

    from autojudge.actors.openai_api import GenerateChunk, StreamFormatter
    from autojudge.actors.server import Ingress

    class Stream:
        cancelled = False

        def __init__(self) -> None:
            self.chunks = [
                GenerateChunk(token_ids=[5], text="a"),
                GenerateChunk(token_ids=[6], text="b", finish_reason="stop", speculative={}),
            ]

        def __aiter__(self) -> "Stream":
            return self

        async def __anext__(self) -> GenerateChunk:
            if self.chunks:
                return self.chunks.pop(0)
            await asyncio.sleep(3600)  # the end of the stream never comes
            raise StopAsyncIteration

        def cancel(self) -> None:
            self.cancelled = True

    async def run() -> list[str]:
        stream = Stream()
        first = stream.chunks.pop(0)
        first.prompt_tokens = 3
        formatter = StreamFormatter("completion", MODEL, False, True, first)
        writes = await asyncio.wait_for(collect(Ingress._events(None, stream, formatter, first)), timeout=10)
        assert not stream.cancelled
        return writes

    async def collect(events) -> list[str]:
        return [text async for text in events]

    writes = asyncio.run(run())
    assert len(writes) == 2 and writes[1].endswith("data: [DONE]\n\n")
    events = [json.loads(line[6:]) for line in writes[1].split("\n\n") if line.startswith("data: {")]
    assert events[0]["choices"][0]["finish_reason"] == "stop" and events[1]["usage"]["completion_tokens"] == 2


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    from autojudge.judge import Judge, PairInfo

    tokenizer = load_tokenizer(MODEL)
    target, draft = load_model("toy:target"), load_model("toy:draft")
    wt, wd = target.config.hidden_size, draft.config.hidden_size
    rng = np.random.default_rng(0)
    judge = Judge(
        "logreg", "DD-DT", PairInfo("toy:target", "toy:draft", tokenizer_fingerprint(tokenizer), wt, wd),
        scaler_mean=np.zeros(wt + wd), scaler_scale=np.ones(wt + wd), coef=0.01 * rng.normal(size=wt + wd), default_threshold=0.5,  # p stays inside (0, 1)
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("judge") / "judge"
    judge.save(folder)
    return folder


@pytest.fixture(scope="module")
def server(judge_dir):
    from autojudge.pipeline.serve import ServeConfig, start_server, stop_server

    replica = ReplicaConfig(
        decoding=DecodingConfig(judge=str(judge_dir), window=4, max_new_tokens=48), max_batch=MAX_BATCH,
        max_waiting=MAX_WAITING, speculation_max_batch=SPECULATION_MAX_BATCH,
    )  # fmt: skip
    config = ServeConfig(replica=replica, port=free_port(), address="local", local_cpus=2, access_log=False)
    url = start_server(config)
    yield url
    stop_server(config.app_name)


@pytest.fixture(scope="module")
def reference():
    """Greedy continuation by the target's own generate: (prompt ids, max new tokens) -> ids."""
    target, tokenizer = load_model(MODEL), load_tokenizer(MODEL)
    eos = eos_token_ids(tokenizer, target)

    def greedy(prompt_ids: list[int], max_new_tokens: int) -> list[int]:
        ids = torch.tensor([prompt_ids])
        out = target.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                              eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        return out[0, len(prompt_ids) :].tolist()

    return greedy


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=120)


QUESTIONS = [p["question"] for p in generate_problems(20, seed=2)]


def post(url: str, body: bytes | dict, timeout: float = 120) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def check_stats(response: dict) -> dict:
    """The speculative block adds up with itself and with usage."""
    spec = response["speculative"]
    completion = response["usage"]["completion_tokens"]
    assert spec["new_tokens"] == completion
    assert spec["target_calls"] >= 1 and sum(spec["accepted_length_histogram"]) == spec["target_calls"]
    assert spec["accepted_tokens"] == sum(n * c for n, c in enumerate(spec["accepted_length_histogram"]))
    assert spec["accepted_tokens"] <= spec["draft_tokens"]
    assert spec["tokens_per_target_call"] == pytest.approx(completion / spec["target_calls"])
    assert completion <= spec["accepted_tokens"] + spec["target_calls"]  # each cycle: accepted + one target token
    return spec


def assert_serving(url: str) -> None:
    status, body = post(f"{url}/v1/completions", {"prompt": "Tom has 3 apples.", "max_tokens": 5})
    assert status == 200 and body["usage"]["completion_tokens"] >= 1, body


def test_models_and_health(server):
    models = get(f"{server}/v1/models")
    assert models["object"] == "list" and models["data"][0]["id"] == MODEL and models["data"][0]["max_model_len"] == 256
    assert get(f"{server}/health")["status"] == "ok"


def test_engine_process_runs_ahead_of_the_replica_by_default(server):
    """The default `engine_nice` (-10) puts the engine process ahead of its replica when this user
    may lower a nice value (root here and in CI); otherwise it keeps the replica's priority."""
    state = get(f"{server}/debug/engine")
    replica_nice = os.getpriority(os.PRIO_PROCESS, state["pid"])
    assert os.getpriority(os.PRIO_PROCESS, state["engine_pid"]) == state["engine_nice"]
    if os.geteuid() == 0:
        assert state["engine_nice"] == max(-20, replica_nice - 10)
    else:
        assert state["engine_nice"] <= replica_nice


def test_completion_with_openai_client_equals_target_greedy(client, reference):
    prompt = f"Question: {QUESTIONS[0]}\nAnswer:"
    response = client.completions.create(model=MODEL, prompt=prompt, max_tokens=40, temperature=0, extra_body={"return_token_ids": True})
    choice = response.choices[0].model_dump()
    assert choice["token_ids"] == reference(choice["prompt_token_ids"], 40)
    assert choice["text"] and response.usage.completion_tokens == len(choice["token_ids"])
    spec = check_stats(response.model_dump())
    assert spec["mode"] == "exact" and spec["window"] == 4 and spec["speculation"] == "on"


def test_completion_from_token_ids(server, reference):
    prompt_ids = load_tokenizer(MODEL)(QUESTIONS[1], add_special_tokens=False).input_ids
    status, body = post(f"{server}/v1/completions", {"prompt": prompt_ids, "max_tokens": 30, "return_token_ids": True})
    assert status == 200 and body["choices"][0]["token_ids"] == reference(prompt_ids, 30)


def test_chat_stream_equals_non_stream_and_target_greedy(client, reference):
    messages = [{"role": "user", "content": QUESTIONS[2]}]
    full = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=100, extra_body={"return_token_ids": True})
    choice = full.choices[0].model_dump()
    assert choice["token_ids"] == reference(choice["prompt_token_ids"], 100)
    assert choice["finish_reason"] == "stop" and "####" in choice["message"]["content"]  # the toy model answers and stops
    stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=100, stream=True,
                                            stream_options={"include_usage": True}, extra_body={"return_token_ids": True})  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    ids = [t for c in chunks if c.choices for t in c.choices[0].model_dump()["token_ids"]]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert text == choice["message"]["content"] and ids == choice["token_ids"]
    assert chunks[-1].usage.completion_tokens == len(ids) and len(chunks) > 3
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].model_dump()["speculative"]["new_tokens"] == len(ids)


def test_raw_sse_stream_format(server):
    body = {"prompt": QUESTIONS[3], "max_tokens": 20, "stream": True}
    request = urllib.request.Request(f"{server}/v1/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        lines = [line.decode().rstrip("\n") for line in response]
    events = [line for line in lines if line]
    assert all(line.startswith("data: ") for line in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    check_stats({"speculative": chunks[-1]["speculative"], "usage": {"completion_tokens": chunks[-1]["speculative"]["new_tokens"]}})


def test_sixteen_mixed_requests_in_flight_are_exact(server, reference):
    """16 requests at once: different prompt lengths, budgets, windows, speculation on/off,
    streaming or not, plus lossy ones in the same batch; every exact one equals greedy."""
    tokenizer = load_tokenizer(MODEL)

    def call(i: int) -> tuple[dict, dict]:
        question = " ".join(QUESTIONS[i : i + 1 + i % 2])  # one or two questions: prompt lengths differ
        prompt_text = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False)
        body = {"prompt": prompt_text, "max_tokens": 20 + 6 * i, "return_token_ids": True,
                "autojudge": {"window": [None, 0, 2, 6, 12][i % 5]}}  # fmt: skip
        if i % 4 == 3:  # lossy requests in the same batch
            body["autojudge"] = {"mode": "topk"} if i % 8 == 3 else {"mode": "autojudge", "threshold": 0.9}
        if i % 5 == 4:
            body["speculate"] = False
        if i % 2 == 0:
            body["stream"] = True
            return body, stream_completion(server, body)
        status, response = post(f"{server}/v1/completions", body)
        assert status == 200, response
        return body, response

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(16)))
    exact = 0
    for body, response in results:
        choice = response["choices"][0]
        spec = check_stats(response)
        if spec["mode"] == "exact":
            exact += 1
            assert choice["token_ids"] == reference(choice["prompt_token_ids"], body["max_tokens"]), body
        if body.get("speculate") is False:
            assert spec["speculation"] == "off (request)"
        if spec["speculation"].startswith("off"):
            assert spec["draft_tokens"] == 0 and spec["target_calls"] == spec["new_tokens"] and spec["window"] == 0
        assert spec["speculation"] in ("on", "off (request)", f"off (server: batch >= {SPECULATION_MAX_BATCH})")
    assert exact >= 12  # how many of the 16 overlap depends on the machine's load; the server's cut-off is pinned below


def test_a_request_arriving_at_the_speculation_batch_decodes_without_speculation():
    """With `speculation_max_batch` rows running, a new request decodes without speculation (the
    engine's cycles are slowed so the requests overlap however loaded the machine is); the first
    ones speculate."""
    import asyncio

    from autojudge.actors.openai_api import GenerateRequest
    from autojudge.actors.server import DecodeReplica

    replica = DecodeReplica(ReplicaConfig(max_batch=8, speculation_max_batch=2))
    replica.inject_delay(0.05)

    async def one(index: int) -> list:
        await asyncio.sleep(0.1 * index)  # in order: the first two still run (several 50 ms cycles each) when the third arrives
        request = GenerateRequest("completion", prompt_text=QUESTIONS[index], max_tokens=40)
        return [chunk async for chunk in replica.generate(request)]

    async def run() -> list:
        return await asyncio.gather(*(one(index) for index in range(3)))

    try:
        results = asyncio.run(asyncio.wait_for(run(), timeout=120))
    finally:
        replica.engine.close()
    speculation = [chunks[-1].speculative["speculation"] for chunks in results]
    assert speculation == ["on", "on", "off (server: batch >= 2)"], speculation


def stream_completion(url: str, body: dict) -> dict:
    """A streamed completion reassembled as a non-streamed response (text, token ids, usage, speculative)."""
    request = urllib.request.Request(f"{url}/v1/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    chunks = []
    with urllib.request.urlopen(request, timeout=120) as response:
        for line in response:
            line = line.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    choices = [c["choices"][0] for c in chunks if c["choices"]]
    ids = [t for c in choices for t in c["token_ids"]]
    choice = {"text": "".join(c["text"] for c in choices), "token_ids": ids, "prompt_token_ids": choices[0]["prompt_token_ids"],
              "finish_reason": choices[-1]["finish_reason"]}  # fmt: skip
    return {"choices": [choice], "usage": {"completion_tokens": len(ids)}, "speculative": chunks[-1]["speculative"]}


def test_per_request_mode_threshold_and_window(server, reference):
    prompt = {"messages": [{"role": "user", "content": QUESTIONS[4]}], "max_tokens": 60, "return_token_ids": True}
    status, exact = post(f"{server}/v1/chat/completions", prompt | {"autojudge": {"window": 6}})
    assert status == 200 and check_stats(exact)["window"] == 6
    assert len(exact["speculative"]["accepted_length_histogram"]) <= 7
    status, lenient = post(f"{server}/v1/chat/completions", prompt | {"autojudge": {"mode": "autojudge", "threshold": 1.0, "window": 6}})
    spec = check_stats(lenient)
    assert (spec["mode"], spec["threshold"]) == ("autojudge", 1.0)
    # tau = 1 accepts every drafted token: all cycles but a budget-cut last one accept the full window
    assert spec["accepted_length_histogram"][6] >= spec["target_calls"] - 1
    status, strict = post(f"{server}/v1/chat/completions", prompt | {"mode": "autojudge", "threshold": 0.0, "window": 6})
    assert strict["choices"][0]["token_ids"] == exact["choices"][0]["token_ids"]  # tau = 0: lossless
    status, default_tau = post(f"{server}/v1/chat/completions", prompt | {"mode": "autojudge"})
    assert status == 200 and default_tau["speculative"]["threshold"] == 0.5  # the judge's default
    for mode in ("topk", "typical", "prob"):  # the training-free lossy rules, each with its parameter
        status, lossy = post(f"{server}/v1/chat/completions", prompt | {"autojudge": {"mode": mode, "threshold": 0.2, "window": 6}})
        assert status == 200 and check_stats(lossy)["mode"] == mode, lossy
        assert lossy["speculative"]["threshold"] == (None if mode == "topk" else 0.2)


def test_stop_strings_are_cut_from_the_text(server):
    body = {"messages": [{"role": "user", "content": QUESTIONS[5]}], "max_tokens": 120, "stop": ["####"]}
    status, response = post(f"{server}/v1/chat/completions", body)
    choice = response["choices"][0]
    assert status == 200 and choice["finish_reason"] == "stop" and "####" not in choice["message"]["content"]
    assert choice["message"]["content"].strip()


BAD_REQUESTS = [
    ("/v1/completions", b'{"prompt": "x", "max_tokens": 5', 400, "not valid JSON"),
    ("/v1/completions", {"prompt": "x", "max_tokens": "five"}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "stop": 7}, 400, "stop"),
    ("/v1/completions", {"prompt": ""}, 400, "empty"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": ""}]}, 400, "no content"),
    ("/v1/completions", {"prompt": "apples " * 300}, 400, "maximum context length is 256"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 1000}, 400, "maximum context length"),
    ("/v1/completions", {"prompt": "x", "model": "gpt-17"}, 404, "does not exist"),
    ("/v1/completions", {"prompt": "x", "temperature": 0.8}, 400, "temperature must be 0"),
    ("/v1/completions", {"prompt": "x", "mode": "sampling"}, 400, "unknown or unavailable mode"),
    ("/v1/completions", {"prompt": [100000]}, 400, "token ids"),
]


@pytest.mark.parametrize("path,body,status,needle", BAD_REQUESTS, ids=[b[3] for b in BAD_REQUESTS])
def test_bad_input_is_an_openai_error_and_the_server_keeps_serving(server, path, body, status, needle):
    got, response = post(f"{server}{path}", body)
    assert got == status and needle in response["error"]["message"], response
    assert response["error"]["type"] == "invalid_request_error"
    assert_serving(server)


def test_openai_client_raises_on_bad_input(client):
    import openai

    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model=MODEL, prompt="x", temperature=1.0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2):
    value = wait_until(predicate, timeout, interval)
    if not value:
        raise AssertionError("condition not reached in time")
    return value


def open_stream(url: str, body: dict):
    """(status, response) of a streaming request, response left open (or the error JSON)."""
    request = urllib.request.Request(f"{url}/v1/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        return 200, urllib.request.urlopen(request, timeout=120)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@contextlib.contextmanager
def slow_engine(seconds: float):
    """Every engine cycle of the served replica sleeps `seconds` first: a test's 200-token request
    then runs for seconds, however fast this machine decodes (a fast engine finished it before
    the client's disconnect reached the replica)."""
    from ray import serve

    handle = serve.get_deployment_handle("DecodeReplica", app_name="autojudge")
    handle.inject_delay.remote(seconds).result()
    try:
        yield
    finally:
        handle.inject_delay.remote(0.0).result()


def test_client_disconnect_frees_its_row(server):
    before = get(f"{server}/debug/engine")["aborted"]
    with slow_engine(0.02):  # 200 tokens, one per cycle: >= 4 s
        status, response = open_stream(server, {"prompt": QUESTIONS[6], "max_tokens": 200, "speculate": False, "stream": True})
        assert status == 200
        response.readline()  # the first chunk arrived: the row runs
        assert get(f"{server}/debug/engine")["running"] == 1
        response.close()
        state = wait_for(lambda: (s := get(f"{server}/debug/engine"))["aborted"] > before and s["running"] == 0 and s)
    assert state["waiting"] == 0
    assert_serving(server)


def test_full_queue_answers_503_then_recovers(server):
    """More requests at once than rows plus queue: some get 503, and the replica never holds more
    than `max_batch + max_waiting` (its own count; how many got 200 depends on how many finished
    before the last ones arrived, which a loaded machine can stretch)."""
    body = {"prompt": QUESTIONS[7], "max_tokens": 200, "speculate": False, "stream": True}
    count = MAX_BATCH + MAX_WAITING + 16
    with slow_engine(0.005), ThreadPoolExecutor(count) as pool:  # the first requests last >= 1 s
        results = list(pool.map(lambda _: open_stream(server, body), range(count)))
    refused = [r for status, r in results if status == 503]
    accepted = [r for status, r in results if status == 200]
    try:
        assert refused and len(refused) + len(accepted) == count
        assert "server is full" in refused[0]["error"]["message"] and refused[0]["error"]["code"] == "queue_full"
        state = get(f"{server}/debug/engine")
        assert state["refused"] >= len(refused) and state["peak_active"] == MAX_BATCH + MAX_WAITING
    finally:
        for response in accepted:
            response.close()
    wait_for(lambda: (s := get(f"{server}/debug/engine"))["running"] == 0 and s["waiting"] == 0)
    assert_serving(server)


def scrape_metrics(server: str) -> dict[str, float] | None:
    """/metrics summed per project metric name (and "serve": 1 if Serve's own are there), or None
    until every project counter has been reported."""
    with urllib.request.urlopen(f"{server}/metrics", timeout=30) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("ray_autojudge_") and "{" in line:
            name = line.split("{", 1)[0]
            values[name] = values.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    values["serve"] = float(any(line.startswith("ray_serve_") for line in text.splitlines()))
    wanted = ("requests_total", "emitted_tokens_total", "target_calls_total", "draft_tokens_total", "accepted_tokens_total")
    return values if all(values.get(f"ray_autojudge_{name}", 0) > 0 for name in wanted) else None


def test_metrics_in_prometheus_text(server):
    assert_serving(server)
    values = wait_for(lambda: scrape_metrics(server), timeout=60, interval=1.0)
    assert values["serve"] == 1.0
    for name in ("running_rows", "waiting_rows", "time_to_first_token_seconds_count", "inter_token_latency_seconds_count"):
        assert f"ray_autojudge_{name}" in values

    assert values["ray_autojudge_time_to_first_token_seconds_count"] > 0
    assert values["ray_autojudge_accepted_tokens_total"] <= values["ray_autojudge_draft_tokens_total"]


@pytest.mark.slow
def test_row_gauges_stay_in_metrics_when_the_server_is_idle(server):
    """Ray drops a gauge that nobody set for ~20-30 s from /metrics; an idle replica still reports
    0 running and 0 waiting rows (it re-sets them at every health check)."""
    assert_serving(server)
    time.sleep(40)
    values = wait_for(lambda: scrape_metrics(server), timeout=30, interval=1.0)
    assert values["ray_autojudge_running_rows"] == 0 and values["ray_autojudge_waiting_rows"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("process", ["pid", "engine_pid"])
def test_killed_replica_is_restarted_and_later_requests_succeed(server, process):
    """SIGKILL the decode replica's process, or its engine process: Serve restarts the replica."""
    pid = get(f"{server}/debug/engine")[process]
    os.kill(pid, signal.SIGKILL)

    def serving_again() -> bool:
        try:
            status, body = post(f"{server}/v1/completions", {"prompt": "Tom has 3 apples.", "max_tokens": 5}, timeout=30)
        except (urllib.error.URLError, OSError):
            return False
        return status == 200

    wait_for(serving_again, timeout=180, interval=2.0)
    state = get(f"{server}/debug/engine")
    assert state["pid"] != pid and state["engine_pid"] != pid
