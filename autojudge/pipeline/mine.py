"""The mining stage: prompts -> labels + features + responses (Parquet shards), resumable.

`mine(config)` is the driver (used by `autojudge mine` and `autojudge run`):

1. load the problems of the task (bad records become error rows, not failures);
2. skip prompts already finished in `config.out` (resume);
3. stream chunks of prompts to `config.workers` Ray actors (`autojudge.actors.miner`),
   at most `max_chunks_in_flight` chunks per actor; `workers=0` mines in this process;
4. write each finished chunk as one shard (atomic), update the progress bar (labels/s);
5. write `manifest.json` with models, task, settings and counts.

The per-replica work (one loaded pair, a list of problems -> rows) is
`autojudge.actors.miner.MiningWorker`, shared by the actors, the in-process path and `bench/mine.py`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from autojudge.pipeline import shards
from autojudge.setup import DecodingConfig


@dataclass
class MineConfig:
    """Settings of one mining job."""

    task: str = "toy"
    """Task name: `toy`, `gsm8k` or `humaneval` (E of docs/design.md §1.1 comes from it)."""
    instruction: str | None = None
    """Text appended to every question (None: the task's default)."""
    shots: int = 0
    """Task gsm8k: solved examples shown first as earlier chat turns (few-shot)."""
    shots_file: str | None = None
    """Task gsm8k: JSONL whose first `shots` problems are the examples (None: the shared train file)."""
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    """The pair (`target`, `draft`) and the response budget (`max_new_tokens`, the same for the first
    response and every alternative). Mining decodes greedily: the rule and the window are not used."""
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
    batch_size: int = 64
    """Searches in flight per replica (rows of one batched forward)."""
    finished_only: bool = False
    """Mine only problems whose target answer ends (EOS) within the budget: a cut or looping answer has no
    final answer for a swapped token to change (the response row of a skipped one says "not mined")."""
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

    return task_from_settings(config.task, seed=config.seed, instruction=config.instruction, shots=config.shots,
                              shots_file=config.shots_file)


def chunked(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def manifest_settings(config: MineConfig) -> dict[str, Any]:
    """The settings recorded in manifest.json (and compared on resume): the config's fields, with the
    pair and the budget as the flat `target`, `draft` and `max_new_tokens` keys of the folder format."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("out", "progress", "address", "decoding")}
    decoding = config.decoding
    return {**settings, "target": decoding.target, "draft": decoding.draft, "max_new_tokens": decoding.max_new_tokens}


def write_manifest(config: MineConfig, out: Path, models: dict[str, Any], status: str) -> dict[str, Any]:
    """manifest.json: models, task, settings, counts (recomputed from the shards)."""
    settings = manifest_settings(config)
    manifest = {
        "task": config.task,
        "target": config.decoding.target,
        "draft": config.decoding.draft,
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
    from autojudge.errors import InputError

    if config.decoding.max_new_tokens < 1:
        raise InputError("--max-new-tokens must be at least 1")
    if config.batch_size < 1 or config.workers < 0:
        raise InputError("--batch-size must be >= 1 and --workers >= 0")
    out = Path(config.out)
    check_resumable(config, out)
    problems = load_problems(config)  # a missing input fails here, before the folder exists
    if config.workers > 0:  # actors the cluster cannot place would wait forever: refused before the folder is touched
        from autojudge.ray_utils import check_actor_resources, init_ray

        init_ray(config.address)
        check_actor_resources("mining workers", config.workers, config.cpus_per_worker, config.gpus_per_worker,
                              config.address, advice=RESOURCE_ADVICE)
    out.mkdir(parents=True, exist_ok=True)
    with shards.writer_lock(out):  # one writer per folder, before any file in it is touched
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


RESOURCE_ADVICE = "use fewer --workers (autojudge run: --mine-workers) or --cpus-per-worker (run: --threads)"


RESUME_KEYS = ("task", "instruction", "shots", "shots_file", "target", "draft", "input", "seed", "max_new_tokens", "method",
               "finished_only")
"""Settings that must match to resume a folder (the labels would mix otherwise)."""


def resume_settings(out: Path) -> dict[str, Any] | None:
    """The settings recorded in `out/manifest.json` (None when there is no manifest); InputError when
    `out` holds what the miner did not write (`shards.check_mining_folder`) or the manifest is corrupt."""
    from autojudge.errors import InputError

    shards.check_no_writer(out)  # another writer's half-written first shard is not a foreign file
    shards.check_mining_folder(out)
    try:
        manifest = shards.read_manifest(out)
    except InputError as err:
        raise InputError(f"{err}; move it away to re-mine into {out}, or use a new --out folder") from None
    return manifest.get("settings", {}) if manifest else None


def check_resumable(config: MineConfig, out: Path) -> None:
    """Refuse to resume a folder mined with other models, task, prompts or budget."""
    from autojudge.errors import InputError

    before = resume_settings(out)
    if before is None:
        return
    now = manifest_settings(config)
    changed = [f"{key}: {before[key]!r} -> {now[key]!r}" for key in RESUME_KEYS if key in before and before[key] != now[key]]
    if changed:
        raise InputError(f"{out} was mined with other settings ({'; '.join(changed)}); use a new --out folder")


def _mine_local(config: MineConfig, out: Path, chunks: list[list[Any]], progress: Progress) -> dict[str, Any]:
    """workers=0: one `MiningWorker` in this process; the chunks in flight share its search loop."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from autojudge.actors.miner import describe_pair, load_worker

    worker = load_worker(config)
    try:  # the worker's search thread is stopped whatever fails (a full disk at the manifest included)
        models = describe_pair(worker.pair)
        write_manifest(config, out, models, status="running")
        progress.restart()
        with ThreadPoolExecutor(max_workers=config.max_chunks_in_flight) as pool:
            schedule_chunks(
                chunks, [lambda chunk: pool.submit(worker.mine, chunk)], config.max_chunks_in_flight,
                wait_any=lambda futures: list(wait(futures, return_when=FIRST_COMPLETED).done),
                result=lambda future: future.result(), write=lambda index, rows: _write(out, progress, index, rows),
            )  # fmt: skip
    finally:
        worker.close()
    return models


def _mine_ray(config: MineConfig, out: Path, chunks: list[list[Any]], progress: Progress) -> dict[str, Any]:
    """`workers` Ray actors, each holding one `MiningWorker`."""
    import ray

    from autojudge.actors.miner import MinerActor
    from autojudge.ray_utils import init_ray

    init_ray(config.address)
    actor_class = MinerActor.options(num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker)
    actors = [actor_class.remote(config) for _ in range(config.workers)]
    try:
        models = ray.get(actors[0].describe.remote())
        ray.get([actor.describe.remote() for actor in actors[1:]])
        write_manifest(config, out, models, status="running")
        progress.restart()
        schedule_chunks(
            chunks, [actor.mine_chunk.remote for actor in actors], config.max_chunks_in_flight,
            wait_any=lambda refs: ray.wait(refs, num_returns=1)[0], result=ray.get,
            write=lambda index, rows: _write(out, progress, index, rows),
        )  # fmt: skip
    finally:
        for actor in actors:
            ray.kill(actor)
    return models


def schedule_chunks(
    chunks: list[list[Any]],
    replicas: list[Callable[[list[Any]], Any]],
    per_replica: int,
    wait_any: Callable[[list[Any]], list[Any]],
    result: Callable[[Any], Any],
    write: Callable[[int, Any], None],
) -> None:
    """The one scheduler: keep at most `per_replica` chunks in flight on each replica (`replicas[i](chunk)`
    returns a handle: a future or a Ray ref), and write each chunk's rows as soon as it finishes."""
    pending = list(enumerate(chunks))[::-1]
    in_flight: dict[Any, tuple[int, int]] = {}  # handle -> (chunk index, replica)
    load = [0] * len(replicas)
    while pending or in_flight:
        for replica, submit in enumerate(replicas):
            while pending and load[replica] < per_replica:
                index, chunk = pending.pop()
                in_flight[submit(chunk)] = (index, replica)
                load[replica] += 1
        for handle in wait_any(list(in_flight)):
            index, replica = in_flight.pop(handle)
            load[replica] -= 1
            write(index, result(handle))


def _write(out: Path, progress: Progress, index: int, rows: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> None:
    """Commit one finished chunk as a shard and count it."""
    labels, responses = rows
    shards.write_shard(out, shards.new_shard_name(index), labels, responses)
    progress.update(len(responses), len(labels))
