"""Serving benchmark: a closed-loop load generator against `autojudge serve` on loopback.

For each server setting and each concurrency C, C clients each send one streaming chat
request (a held-out toy-world question, greedy, budget --max-tokens), wait for its last
chunk, and send the next, until --requests-per-client requests each or --seconds have
passed (no new request after that; the ones in flight finish). Reported per level:
requests/s, completion tokens/s (over the level's wall time), p50/p95 time to first token
(request sent -> first text chunk) and inter-token latency (the gap between two chunks of a
request divided by the tokens of the later chunk, one sample per token), tokens per chunk
and p50/p95 of the chunk gap itself, and tokens per target call from the responses'
speculative stats; from the replica (`/debug/engine`), the share of wall time spent inside
`step()` and the mean rows per cycle. `--engine-level` also runs the same closed loop on the
engine core alone (no HTTP, no Ray) for comparison.

Settings (two Serve applications on one local Ray cluster, up at once, with the same server
options: --threads, --engine-nice, --stream-interval; the levels run interleaved, every
setting at one concurrency before the next concurrency, --repeats times, and each ratio to
one-at-a-time is the median over the repeats of the ratio within a repeat):
- `one-at-a-time`: the engine core with max batch 1 (requests queue and run alone), exact;
- `continuous`: the engine core with max batch --max-batch (continuous batching), exact;
- `continuous-autojudge`: the same server, requests in mode autojudge (needs --judge).

    PYTHONPATH=. python bench/serve.py                                   # toy pair, exact
    PYTHONPATH=. python bench/serve.py --settings one-at-a-time continuous --concurrency 16 --repeats 3 --stream-interval 16
    PYTHONPATH=. python bench/serve.py --judge runs/X/judge --window 8 --requests-per-client 4 --engine-level --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from autojudge.setup import DEFAULT_DRAFT, DEFAULT_TARGET, DEFAULT_WINDOW


@dataclass
class BenchConfig:
    """What to run."""

    target: str = DEFAULT_TARGET  # target model spec
    draft: str = DEFAULT_DRAFT  # draft model spec
    judge: str | None = None  # judge folder: adds the continuous-autojudge setting
    threshold: float | None = None  # autojudge tau (None: the judge's default)
    window: int = DEFAULT_WINDOW  # draft tokens per cycle, every setting
    max_batch: int = 32  # rows of the continuous-batching server
    speculation_max_batch: int = 0  # continuous server: no speculation for requests arriving at this many rows (0: never)
    concurrency: tuple[int, ...] = (1, 4, 16, 32)  # closed-loop clients per level
    requests_per_client: int = 3  # requests each client sends per level (bound in count)
    min_requests: int = 8  # at least this many requests per level (more per client at low concurrency)
    seconds: float = 60.0  # no new request after this many seconds of a level (bound in time)
    repeats: int = 1  # run every level this many times, interleaved (each repeat: every setting once); ratios: the median
    max_tokens: int = 112  # budget per request (toy answers need <= ~92)
    port: int = 8311  # HTTP port on 127.0.0.1
    settings: tuple[str, ...] = ("one-at-a-time", "continuous", "continuous-autojudge")  # which settings to run
    threads: int = 1  # torch CPU threads of each server's engine process (and of --engine-level)
    engine_nice: int = -10  # both servers: the engine process's nice increment (ReplicaConfig.engine_nice; 0: the replica's priority)
    stream_interval: int = 1  # both servers: after the first chunk, at least this many tokens per streamed chunk (1: a chunk per cycle)
    high_throughput: bool = True  # Ray Serve's high-throughput mode on the local cluster (HAProxy, gRPC); --no-high-throughput: Serve's defaults


@dataclass
class RequestRecord:
    """One request as the client saw it."""

    ttft_s: float
    latency_s: float
    tokens: int
    token_gaps: list[float] = field(default_factory=list)  # per token: chunk gap / tokens of the chunk
    target_calls: int = 0
    chunk_gaps: list[float] = field(default_factory=list)  # seconds between two text chunks of the request


@dataclass
class LevelResult:
    """One (setting, concurrency) level."""

    setting: str
    concurrency: int
    requests: int
    wall_s: float
    requests_per_s: float
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    itl_p50_ms: float
    itl_p95_ms: float
    tokens_per_target_call: float
    engine_steps: int  # engine cycles the replica ran during the level
    engine_busy: float  # fraction of the level's wall time the replica spent inside step()
    mean_batch: float  # rows per engine cycle, averaged over the level's cycles
    tokens_per_chunk: float = 0.0  # completion tokens per streamed chunk that carried tokens
    chunk_gap_p50_ms: float = 0.0  # time between two chunks of a request (what a reader waits between updates)
    chunk_gap_p95_ms: float = 0.0
    repeat: int = 0  # which of --repeats interleaved runs of this level


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def prompts(count: int) -> list[str]:
    from autojudge.toy.world import generate_problems

    return [p["question"] for p in generate_problems(count, seed=2)]


async def one_request(session: Any, url: str, question: str, config: BenchConfig, mode: str) -> RequestRecord:
    body = {
        "messages": [{"role": "user", "content": question}], "max_tokens": config.max_tokens, "stream": True,
        "return_token_ids": True, "autojudge": {"mode": mode, "window": config.window},
    }  # fmt: skip
    if mode == "autojudge" and config.threshold is not None:
        body["autojudge"]["threshold"] = config.threshold
    start = time.perf_counter()
    ttft, last, tokens, gaps, calls, chunk_gaps = None, None, 0, [], 0, []
    async with session.post(f"{url}/v1/chat/completions", json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {await response.text()}")
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            now = time.perf_counter()
            choice = chunk["choices"][0] if chunk["choices"] else None
            if choice and choice.get("token_ids"):
                n = len(choice["token_ids"])
                if ttft is None:
                    ttft = now - start
                else:
                    gaps += [(now - last) / n] * n
                    chunk_gaps.append(now - last)
                last, tokens = now, tokens + n
            if chunk.get("speculative"):
                calls = chunk["speculative"]["target_calls"]
    end = time.perf_counter()
    return RequestRecord(ttft if ttft is not None else end - start, end - start, tokens, gaps, calls, chunk_gaps)


async def run_level(url: str, setting: str, concurrency: int, config: BenchConfig, questions: list[str], repeat: int = 0) -> LevelResult:
    import aiohttp

    mode = "autojudge" if setting.endswith("autojudge") else "exact"
    per_client = max(config.requests_per_client, -(-config.min_requests // concurrency))
    records: list[RequestRecord] = []
    counter = iter(range(10**9))
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        await one_request(session, url, questions[-1], config, mode)  # warm-up
        async with session.get(f"{url}/debug/engine") as response:
            engine_before = await response.json()
        start = time.perf_counter()

        async def client() -> None:
            for _ in range(per_client):
                if time.perf_counter() - start > config.seconds:
                    return
                question = questions[next(counter) % (len(questions) - 1)]
                records.append(await one_request(session, url, question, config, mode))

        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - start
        async with session.get(f"{url}/debug/engine") as response:
            engine_after = await response.json()
    tokens = sum(r.tokens for r in records)
    gaps = [g for r in records for g in r.token_gaps]
    ttfts = [r.ttft_s for r in records]
    calls = sum(r.target_calls for r in records)
    chunk_gaps = [g for r in records for g in r.chunk_gaps]
    chunks = sum(len(r.chunk_gaps) + (r.tokens > 0) for r in records)
    return LevelResult(
        setting, concurrency, len(records), round(wall, 2), round(len(records) / wall, 2), round(tokens / wall, 1),
        round(1000 * statistics.median(ttfts), 1), round(1000 * percentile(ttfts, 0.95), 1),
        round(1000 * statistics.median(gaps), 2) if gaps else float("nan"), round(1000 * percentile(gaps, 0.95), 2),
        round(tokens / calls, 2) if calls else 0.0,
        engine_after["steps"] - engine_before["steps"], round((engine_after["step_s"] - engine_before["step_s"]) / wall, 2),
        round((engine_after["row_steps"] - engine_before["row_steps"]) / max(1, engine_after["steps"] - engine_before["steps"]), 1),
        round(tokens / max(chunks, 1), 1), round(1000 * statistics.median(chunk_gaps), 1) if chunk_gaps else float("nan"),
        round(1000 * percentile(chunk_gaps, 0.95), 1), repeat,
    )  # fmt: skip


def engine_level(config: BenchConfig, questions: list[str], concurrency: int, max_batch: int) -> tuple[float, float]:
    """The same closed loop without HTTP: the engine core in this process, a new request added as
    soon as one finishes. Returns (tokens/s, rows per cycle) for the same request count as a level."""
    import torch

    from autojudge.decode.engine.core import EngineCore, RequestSettings

    torch.set_num_threads(config.threads)
    pair = decoding_setup(config).load_pair()
    tokenizer = pair.tokenizer
    core = EngineCore.for_pair(pair, default_window=config.window, max_batch=max_batch)
    settings = RequestSettings(max_new_tokens=config.max_tokens, window=config.window)
    total = concurrency * max(config.requests_per_client, -(-config.min_requests // concurrency))
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True) for q in questions]
    ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    core.generate(ids[-1:], settings)  # warm-up
    started, finished, tokens, steps, rows = 0, 0, 0, 0, 0
    start = time.perf_counter()
    while finished < total:
        while started < total and started - finished < concurrency:
            core.add_request(ids[started % (len(ids) - 1)], settings)
            started += 1
        updates = core.step().updates
        steps, rows = steps + 1, rows + len(updates)
        tokens += sum(len(u.new_token_ids) for u in updates)
        finished += sum(u.finished for u in updates)
    return tokens / (time.perf_counter() - start), rows / max(steps, 1)


def speedups(results: list[LevelResult]) -> list[tuple[str, int, list[float]]]:
    """(setting, clients, ratios): each repeat's tokens/s over one-at-a-time's in the same repeat."""
    base = {(r.concurrency, r.repeat): r.tokens_per_s for r in results if r.setting == "one-at-a-time"}
    ratios: dict[tuple[str, int], list[float]] = {}
    for r in results:
        if r.setting != "one-at-a-time" and base.get((r.concurrency, r.repeat)):
            ratios.setdefault((r.setting, r.concurrency), []).append(r.tokens_per_s / base[(r.concurrency, r.repeat)])
    return [(setting, concurrency, values) for (setting, concurrency), values in ratios.items()]


def decoding_setup(config: BenchConfig) -> Any:
    """The bench's pair, judge, window and budget checked by the project's one resolver (`autojudge.setup`)."""
    from autojudge.setup import DecodingConfig, resolve

    return resolve(DecodingConfig(target=config.target, draft=config.draft, judge=config.judge, window=config.window,
                                  max_new_tokens=config.max_tokens))


def deploy(setting: str, config: BenchConfig) -> str:
    """Deploy the server of a setting as its own Serve application (its URL prefix is the setting)."""
    from autojudge.actors.server import ReplicaConfig
    from autojudge.pipeline.serve import ServeConfig, start_server

    batch = 1 if setting == "one-at-a-time" else config.max_batch
    replica = ReplicaConfig(
        decoding=decoding_setup(config).config, max_batch=batch, max_waiting=max(config.concurrency) + 8,
        speculation_max_batch=(config.speculation_max_batch or None) if batch > 1 else None, threads=config.threads, stream_interval=config.stream_interval,
        engine_nice=config.engine_nice,
    )  # fmt: skip
    serve_config = ServeConfig(
        replica=replica, port=config.port, address="local", access_log=False, app_name=setting, route_prefix=f"/{setting}",
        high_throughput=config.high_throughput,
    )  # fmt: skip
    return start_server(serve_config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = BenchConfig()
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument("--no-" + name.replace("_", "-"), dest=name, action="store_false")
        elif isinstance(value, tuple):
            kind = int if name == "concurrency" else str
            parser.add_argument(flag, type=kind, nargs="+", default=list(value))
        else:
            parser.add_argument(flag, type=type(value) if value is not None else (float if name == "threshold" else str), default=value)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--engine-level", action="store_true", help="also run the closed loop on the engine core alone (no HTTP)")
    args = parser.parse_args()
    config = BenchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k not in ("json", "engine_level")})
    settings = [s for s in config.settings if s != "continuous-autojudge" or config.judge]
    if len(settings) < len(config.settings):
        print("no --judge: skipping continuous-autojudge")

    from autojudge.pipeline.serve import stop_server

    questions = prompts(200)
    results: list[LevelResult] = []
    try:
        # both servers up at once; levels interleave (one-at-a-time, continuous, autojudge at each
        # concurrency) so that load from elsewhere on the machine hits baseline and contender alike
        urls = {name: deploy(name, config) for name in ("one-at-a-time", "continuous") if any(s.startswith(name) for s in settings)}
        for concurrency in config.concurrency:
            for repeat in range(config.repeats):
                for setting in settings:
                    url = urls["one-at-a-time" if setting == "one-at-a-time" else "continuous"]
                    result = asyncio.run(run_level(url, setting, concurrency, config, questions, repeat))
                    results.append(result)
                    print(json.dumps(asdict(result)), flush=True)
    finally:
        stop_server()
    header = ("| setting | clients | requests | req/s | tokens/s | TTFT p50 / p95 (ms) | ITL p50 / p95 (ms) | tokens/chunk | "
              "chunk gap p50 / p95 (ms) | tokens/target call | engine busy | rows/cycle |")  # fmt: skip
    print("\n" + header + "\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r.setting} | {r.concurrency} | {r.requests} | {r.requests_per_s} | {r.tokens_per_s} | "
              f"{r.ttft_p50_ms} / {r.ttft_p95_ms} | {r.itl_p50_ms} / {r.itl_p95_ms} | {r.tokens_per_chunk} | "
              f"{r.chunk_gap_p50_ms} / {r.chunk_gap_p95_ms} | {r.tokens_per_target_call} | {r.engine_busy:.0%} | {r.mean_batch} |")  # fmt: skip
    if args.engine_level:
        print("\nengine core alone (no HTTP, same closed loop, exact):")
        for concurrency in config.concurrency:
            one, _ = engine_level(config, questions, concurrency, 1)
            batched, rows = engine_level(config, questions, concurrency, config.max_batch)
            print(f"  {concurrency} in flight: one-at-a-time {one:.0f} tokens/s, continuous {batched:.0f} tokens/s "
                  f"({rows:.1f} rows/cycle): {batched / one:.2f}x")  # fmt: skip
    for setting, concurrency, ratios in speedups(results):
        runs = f" (median of {len(ratios)} interleaved runs: {', '.join(f'{x:.2f}' for x in ratios)})" if len(ratios) > 1 else ""
        print(f"{setting} at {concurrency} clients: {statistics.median(ratios):.2f}x the tokens/s of one-at-a-time{runs}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": asdict(config), "results": [asdict(r) for r in results]}, handle, indent=2)


if __name__ == "__main__":
    main()
