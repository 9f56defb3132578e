"""Batch inference over a corpus with Ray Data: read -> parse -> decode (actor pool) -> Parquet.

    corpus (JSONL or Parquet; local, s3://, gs://, any pyarrow filesystem)
      -> rows {id, source, question, prompt, error}        (parse: a bad line becomes an error row)
      -> map_batches(Decoder, concurrency=replicas)         (models loaded once per actor)
      -> OUTPUT/*.parquet: id, text, token_ids, stats ..., error    + OUTPUT/_summary.json

Every input row yields exactly one output row. A row that cannot be decoded (not JSON,
no `question`/`prompt`, empty, too long, a decode failure) carries its message in the
`error` column and null text; the rest of its batch is decoded normally.

`decode_rows` is the stage function: a plain function over a list of row dicts and a
loaded `DecodeState`, so it is tested without a cluster. The actor class in
`autojudge/actors/decoder.py` only loads the state once and calls it.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

from autojudge.tasks.jsonl import InputError

ROW_COLUMNS = ("id", "source", "question", "prompt", "error")  # the parsed corpus rows


@dataclass
class DecodeStageConfig:
    """What one decode replica loads and how it decodes (shipped to every actor)."""

    target: str = "toy:target"
    """Target model spec (hub id, folder, .gguf, toy:target)."""
    draft: str = "toy:draft"
    """Draft model spec; must share the target's tokenizer."""
    mode: str = "exact"
    """Acceptance rule: exact | topk | autojudge | typical | prob."""
    judge: str | None = None
    """Judge folder (mode autojudge); it must match the model pair."""
    threshold: float | None = None
    """Judge threshold tau (default: the judge's default)."""
    top_k: int = 4
    """K of mode topk."""
    epsilon: float = 0.09
    """Epsilon of mode typical (delta = sqrt(epsilon))."""
    min_prob: float = 0.3
    """Least target probability of a draft token in mode prob."""
    window: int = 4
    """Draft tokens proposed per target call."""
    max_new_tokens: int = 256
    """Generation budget per row."""
    task: str = "gsm8k"
    """Task that formats `question` rows (chat template); `prompt` rows are used as raw text."""
    stop: tuple[str, ...] = ()
    """Stop strings."""
    max_prompt_tokens: int | None = None
    """Longer prompts become error rows (default: the models' context length minus max_new_tokens)."""
    device: str = "auto"
    """torch device of a replica; auto = cuda when the replica has a GPU, else cpu."""
    threads: int | None = None
    """torch CPU threads per replica (default: the replica's CPU count)."""


@dataclass
class InferConfig:
    """`autojudge infer`: the corpus, the output, the decode stage and how it is spread."""

    input: str
    """Corpus path or URI: a .jsonl/.jsonl.gz/.parquet file or a folder of them."""
    output: str
    """Output folder (path or URI) for the Parquet shards and _summary.json."""
    stage: DecodeStageConfig = field(default_factory=DecodeStageConfig)
    """Settings of each decode replica."""
    input_format: str = "auto"
    """jsonl | parquet | auto (by file extension)."""
    batch_size: int = 16
    """Rows per map_batches call (and per engine batch)."""
    num_replicas: int = 1
    """Decode actors (each loads the pair once); on GPUs, typically one per GPU."""
    num_gpus_per_replica: float = 0.0
    """GPUs per actor (0 on a CPU machine; 0.5 packs two replicas on a GPU)."""
    num_cpus_per_replica: float = 1.0
    """CPUs per actor."""
    overwrite: bool = False
    """Replace a non-empty output folder."""
    address: str | None = None
    """Ray cluster to attach to (default: $RAY_ADDRESS, else a local cluster)."""
    local_cpus: int | None = None
    """CPUs of the local cluster when one is started."""
    io_cpus: float = 0.25
    """CPUs each read/parse/write task asks for (light work; small so it never waits for the actors)."""


