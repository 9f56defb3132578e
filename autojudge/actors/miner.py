"""The mining replica: one target/draft pair on one device, mining chunks of prompts.

`MiningWorker` is the per-replica work (no Ray): the pair and the task are loaded once; each
`mine(problems)` call tokenizes and checks the prompts (an unusable one becomes an error row,
never a failed call), runs the semi-greedy search (`decode/mining/lookahead.py`, or the reference
`decode/mining/search.py` for method "plain") and returns plain label and response rows. The driver
(`pipeline/mine.py`) writes them as shards, in-process (`workers=0`) or through `MinerActor`.

`MinerActor` is thin Ray glue over a `MiningWorker`: the actor is threaded
(`max_concurrency`), so the chunks the driver keeps in flight feed one continuously batched
search loop instead of draining the batch at each chunk's end. Torch threads are set to the
CPUs the actor reserved (Ray also sets OMP_NUM_THREADS to that number), so W actors on W
cores do not oversubscribe the machine. Restarts and task retries are unbounded: a chunk is a
pure function of its prompts and only the driver writes shards, so a retry never duplicates
work, and a bounded count fails the job when a whole node goes away (the retries are spent
while it is unreachable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ray


@dataclass
class PreparedPrompt:
    """A problem tokenized and checked, or the reason it cannot be mined."""

    problem: Any
    prompt_ids: list[int] = field(default_factory=list)
    budget: int = 0
    error: str | None = None


def prepare_prompt(problem: Any, task: Any, tokenizer: Any, max_new_tokens: int, context: int) -> PreparedPrompt:
    """Tokenize one problem; an unusable one gets `error` naming the problem."""
    prepared = PreparedPrompt(problem)
    if problem.error:
        prepared.error = problem.error
        return prepared
    try:
        ids = task.prompt_ids(problem, tokenizer)
    except Exception as err:  # noqa: BLE001 - any task error is this prompt's error
        prepared.error = f"cannot render prompt: {err}"
        return prepared
    if not tokenizer.decode(ids).strip():
        prepared.error = "empty prompt"
    elif len(ids) >= context:
        prepared.error = f"prompt too long: {len(ids)} tokens, the models' context is {context} tokens"
    else:
        prepared.prompt_ids = ids
        prepared.budget = min(max_new_tokens, context - len(ids))
    return prepared


NOT_MINED = "not mined"
"""How a response row's `error` starts when the problem was skipped on purpose (its answer did not finish)."""


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
    if result.unfinished:
        response["error"] = f"{NOT_MINED}: the target's answer did not end within the budget ({len(result.initial_response)} tokens)"
    response.update(
        initial_response_ids=result.initial_response,
        final_response_ids=result.final_response,
        target_answer=None if result.target_answer is None else str(result.target_answer),
        num_labels=len(labels),
    )
    return labels, response


