"""The mining stage: prompts -> labels + features + responses (Parquet shards), resumable.

`mine(config)` is the driver (used by `autojudge mine` and `autojudge run`):

1. load the problems of the task (bad records become error rows, not failures);
2. skip prompts already finished in `config.out` (resume);
3. stream chunks of prompts to `config.workers` Ray actors (`autojudge.actors.miner`),
   at most `max_chunks_in_flight` chunks per actor; `workers=0` mines in this process;
4. write each finished chunk as one shard (atomic), update the progress bar (labels/s);
5. write `manifest.json` with models, task, settings and counts.

`mine_problems(...)` is the per-replica work (one loaded pair, a list of problems)
shared by the actors, the in-process path and `bench/mine.py`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autojudge.pipeline import shards


@dataclass
class MineConfig:
    """Settings of one mining job."""

    task: str = "toy"
    """Task name: `toy`, `gsm8k` or `humaneval` (E of DESIGN §1.1 comes from it)."""
    instruction: str | None = None
    """Text appended to every question (None: the task's default)."""
    target: str = "toy:target"
    """Target model spec (HF id, folder, .gguf, or toy:target)."""
    draft: str = "toy:draft"
    """Draft model spec."""
    out: str = "mined"
    """Output folder (labels/, responses/, manifest.json); re-running resumes it."""
    input: str | None = None
    """Prompt JSONL (`id` + `question` or `prompt`); the toy task generates problems when None."""
    limit: int | None = None
    """Mine at most this many prompts of the input (None: all; toy default: 200)."""
    seed: int = 1
    """Seed of generated toy problems (1 = the project's mining seed)."""
    workers: int = 1
    """Ray actors, each holding one target/draft replica; 0 mines in the driver process."""
    gpus_per_worker: float = 0.0
    """GPUs per actor (0 on CPU machines); > 0 puts the models on cuda."""
    cpus_per_worker: int = 1
    """CPUs reserved per actor; the actor also uses this many torch threads."""
    batch_size: int = 16
    """Searches in flight per replica (rows of one batched forward)."""
    max_new_tokens: int = 128
    """Response budget per prompt (the same for the first response and every alternative)."""
    method: str = "fast"
    """`fast` (batched lookahead search) or `plain` (the reference algorithm, slow)."""
    chunk_size: int = 0
    """Prompts per actor task and per shard (0: 2 x batch_size)."""
    max_chunks_in_flight: int = 2
    """Chunks queued per actor at once (bounds driver memory and lost work on a crash)."""
    address: str | None = None
    """Ray cluster address (default: $RAY_ADDRESS, else a local cluster)."""
    progress: bool = True
    """Show a progress bar with labels/s."""
    settings_note: dict[str, Any] = field(default_factory=dict)
    """Free-form extras recorded in the manifest."""

    def resolved_chunk_size(self) -> int:
        return self.chunk_size or 2 * self.batch_size

    def device(self) -> str:
        return "cuda" if self.gpus_per_worker > 0 else "cpu"


# ---------------------------------------------------------------------------------------
# Per-replica work
# ---------------------------------------------------------------------------------------


@dataclass
class PreparedPrompt:
    """A problem tokenized and checked, or the reason it cannot be mined."""

    problem: Any
    prompt_ids: list[int] = field(default_factory=list)
    budget: int = 0
    error: str | None = None


def model_context(model: Any) -> int:
    """Longest sequence a model supports (max_position_embeddings / n_positions)."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1 << 30


def prepare_prompt(problem: Any, task: Any, tokenizer: Any, max_new_tokens: int, context: int) -> PreparedPrompt:
    """Tokenize one problem; an unusable one gets `error` naming the problem."""
    prepared = PreparedPrompt(problem)
    if problem.error:
        prepared.error = problem.error
        return prepared
    try:
        text = task.render_prompt(problem, tokenizer)
    except Exception as err:  # noqa: BLE001 - any task error is this prompt's error
        prepared.error = f"cannot render prompt: {err}"
        return prepared
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if not text.strip() or not ids:
        prepared.error = "empty prompt"
    elif len(ids) >= context:
        prepared.error = f"prompt too long: {len(ids)} tokens, the models' context is {context} tokens"
    else:
        prepared.prompt_ids = ids
        prepared.budget = min(max_new_tokens, context - len(ids))
    return prepared


def result_rows(prepared: PreparedPrompt, result: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Label rows and the response row of one prompt (result: SearchResult or an exception)."""
    prompt_id = str(prepared.problem.id)
    response = {
        "prompt_id": prompt_id,
        "prompt_token_ids": prepared.prompt_ids,
        "initial_response_ids": None,
        "final_response_ids": None,
        "target_answer": None,
        "num_labels": 0,
        "error": prepared.error,
    }
    if isinstance(result, Exception):
        response["error"] = f"search failed: {type(result).__name__}: {result}"
        return [], response
    if result is None:
        return [], response
    labels = [
        {
            "prompt_id": prompt_id,
            "position": label.position,
            "target_token": label.target_token,
            "draft_token": label.draft_token,
            "important": label.important,
            "h_target": label.h_target.tolist() if label.h_target is not None else None,
            "h_draft": label.h_draft.tolist() if label.h_draft is not None else None,
        }
        for label in result.labels
    ]
    response.update(
        initial_response_ids=result.initial_response,
        final_response_ids=result.final_response,
        target_answer=None if result.target_answer is None else str(result.target_answer),
        num_labels=len(labels),
    )
    return labels, response


def mine_problems(
    pair: Any,
    task: Any,
    problems: list[Any],
    max_new_tokens: int,
    batch_size: int = 16,
    method: str = "fast",
    searcher: Any = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Mine `problems` on one loaded pair: (label rows, response rows), one response per problem."""
    from autojudge.pipeline.search import TaskEvaluator, eos_token_ids, plain_search
    from autojudge.pipeline.search_fast import BatchedSearcher, SearchJob

    tokenizer = pair.tokenizer
    context = min(model_context(pair.target), model_context(pair.draft))
    prepared = [prepare_prompt(p, task, tokenizer, max_new_tokens, context) for p in problems]
    eos_ids = eos_token_ids(tokenizer, pair.target)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    runnable = [p for p in prepared if p.error is None]
    results: dict[int, Any] = {}
    if method == "plain":
        for item in runnable:
            evaluator = TaskEvaluator(task, item.problem, tokenizer)
            try:
                results[id(item)] = plain_search(
                    pair.target, pair.draft, item.prompt_ids, evaluator, item.budget, eos_ids, pad_id
                )
            except Exception as err:  # noqa: BLE001 - one prompt's failure is its error row
                results[id(item)] = err
    elif method == "fast":
        searcher = searcher or BatchedSearcher(pair.target, pair.draft, eos_ids, pad_id, batch_size)
        jobs = [SearchJob(id(item), item.prompt_ids, TaskEvaluator(task, item.problem, tokenizer), item.budget) for item in runnable]
        results.update(searcher.run(jobs))
    else:
        raise ValueError(f"unknown mining method {method!r}: use fast or plain")
    label_rows: list[dict[str, Any]] = []
    response_rows: list[dict[str, Any]] = []
    for item in prepared:
        labels, response = result_rows(item, results.get(id(item)))
        label_rows.extend(labels)
        response_rows.append(response)
    return label_rows, response_rows


class StreamingMiner:
    """Continuous batching across calls: one background thread runs a `BatchedSearcher`
    over a queue, so the batch stays full while the driver keeps chunks in flight.
    `mine(problems)` is thread-safe (a threaded Ray actor calls it concurrently) and
    blocks until its problems are done."""

    def __init__(self, pair: Any, task: Any, max_new_tokens: int, batch_size: int) -> None:
        import queue
        import threading

        from autojudge.pipeline.search import eos_token_ids
        from autojudge.pipeline.search_fast import BatchedSearcher

        self.pair, self.task, self.max_new_tokens = pair, task, max_new_tokens
        tokenizer = pair.tokenizer
        eos_ids = eos_token_ids(tokenizer, pair.target)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
        self.searcher = BatchedSearcher(pair.target, pair.draft, eos_ids, pad_id, batch_size)
        self.context = min(model_context(pair.target), model_context(pair.draft))
        self.jobs: queue.Queue = queue.Queue()
        self.open_calls: set[_Collector] = set()
        self.lock = threading.Lock()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True, name="miner-search-loop")
        self.thread.start()

    def _next_job(self, block: bool) -> Any:
        import queue

        try:
            return self.jobs.get(block=block)
        except queue.Empty:
            return None

    def _loop(self) -> None:
        try:
            # the caches grow to the longest prompt + budget seen, not to the model's context
            for key, result in self.searcher.run_stream(self._next_job, 256):
                collector, index = key
                collector.done(index, result)
        except BaseException as err:  # noqa: BLE001 - a failed batched forward fails every open call
            with self.lock:
                self.failure = err
                for collector in self.open_calls:
                    collector.finished.set()

    def close(self) -> None:
        """Stop the search loop once the searches in flight are done."""
        from autojudge.pipeline.search_fast import END_OF_JOBS

        self.jobs.put(END_OF_JOBS)
        self.thread.join()

    def mine(self, problems: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(label rows, response rows) for `problems`, searched alongside other calls' problems."""
        from autojudge.pipeline.search import TaskEvaluator
        from autojudge.pipeline.search_fast import SearchJob

        tokenizer = self.pair.tokenizer
        prepared = [prepare_prompt(p, self.task, tokenizer, self.max_new_tokens, self.context) for p in problems]
        runnable = [i for i, item in enumerate(prepared) if item.error is None]
        collector = _Collector(len(runnable))
        with self.lock:
            if self.failure is not None:
                raise RuntimeError(f"the search loop failed: {self.failure!r}")
            self.open_calls.add(collector)
        for index in runnable:
            item = prepared[index]
            evaluator = TaskEvaluator(self.task, item.problem, tokenizer)
            self.jobs.put(SearchJob((collector, index), item.prompt_ids, evaluator, item.budget))
        collector.wait()
        with self.lock:
            self.open_calls.discard(collector)
            if len(collector.results) < collector.expected:
                raise RuntimeError(f"the search loop failed: {self.failure!r}")
        label_rows: list[dict[str, Any]] = []
        response_rows: list[dict[str, Any]] = []
        for index, item in enumerate(prepared):
            labels, response = result_rows(item, collector.results.get(index))
            label_rows.extend(labels)
            response_rows.append(response)
        return label_rows, response_rows


class _Collector:
    """Results of one `StreamingMiner.mine` call, filled by the search thread."""

    def __init__(self, expected: int) -> None:
        import threading

        self.expected = expected
        self.results: dict[int, Any] = {}
        self.finished = threading.Event()
        if expected == 0:
            self.finished.set()

    def done(self, index: int, result: Any) -> None:
        self.results[index] = result
        if len(self.results) == self.expected:
            self.finished.set()

    def wait(self) -> None:
        self.finished.wait()


# ---------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------


def load_problems(config: MineConfig) -> list[Any]:
    """The task's problems; malformed records become problems with `error` set.
    A repeated id keeps its first record; later copies become error rows under a new id."""
    problems = build_task(config).load(config.input, limit=config.limit, strict=False)
    seen: set[str] = set()
    for index, problem in enumerate(problems):
        problem.id = str(problem.id)
        if problem.id in seen:
            problem.error = f"duplicate id {problem.id!r} (record {index}); the first record with it is mined"
            problem.id = f"{problem.id}#dup{index}"
        seen.add(problem.id)
    return problems


def build_task(config: MineConfig) -> Any:
    from autojudge.tasks import build_task as task_from_settings

    return task_from_settings(config.task, seed=config.seed, instruction=config.instruction)


def chunked(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def write_manifest(config: MineConfig, out: Path, models: dict[str, Any], status: str) -> dict[str, Any]:
    """manifest.json: models, task, settings, counts (recomputed from the shards)."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("out", "progress", "address")}
    manifest = {
        "task": config.task,
        "target": config.target,
        "draft": config.draft,
        **models,
        "settings": settings,
        "counts": shards.count_rows(out),
        "status": status,
    }
    shards.write_json_atomic(manifest, out / shards.MANIFEST)
    return manifest


class Progress:
    """A tqdm bar over prompts with labels and labels/s (quiet when disabled)."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="prompt", disable=not enabled, dynamic_ncols=True)
        self.labels = 0
        self.start = time.perf_counter()

    def restart(self) -> None:
        """Start the labels/s clock (after the models are loaded)."""
        self.start = time.perf_counter()

    def update(self, prompts: int, labels: int) -> None:
        self.labels += labels
        rate = self.labels / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix(labels=self.labels, labels_per_s=f"{rate:.1f}", refresh=False)
        self.bar.update(prompts)

    def close(self) -> None:
        self.bar.close()


def mine(config: MineConfig) -> Path:
    """Run (or resume) a mining job; returns the output folder."""
    from autojudge.tasks import InputError

    if config.max_new_tokens < 1:
        raise InputError("--max-new-tokens must be at least 1")
    if config.batch_size < 1 or config.workers < 0:
        raise InputError("--batch-size must be >= 1 and --workers >= 0")
    out = Path(config.out)
    check_resumable(config, out)
    problems = load_problems(config)  # a missing input fails here, before the folder exists
    out.mkdir(parents=True, exist_ok=True)
    shards.clean_orphans(out)
    done = shards.finished_prompt_ids(out)
    todo = [p for p in problems if p.id not in done]
    chunks = chunked(todo, config.resolved_chunk_size())
    progress = Progress(len(todo), config.progress)
    if config.workers == 0:
        models = _mine_local(config, out, chunks, progress)
    else:
        models = _mine_ray(config, out, chunks, progress)
    progress.close()
    write_manifest(config, out, models, status="complete")
    return out


RESUME_KEYS = ("task", "instruction", "target", "draft", "input", "seed", "max_new_tokens", "method")
"""Settings that must match to resume a folder (the labels would mix otherwise)."""


def resume_settings(out: Path) -> dict[str, Any] | None:
    """The settings recorded in `out/manifest.json` (None when there is no manifest);
    InputError when the manifest is corrupt."""
    import json

    from autojudge.tasks import InputError

    manifest_path = out / shards.MANIFEST
    if not manifest_path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise InputError(f"{manifest_path}: corrupt manifest ({err}); move it away to re-mine into {out}, "
                         "or use a new --out folder") from None
    before = manifest.get("settings") if isinstance(manifest, dict) else None
    if not isinstance(before, dict):
        raise InputError(f"{manifest_path}: corrupt manifest (expected an object with 'settings'); move it away "
                         f"to re-mine into {out}, or use a new --out folder")
    return before


def check_resumable(config: MineConfig, out: Path) -> None:
    """Refuse to resume a folder mined with other models, task, prompts or budget."""
    from autojudge.tasks import InputError

    before = resume_settings(out)
    if before is None:
        return
    now = asdict(config)
    changed = [f"{key}: {before[key]!r} -> {now[key]!r}" for key in RESUME_KEYS if key in before and before[key] != now[key]]
    if changed:
        raise InputError(f"{out} was mined with other settings ({'; '.join(changed)}); use a new --out folder")


def describe_pair(pair: Any) -> dict[str, Any]:
    """Model facts recorded in the manifest (the judge checks them later)."""
    from autojudge.models import tokenizer_fingerprint

    return {
        "tokenizer_fingerprint": tokenizer_fingerprint(pair.tokenizer),
        "target_hidden_size": int(pair.target.config.hidden_size),
        "draft_hidden_size": int(pair.draft.config.hidden_size),
    }


def _mine_local(config: MineConfig, out: Path, chunks: list[list[Any]], progress: Progress) -> dict[str, Any]:
    """workers=0: mine in this process, one shard per chunk; with the fast method the chunks
    in flight share one continuously batched search loop, as in an actor."""
    from concurrent.futures import ThreadPoolExecutor

    from autojudge.models import load_pair

    pair = load_pair(config.target, config.draft, config.device())
    models = describe_pair(pair)
    write_manifest(config, out, models, status="running")
    progress.restart()
    task = build_task(config)
    if config.method == "plain":
        for index, chunk in enumerate(chunks):
            labels, responses = mine_problems(pair, task, chunk, config.max_new_tokens, method="plain")
            shards.write_shard(out, shards.new_shard_name(index), labels, responses)
            progress.update(len(responses), len(labels))
        return models
    miner = StreamingMiner(pair, task, config.max_new_tokens, config.batch_size)
    pending = list(enumerate(chunks))[::-1]
    with ThreadPoolExecutor(max_workers=config.max_chunks_in_flight) as pool:
        try:
            _drain_local(miner, pool, pending, config, out, progress)
        finally:
            miner.close()
    return models


def _drain_local(miner: StreamingMiner, pool: Any, pending: list[tuple[int, list[Any]]], config: MineConfig,
                 out: Path, progress: Progress) -> None:
    """Keep `max_chunks_in_flight` chunks in the in-process miner; write each as it finishes."""
    from concurrent.futures import FIRST_COMPLETED, wait

    in_flight: dict[Any, int] = {}
    while pending or in_flight:
        while pending and len(in_flight) < config.max_chunks_in_flight:
            index, chunk = pending.pop()
            in_flight[pool.submit(miner.mine, chunk)] = index
        done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
        for future in done:
            index = in_flight.pop(future)
            labels, responses = future.result()
            shards.write_shard(out, shards.new_shard_name(index), labels, responses)
            progress.update(len(responses), len(labels))


def _mine_ray(config: MineConfig, out: Path, chunks: list[list[Any]], progress: Progress) -> dict[str, Any]:
    """Stream chunks to `workers` actors with at most `max_chunks_in_flight` each."""
    import ray

    from autojudge.actors.miner import MinerActor
    from autojudge.ray_utils import init_ray

    init_ray(config.address)
    actor_class = MinerActor.options(num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker)
    actors = [actor_class.remote(config) for _ in range(config.workers)]
    models = ray.get(actors[0].describe.remote())
    ray.get([actor.describe.remote() for actor in actors[1:]])
    write_manifest(config, out, models, status="running")
    progress.restart()
    pending = list(enumerate(chunks))[::-1]
    in_flight: dict[Any, tuple[int, Any]] = {}  # ref -> (chunk index, actor)
    load = {i: 0 for i in range(len(actors))}
    try:
        while pending or in_flight:
            for actor_index in range(len(actors)):
                while pending and load[actor_index] < config.max_chunks_in_flight:
                    index, chunk = pending.pop()
                    ref = actors[actor_index].mine_chunk.remote(chunk)
                    in_flight[ref] = (index, actor_index)
                    load[actor_index] += 1
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                index, actor_index = in_flight.pop(ref)
                load[actor_index] -= 1
                labels, responses = ray.get(ref)
                shards.write_shard(out, shards.new_shard_name(index), labels, responses)
                progress.update(len(responses), len(labels))
    finally:
        for actor in actors:
            ray.kill(actor)
    return models