@dataclass
class DecodeState:
    """What a replica holds: the loaded pair, the engine, the task that formats questions."""

    config: DecodeStageConfig
    pair: Any
    engine: Any
    task: Any
    max_prompt_tokens: int
    replica: str


# --------------------------------------------------------------------------- parsing


def normalize_record(record: Any, source: str, fallback_id: str) -> dict[str, Any]:
    """One corpus row {id, source, question, prompt, error}; problems go to `error`."""
    row: dict[str, Any] = {"id": fallback_id, "source": source, "question": None, "prompt": None, "error": None}
    if not isinstance(record, dict):
        row["error"] = f"{source}: expected a JSON object, got {type(record).__name__}"
        return row
    if record.get("id") is not None:
        row["id"] = str(record["id"])
    question, prompt = record.get("question"), record.get("prompt")
    if question is not None and not isinstance(question, str):
        row["error"] = f"{source}: field 'question' must be a string, got {type(question).__name__}"
    elif prompt is not None and not isinstance(prompt, str):
        row["error"] = f"{source}: field 'prompt' must be a string, got {type(prompt).__name__}"
    elif question is None and prompt is None:
        row["error"] = f"{source}: missing field 'question' (or 'prompt')"
    elif not (question if question is not None else prompt).strip():
        row["error"] = f"{source}: empty {'question' if question is not None else 'prompt'}"
    row["question"] = question if isinstance(question, str) else None
    row["prompt"] = prompt if isinstance(prompt, str) and row["question"] is None else None
    return row


def parse_jsonl_file(file_row: dict[str, Any]) -> list[dict[str, Any]]:
    """flat_map stage: a {path, bytes} file -> one normalized row per non-blank line."""
    path, data = file_row["path"], file_row["bytes"]
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    name = PurePosixPath(path).name
    rows = []
    for line_number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        source = f"{name}:{line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            rows.append(normalize_record(None, source, source) | {"error": f"{source}: not valid JSON ({err.msg})"})
            continue
        rows.append(normalize_record(record, source, source))
    return rows


def parse_parquet_batch(batch: Any) -> Any:
    """map_batches stage over Parquet rows: normalize to the row schema (needs `path` column)."""
    import pyarrow as pa

    rows = []
    for record in batch.to_pylist():
        path = record.pop("path", "corpus")
        source = f"{PurePosixPath(str(path)).name}"
        fallback = f"{source}:{_content_id(record)}"
        rows.append(normalize_record(record, source, fallback))
    return pa.Table.from_pylist(rows, schema=row_schema())


def _content_id(record: dict[str, Any]) -> str:
    import hashlib

    text = record.get("question") or record.get("prompt") or json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha1(str(text).encode()).hexdigest()[:12]


def row_schema() -> Any:
    import pyarrow as pa

    return pa.schema([(name, pa.string()) for name in ROW_COLUMNS])


