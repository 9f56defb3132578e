"""Batch inference over a corpus with Ray Data: read -> parse -> decode (actor pool) -> Parquet.

    corpus (JSONL or Parquet; local, s3://, gs://, any pyarrow filesystem)
      -> rows {id, source, question, prompt, error}        (parse: a bad line becomes an error row)
      -> map_batches(Decoder, concurrency=replicas)         (models loaded once per actor)
      -> OUTPUT/*.parquet: id, text, token_ids, stats ..., error    + OUTPUT/_summary.json

Every input row yields exactly one output row. A row that cannot be decoded (not JSON,
no `question`/`prompt`, empty, too long, a decode failure) carries its message in the
`error` column and null text; the rest of its batch is decoded normally.

This module is the driver (read, plan, write, summarize). The decode replica and its stage
function `decode_rows` live in `autojudge/actors/decoder.py`.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

from autojudge.actors.decoder import DecodeStageConfig, output_schema  # noqa: F401 (the stage config travels with InferConfig)
from autojudge.errors import InputError

ROW_COLUMNS = ("id", "source", "question", "prompt", "error")  # the parsed corpus rows


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
    for line_number, raw in enumerate(data.split(b"\n"), start=1):
        source = f"{name}:{line_number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            message = f"{source}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
            rows.append(normalize_record(None, source, source) | {"error": message})
            continue
        if not line.strip():
            continue
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


def check_corpus(path: str, input_format: str = "auto") -> None:
    """Before Ray starts: the corpus exists, its format is known, and (local files) it has a row."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs, files, input_format = _corpus_files(path, input_format)
    if not isinstance(fs, pafs.LocalFileSystem):
        return  # remote: counted by the job itself
    for file in files:
        try:
            if input_format == "parquet":
                if pq.ParquetFile(file).metadata.num_rows:
                    return
                continue
            opener = gzip.open if file.endswith(".gz") else open
            with opener(file, "rb") as handle:
                if any(line.strip() for line in handle):
                    return
        except Exception as err:  # noqa: BLE001 - pyarrow, gzip and OS errors all mean "cannot read"
            raise InputError(f"{file}: cannot read as {input_format} ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    raise InputError(f"{path}: the corpus has no rows")


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


SUMMARY_NAME = "_summary.json"


def _output_entries(fs: Any, inner: str) -> list[str]:
    """Everything under the output folder as `checks.tree_entries` lists it (a URI: the filesystem's listing)."""
    import pyarrow.fs as pafs

    from autojudge.checks import tree_entries

    if isinstance(fs, pafs.LocalFileSystem):
        return tree_entries(inner)
    suffix = {pafs.FileType.Directory: "/", pafs.FileType.File: ""}
    base = inner.rstrip("/")
    return sorted(info.path[len(base) + 1:] + suffix.get(info.type, "@")
                  for info in fs.get_file_info(pafs.FileSelector(base, recursive=True)))


def _is_own_output(fs: Any, inner: str) -> Any:
    """`entry -> bool`: a file `autojudge infer` writes into its output folder: `_summary.json`, or a
    top-level Parquet file with exactly the decode stage's columns (`output_schema`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = output_schema().names

    def is_own(entry: str) -> bool:
        if entry == SUMMARY_NAME:
            return True
        if "/" in entry or not entry.endswith(".parquet") or entry.endswith("@"):
            return False
        try:
            return pq.read_schema(f"{inner.rstrip('/')}/{entry}", filesystem=fs).names == columns
        except (pa.ArrowException, OSError):
            return False

    return is_own


def check_output_overwrite(path: str) -> None:
    """--overwrite may remove only an earlier infer output: refuse an output folder holding anything
    else at any depth (mined data, a judge, an export, user files), naming it. Local paths and URIs."""
    import pyarrow.fs as pafs

    from autojudge.checks import refuse_foreign

    fs, inner = _filesystem(path)
    if fs.get_file_info(inner).type != pafs.FileType.Directory:
        return
    refuse_foreign("--output", path, _output_entries(fs, inner), _is_own_output(fs, inner), "`autojudge infer`",
                   "--overwrite only replaces an earlier `autojudge infer` output; choose another --output")


def prepare_output(path: str, overwrite: bool) -> None:
    """Refuse a non-empty output folder unless `overwrite`; then remove the earlier infer output in it
    (and only that: `check_output_overwrite`)."""
    import pyarrow.fs as pafs

    fs, inner = _filesystem(path)
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.File:
        raise InputError(f"{path}: output must be a folder, found a file")
    if info.type == pafs.FileType.Directory and fs.get_file_info(pafs.FileSelector(inner)):
        if not overwrite:
            raise InputError(f"{path} is not empty; pass --overwrite to replace it")
        check_output_overwrite(path)
        for entry in _output_entries(fs, inner):
            fs.delete_file(f"{inner.rstrip('/')}/{entry}")


def summarize(path: str, wall_s: float, config: InferConfig) -> dict[str, Any]:
    """Counts and rates from the written shards; also written to OUTPUT/_summary.json."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    fs, inner = _filesystem(path)
    columns = ["id", "error", "new_tokens", "target_calls", "replica"]
    try:
        table = pads.dataset(inner, filesystem=fs, format="parquet").to_table(columns=columns)
    except FileNotFoundError:
        raise InputError(f"{config.input}: no rows were read from the corpus, nothing was written") from None
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
    with fs.open_output_stream(f"{inner.rstrip('/')}/{SUMMARY_NAME}") as handle:
        handle.write(json.dumps(summary, indent=2, default=str).encode())
    return summary


def run_infer(config: InferConfig, setup: Any = None) -> dict[str, Any]:
    """Decode the whole corpus on the cluster and write Parquet; returns the summary. `setup`: the
    stage's decoding setup as `setup.resolve_setup` checked it (`autojudge infer`); without it the
    stage's `DecodingConfig` is checked here (`setup.resolve`), before Ray starts."""
    import ray

    from autojudge.actors.decoder import Decoder
    from autojudge.ray_utils import check_actor_resources, init_ray
    from autojudge.setup import resolve

    if config.batch_size < 1 or config.num_replicas < 1:
        raise InputError("--batch-size and --num-replicas must be >= 1")
    stage = config.stage
    setup = setup or resolve(stage.decoding)  # the pair's tokenizers, the judge against them, the window: on the driver
    stage.decoding = setup.config
    stage.batch_size = config.batch_size
    if stage.threads is None:
        stage.threads = max(1, int(config.num_cpus_per_replica))
    prepare_output(config.output, config.overwrite)
    init_ray(config.address, num_cpus=config.local_cpus)
    ray.data.DataContext.get_current().enable_progress_bars = True
    # replicas that take every CPU starve the read/write tasks (the streaming repartition's ask for one full CPU)
    check_actor_resources("decode replicas", config.num_replicas, config.num_cpus_per_replica, config.num_gpus_per_replica,
                          config.address, spare_cpus=1.0,
                          advice="use fewer --num-replicas, or --num-cpus-per-replica 0.5")

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