class MiningWorker:
    """One mining replica's work on one loaded pair: `mine(problems) -> (label rows, response rows)`.

    Method "fast": continuous batching across calls; one background thread runs a
    `BatchedSearcher` over a queue, so the batch stays full while the driver keeps chunks in
    flight. `mine` is thread-safe (a threaded Ray actor calls it concurrently) and blocks until
    its problems are done. Method "plain": the reference algorithm, one prompt at a time."""

    def __init__(
        self, pair: Any, task: Any, max_new_tokens: int, batch_size: int = 64, method: str = "fast", lookahead: Any = None,
        finished_only: bool = False,
    ) -> None:
        """lookahead: `decode.mining.lookahead.LookaheadSettings` of the fast search (None: `settings_for` the target); finished_only:
        a problem whose target answer does not end within the budget is not mined (its response row says so)."""
        import queue
        import threading

        from autojudge.decode.mining.lookahead import BatchedSearcher
        from autojudge.models import eos_token_ids, model_context

        if method not in ("fast", "plain"):
            raise ValueError(f"unknown mining method {method!r}: use fast or plain")
        self.pair, self.task, self.max_new_tokens, self.method = pair, task, max_new_tokens, method
        self.finished_only = finished_only
        tokenizer = pair.tokenizer
        self.eos_ids = eos_token_ids(tokenizer, pair.target)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.searcher = BatchedSearcher(pair.target, pair.draft, self.eos_ids, self.pad_id, batch_size, settings=lookahead,
                                        shared_prefix=task.shared_prefix_ids(tokenizer),  # a few-shot header, computed once
                                        finished_only=finished_only)
        self.context = min(model_context(pair.target), model_context(pair.draft))
        self.jobs: queue.Queue = queue.Queue()
        self.open_calls: set[_Collector] = set()
        self.lock = threading.Lock()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True, name="miner-search-loop")
        if method == "fast":
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
        from autojudge.decode.mining.lookahead import END_OF_JOBS

        if self.thread.is_alive():
            self.jobs.put(END_OF_JOBS)
            self.thread.join()

    def mine(self, problems: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(label rows, response rows) for `problems`: one response row per problem, in order."""
        tokenizer = self.pair.tokenizer
        prepared = [prepare_prompt(p, self.task, tokenizer, self.max_new_tokens, self.context) for p in problems]
        runnable = [i for i, item in enumerate(prepared) if item.error is None]
        if self.method == "plain":
            results = {index: self._plain(prepared[index]) for index in runnable}
        else:
            results = self._fast(prepared, runnable)
        label_rows: list[dict[str, Any]] = []
        response_rows: list[dict[str, Any]] = []
        for index, item in enumerate(prepared):
            labels, response = result_rows(item, results.get(index))
            label_rows.extend(labels)
            response_rows.append(response)
        return label_rows, response_rows

    def _plain(self, item: PreparedPrompt) -> Any:
        """The reference algorithm on one prompt (its failure is its result)."""
        from autojudge.decode.mining.search import TaskEvaluator, plain_search

        evaluator = TaskEvaluator(self.task, item.problem, self.pair.tokenizer)
        try:
            return plain_search(self.pair.target, self.pair.draft, item.prompt_ids, evaluator, item.budget, self.eos_ids, self.pad_id,
                                finished_only=self.finished_only)
        except Exception as err:  # noqa: BLE001 - one prompt's failure is its error row
            return err

    def _fast(self, prepared: list[PreparedPrompt], runnable: list[int]) -> dict[int, Any]:
        """Queue the runnable prompts on the search loop and wait for them."""
        from autojudge.decode.mining.lookahead import SearchJob
        from autojudge.decode.mining.search import TaskEvaluator

        tokenizer = self.pair.tokenizer
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
        return collector.results


class _Collector:
    """Results of one `MiningWorker.mine` call, filled by the search thread."""

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


def describe_pair(pair: Any) -> dict[str, Any]:
    """Model facts recorded in the manifest (the judge checks them later)."""
    from autojudge.models import tokenizer_fingerprint

    return {
        "tokenizer_fingerprint": tokenizer_fingerprint(pair.tokenizer),
        "target_hidden_size": int(pair.target.config.hidden_size),
        "draft_hidden_size": int(pair.draft.config.hidden_size),
    }


def load_worker(config: Any) -> MiningWorker:
    """Load the pair and the task of a mining job (`pipeline.mine.MineConfig`) into a worker."""
    from autojudge.models import load_pair
    from autojudge.tasks import build_task

    pair = load_pair(config.decoding.target, config.decoding.draft, config.device())
    task = build_task(config.task, seed=config.seed, instruction=config.instruction, shots=config.shots,
                      shots_file=config.shots_file)
    return MiningWorker(pair, task, config.decoding.max_new_tokens, config.batch_size, config.method, finished_only=config.finished_only)


@ray.remote(max_concurrency=8, max_restarts=-1, max_task_retries=-1)
class MinerActor:
    """Holds one `MiningWorker`; mines chunks of problems."""

    def __init__(self, config: Any) -> None:
        import torch

        torch.set_num_threads(max(1, int(config.cpus_per_worker)))
        self.worker = load_worker(config)

    def describe(self) -> dict[str, Any]:
        """Tokenizer fingerprint and hidden sizes (for the manifest)."""
        return describe_pair(self.worker.pair)

    def mine_chunk(self, problems: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(label rows, response rows) for `problems`."""
        return self.worker.mine(problems)

    def counters(self) -> dict[str, Any]:
        """The batched searcher's counters (forwards, tokens, seconds) for profiling."""
        from dataclasses import asdict

        return asdict(self.worker.searcher.counters)