def output_schema() -> Any:
    """Schema of every output batch (fixed, so shards always concatenate)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()), ("source", pa.string()), ("text", pa.string()),
            ("token_ids", pa.list_(pa.int32())), ("num_prompt_tokens", pa.int32()),
            ("stop_reason", pa.string()), ("new_tokens", pa.int32()), ("target_calls", pa.int32()),
            ("draft_calls", pa.int32()), ("tokens_per_target_call", pa.float64()),
            ("accepted_lengths", pa.list_(pa.int32())), ("wall_s", pa.float64()),
            ("replica", pa.string()), ("error", pa.string()),
        ]
    )  # fmt: skip


# --------------------------------------------------------------------------- decoding


def load_decode_state(config: DecodeStageConfig, num_gpus: float = 0.0) -> DecodeState:
    """Load the pair, the rule (and judge) and the engine; done once per replica."""
    import socket

    import torch

    from autojudge.decode import SpeculativeEngine, build_rule
    from autojudge.models import load_pair
    from autojudge.tasks import get_task

    device = config.device
    if device == "auto":
        device = "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(max(1, config.threads or 1))
    pair = load_pair(config.target, config.draft, device=device)
    if config.mode == "autojudge":
        if not config.judge:
            raise InputError("mode autojudge needs --judge JUDGE_DIR (from `autojudge train`)")
        from autojudge.pipeline.judge import Judge

        judge = Judge.load(config.judge)
        judge.check_model_pair(pair)
        rule = build_rule("autojudge", judge=judge, threshold=config.threshold)
    else:
        rule = build_rule(config.mode, top_k=config.top_k, epsilon=config.epsilon, min_prob=config.min_prob)
    tokenizer = pair.tokenizer
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    engine = SpeculativeEngine(
        pair.target, pair.draft, rule, window=config.window, eos_token_ids=eos,
        pad_token_id=tokenizer.pad_token_id or 0,
    )  # fmt: skip
    max_prompt = config.max_prompt_tokens
    if max_prompt is None:
        context = min(
            getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None) or 10**9
            for model in (pair.target, pair.draft)
        )
        max_prompt = max(1, context - config.max_new_tokens)
    replica = f"{socket.gethostname()}:{os.getpid()}"
    return DecodeState(config, pair, engine, get_task(config.task), max_prompt, replica)


def _error_row(row: dict[str, Any], error: str, replica: str, num_prompt_tokens: int | None = None) -> dict[str, Any]:
    return {
        "id": row.get("id"), "source": row.get("source"), "text": None, "token_ids": [],
        "num_prompt_tokens": num_prompt_tokens, "stop_reason": None, "new_tokens": 0, "target_calls": 0,
        "draft_calls": 0, "tokens_per_target_call": None, "accepted_lengths": [], "wall_s": None,
        "replica": replica, "error": error,
    }  # fmt: skip


def _prompt_ids(state: DecodeState, row: dict[str, Any]) -> list[int]:
    from autojudge.tasks import Problem

    problem = Problem(id=str(row["id"]), question=row.get("question"), prompt=row.get("prompt"))
    text = state.task.render_prompt(problem, state.pair.tokenizer)
    return state.pair.tokenizer(text, add_special_tokens=False).input_ids


def decode_rows(state: DecodeState, rows: list[dict[str, Any]]) -> Any:
    """The stage function: rows {id, source, question, prompt, error} -> output Table (same order).

    Invalid rows and rows whose decode fails get `error`; the others are decoded together.
    When the batched decode raises, each row is retried alone so only the culprit fails.
    """
    import pyarrow as pa

    config = state.config
    outputs: list[dict[str, Any] | None] = [None] * len(rows)
    todo: list[tuple[int, list[int]]] = []  # (row index, prompt ids)
    for index, row in enumerate(rows):
        if row.get("error"):
            outputs[index] = _error_row(row, row["error"], state.replica)
            continue
        try:
            ids = _prompt_ids(state, row)
        except Exception as err:  # template or tokenizer failure on odd text
            outputs[index] = _error_row(row, f"cannot tokenize: {type(err).__name__}: {err}", state.replica)
            continue
        if not ids:
            outputs[index] = _error_row(row, "prompt has no tokens", state.replica, 0)
        elif len(ids) > state.max_prompt_tokens:
            outputs[index] = _error_row(
                row, f"prompt too long: {len(ids)} tokens > {state.max_prompt_tokens}", state.replica, len(ids)
            )
        else:
            todo.append((index, ids))

    def generate(items: list[tuple[int, list[int]]]) -> None:
        results = state.engine.generate(
            [ids for _, ids in items], config.max_new_tokens, stop_strings=config.stop, tokenizer=state.pair.tokenizer
        )
        for (index, ids), result in zip(items, results):
            m = result.metrics
            outputs[index] = {
                "id": rows[index]["id"], "source": rows[index].get("source"),
                "text": state.pair.tokenizer.decode(result.token_ids, skip_special_tokens=True),
                "token_ids": list(result.token_ids), "num_prompt_tokens": len(ids),
                "stop_reason": result.stop_reason, "new_tokens": m.new_tokens, "target_calls": m.target_calls,
                "draft_calls": m.draft_calls, "tokens_per_target_call": m.tokens_per_target_call,
                "accepted_lengths": list(m.accepted_lengths), "wall_s": m.wall_s,
                "replica": state.replica, "error": None,
            }  # fmt: skip

    if todo:
        try:
            generate(todo)
        except Exception:  # isolate the failing row(s); the others still get their output
            for item in todo:
                try:
                    generate([item])
                except Exception as err:
                    message = f"decode failed: {type(err).__name__}: {err}"
                    outputs[item[0]] = _error_row(rows[item[0]], message, state.replica, len(item[1]))
    return pa.Table.from_pylist(outputs, schema=output_schema())


# --------------------------------------------------------------------------- driver


def _filesystem(path: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) for a local path or a URI such as s3://bucket/key."""
    import pyarrow.fs as pafs

    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def _corpus_files(path: str, input_format: str) -> tuple[Any, list[str], str]:
    """(filesystem, files, format) of the corpus; InputError when nothing matches."""
    import pyarrow.fs as pafs

    fs, inner = _filesystem(path)
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"{path}: corpus not found")
    if info.type == pafs.FileType.Directory:
        files = sorted(
            i.path for i in fs.get_file_info(pafs.FileSelector(inner, recursive=True))
            if i.type == pafs.FileType.File and not PurePosixPath(i.path).name.startswith((".", "_"))
        )  # fmt: skip
    else:
        files = [inner]

    def kind(name: str) -> str | None:
        if name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
            return "jsonl"
        if name.endswith(".parquet"):
            return "parquet"
        return None

    if input_format == "auto":
        kinds = {kind(f) for f in files} - {None}
        if len(kinds) != 1:
            raise InputError(f"{path}: cannot tell the format (found {sorted(kinds) or 'no .jsonl/.parquet files'}); pass --input-format")
        input_format = kinds.pop()
    files = [f for f in files if kind(f) == input_format] if len(files) > 1 else files
    if not files:
        raise InputError(f"{path}: no {input_format} files")
    return fs, files, input_format


def read_corpus(path: str, input_format: str = "auto", rows_per_block: int = 16, io_cpus: float = 0.25) -> Any:
    """A Ray Dataset of normalized rows {id, source, question, prompt, error}."""
    import ray.data

    fs, files, input_format = _corpus_files(path, input_format)
    if input_format == "jsonl":
        # Read bytes, parse per line ourselves: one bad line must not fail the whole read.
        ds = ray.data.read_binary_files(files, include_paths=True, filesystem=fs, num_cpus=io_cpus)
        ds = ds.flat_map(parse_jsonl_file, num_cpus=io_cpus)
    else:
        ds = ray.data.read_parquet(files, filesystem=fs, include_paths=True, num_cpus=io_cpus)
        ds = ds.map_batches(parse_parquet_batch, batch_format="pyarrow", batch_size=1024, num_cpus=io_cpus)
    return ds.repartition(target_num_rows_per_block=rows_per_block)


def prepare_output(path: str, overwrite: bool) -> None:
    """Refuse a non-empty output folder unless `overwrite` (then empty it)."""
    import pyarrow.fs as pafs

    fs, inner = _filesystem(path)
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.File:
        raise InputError(f"{path}: output must be a folder, found a file")
    if info.type == pafs.FileType.Directory and fs.get_file_info(pafs.FileSelector(inner)):
        if not overwrite:
            raise InputError(f"{path} is not empty; pass --overwrite to replace it")
        fs.delete_dir_contents(inner)


def summarize(path: str, wall_s: float, config: InferConfig) -> dict[str, Any]:
    """Counts and rates from the written shards; also written to OUTPUT/_summary.json."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    fs, inner = _filesystem(path)
    columns = ["id", "error", "new_tokens", "target_calls", "replica"]
    table = pads.dataset(inner, filesystem=fs, format="parquet").to_table(columns=columns)
    ok = table.filter(pc.is_null(table.column("error")))
    new_tokens = int(pc.sum(ok.column("new_tokens")).as_py() or 0)
    target_calls = int(pc.sum(ok.column("target_calls")).as_py() or 0)
    replicas = pc.value_counts(table.column("replica")).to_pylist()
    summary = {
        "rows": table.num_rows,
        "unique_ids": len(pc.unique(table.column("id"))),
        "errors": table.num_rows - ok.num_rows,
        "new_tokens": new_tokens,
        "target_calls": target_calls,
        "tokens_per_target_call": new_tokens / target_calls if target_calls else 0.0,
        "wall_s": round(wall_s, 3),
        "rows_per_s": table.num_rows / wall_s if wall_s > 0 else 0.0,
        "tokens_per_s": new_tokens / wall_s if wall_s > 0 else 0.0,
        "rows_per_replica": {item["values"]: item["counts"] for item in replicas},
        "config": asdict(config),
    }
    with fs.open_output_stream(f"{inner.rstrip('/')}/_summary.json") as handle:
        handle.write(json.dumps(summary, indent=2, default=str).encode())
    return summary


def _check_pair_tokenizers(stage: DecodeStageConfig) -> None:
    """Fail fast on the driver (tokenizers only, no weights) instead of in every actor."""
    from autojudge.models import ModelPairError, check_same_tokenizer, load_tokenizer

    try:
        check_same_tokenizer(load_tokenizer(stage.target), load_tokenizer(stage.draft), stage.target, stage.draft)
    except (ModelPairError, OSError, ValueError) as err:
        raise InputError(f"cannot use --target {stage.target} / --draft {stage.draft}: {err}") from None


def _check_room_for_tasks(config: InferConfig) -> None:
    """Replicas that take every CPU starve the read/write tasks and the job hangs; refuse that."""
    import sys

    import ray

    total = ray.cluster_resources().get("CPU", 0.0)
    reserved = config.num_replicas * config.num_cpus_per_replica
    if total and total - reserved < 1.0:  # the streaming repartition's tasks ask for one full CPU
        message = (
            f"{config.num_replicas} replicas x {config.num_cpus_per_replica} CPUs leave no CPU of the cluster's "
            f"{total:g} for reading and writing; use fewer --num-replicas or --num-cpus-per-replica 0.5"
        )
        if config.address or os.environ.get("RAY_ADDRESS"):
            print(f"autojudge infer: warning: {message} (an autoscaling cluster may add nodes)", file=sys.stderr)
        else:
            raise InputError(message)


def run_infer(config: InferConfig) -> dict[str, Any]:
    """Decode the whole corpus on the cluster and write Parquet; returns the summary."""
    import ray

    from autojudge.actors.decoder import Decoder
    from autojudge.ray_utils import init_ray

    stage = config.stage
    if config.batch_size < 1 or config.num_replicas < 1 or stage.max_new_tokens < 1 or stage.window < 1:
        raise InputError("--batch-size, --num-replicas, --max-new-tokens and --window must be >= 1")
    if stage.mode == "autojudge" and not stage.judge:
        raise InputError("mode autojudge needs --judge JUDGE_DIR (from `autojudge train`)")
    if stage.threads is None:
        stage.threads = max(1, int(config.num_cpus_per_replica))
    _check_pair_tokenizers(stage)
    prepare_output(config.output, config.overwrite)
    init_ray(config.address, num_cpus=config.local_cpus)
    ray.data.DataContext.get_current().enable_progress_bars = True
    _check_room_for_tasks(config)

    start = time.perf_counter()
    ds = read_corpus(config.input, config.input_format, config.batch_size, config.io_cpus)
    ds = ds.map_batches(
        Decoder,
        fn_constructor_kwargs={"config": stage, "num_gpus": config.num_gpus_per_replica},
        batch_size=config.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=config.num_replicas),
        num_gpus=config.num_gpus_per_replica,
        num_cpus=config.num_cpus_per_replica,
    )
    fs, inner = _filesystem(config.output)
    ds.write_parquet(inner, filesystem=fs, ray_remote_args={"num_cpus": config.io_cpus})
    return summarize(config.output, time.perf_counter() - start, config)
