"""Parquet shards of a mining folder: atomic writes, reading back, and the resume set.

Layout of a mining folder DIR (this module is its one reader and writer):
- `DIR/labels/<shard>.parquet`: one row per mismatch (`LABEL_SCHEMA`);
- `DIR/responses/<shard>.parquet`: one row per prompt (`RESPONSE_SCHEMA`);
- `DIR/manifest.json`: models, task, settings and counts.

One process writes a folder at a time: `writer_lock` (an exclusive `flock` on `DIR/.lock`,
which the kernel releases when its holder dies) refuses a second writer, and `read_table`
refuses a folder holding the same label (prompt id and position) or prompt twice.

A shard is a group of finished prompts; its labels file and responses file share the
name. Every file is written to a temporary name and renamed into place (atomic on
POSIX), labels first, responses last: a prompt is finished iff it has a row in a
responses shard. A labels shard without its responses sibling (a crash between the two
renames) is an orphan, removed by `clean_orphans` before resuming, so a resumed run
never duplicates nor loses a prompt.

A mining folder is recognised by its own manifest, and holds only what the miner writes
(`MINER_ENTRIES`): `check_mining_folder` refuses to mine into a folder holding anything else,
before a file is touched, and `require_manifest` refuses to read one as mined data.
"""

from __future__ import annotations

import json
import os
import sys
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute in check_unique
import pyarrow.parquet as pq

from autojudge.files import atomic_path, write_text_atomic

LABEL_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("position", pa.int32()),
        ("target_token", pa.int32()),
        ("draft_token", pa.int32()),
        ("important", pa.bool_()),
        ("h_target", pa.list_(pa.float32())),
        ("h_draft", pa.list_(pa.float32())),
    ]
)
RESPONSE_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("prompt_token_ids", pa.list_(pa.int32())),
        ("initial_response_ids", pa.list_(pa.int32())),
        ("final_response_ids", pa.list_(pa.int32())),
        ("target_answer", pa.string()),
        ("num_labels", pa.int32()),
        ("error", pa.string()),
    ]
)
LABELS, RESPONSES, MANIFEST = "labels", "responses", "manifest.json"
LOCK = ".lock"
KEYS = {LABELS: ("prompt_id", "position"), RESPONSES: ("prompt_id",)}
"""Columns that identify a row: a label is (prompt, position), a response is its prompt."""


def _lock_or_refuse(handle: Any, out_dir: str | Path) -> None:
    """Take the exclusive lock on an open lock file, or close it and raise InputError naming the holder."""
    import fcntl

    from autojudge.errors import InputError

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise InputError(f"{out_dir} is being written by {holder}; wait for it to end, or use another --out") from None


def check_no_writer(out_dir: str | Path) -> None:
    """InputError when another process holds the folder's writer lock (a check before any work;
    `writer_lock` is what keeps a second writer out). Creates nothing."""
    try:
        handle = open(Path(out_dir) / LOCK, encoding="utf-8")
    except OSError:  # no lock file (or no folder): nobody is writing
        return
    _lock_or_refuse(handle, out_dir)
    handle.close()  # closing drops the lock just taken


@contextmanager
def writer_lock(out_dir: str | Path) -> Iterator[None]:
    """Hold the folder's writer lock while the block runs: an exclusive `flock` on `DIR/.lock`
    (the folder must exist). A second writer gets an InputError naming the holder; the kernel
    drops the lock when its holder exits or is killed, so a crashed writer never leaves it stuck.
    The file is removed when the block ends; a writer that opened it just before re-checks
    that the file it locked is still the one at the path."""
    path = Path(out_dir) / LOCK
    while True:
        handle = open(path, "a+", encoding="utf-8")
        _lock_or_refuse(handle, out_dir)
        try:
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()  # the holder before removed the file between our open and flock: take the new one
    program = "autojudge" if Path(sys.argv[0]).stem in ("cli", "autojudge") else Path(sys.argv[0]).name
    handle.seek(0)
    handle.truncate()
    holder = f"process {os.getpid()} ({' '.join([program, *sys.argv[1:]])[:300]}; since {time.strftime('%Y-%m-%d %H:%M:%S')})\n"
    try:
        os.write(handle.fileno(), holder.encode())  # unbuffered: a full disk fails here, not at close
    except OSError:  # no room for the holder's name: the lock holds without it (the writes after say "no space")
        pass
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked (see above)
        handle.close()


MINER_ENTRIES = re.compile(
    r"manifest\.json|\.lock|\.manifest\.json\.\d+\.tmp|(labels|responses)/"
    r"|(labels|responses)/shard-[^/]+\.parquet|(labels|responses)/\.shard-[^/]+\.parquet\.\d+\.tmp"
)
"""Everything the miner writes in a mining folder (`checks.tree_entries` paths: folders end in '/'):
the manifest, the shards (`new_shard_name`) and the temporary files of `files.atomic_path`."""


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of a mining folder ({} when it has none). The one reader: a file that is not
    JSON, or not an object with a 'settings' object, is an InputError naming it."""
    from autojudge.errors import InputError

    path = Path(out_dir) / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: corrupt manifest, not valid JSON ({getattr(err, 'msg', err)})") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("settings", {}), dict):
        raise InputError(f"{path}: corrupt manifest, not a mining manifest (expected a JSON object with a 'settings' object)")
    return manifest


def check_mining_folder(out: str | Path, name: str = "--out") -> None:
    """`out` may be mined into: new, empty, or a mining folder recognised by its manifest that holds only
    what the miner writes (`MINER_ENTRIES`). Anything else (a user's file in labels/, an export's shards,
    a folder without a manifest) is refused before a file is touched: the miner never treats files it
    cannot prove it wrote as finished work or as orphans to remove."""
    from autojudge.checks import describe_entries, refuse_foreign, tree_entries
    from autojudge.errors import InputError

    out = Path(out)
    if not out.is_dir():
        return
    entries = tree_entries(out)
    if MANIFEST not in entries:
        leftovers = [e for e in entries if e not in (f"{LABELS}/", f"{RESPONSES}/") and not (e.endswith(".tmp") and MINER_ENTRIES.fullmatch(e))]
        if leftovers:  # a start killed before its manifest leaves only temporary files and empty folders
            raise InputError(f"{name} {out} is not a mining folder (no {MANIFEST} of `autojudge mine`) and is not empty: "
                             f"{describe_entries(leftovers)}; choose a new or empty {name}")
        return
    refuse_foreign(name, out, entries, MINER_ENTRIES.fullmatch, "`autojudge mine`",
                   f"mining resumes only a folder it wrote; move those away or choose a new or empty {name}")


def require_manifest(folder: str | Path, name: str = "--data") -> None:
    """A folder read as mined data has the manifest `autojudge mine` writes (an empty folder passes:
    the readers say it has no shards)."""
    from autojudge.errors import InputError

    folder = Path(folder)
    if not folder.is_dir() or (folder / MANIFEST).is_file() or not any(folder.iterdir()):
        return
    hint = ""
    if (folder / "README.md").is_file():
        hint = " (it looks like an `autojudge export` output: use the mining folder it was exported from)"
    raise InputError(f"{name} {folder} is not a mining folder: it has no {MANIFEST} of `autojudge mine`{hint}")


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write a Parquet file under a temporary name, fsync it, then rename it into place (`files.atomic_path`:
    a full disk removes the temporary file and says so)."""
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)


def write_json_atomic(payload: dict[str, Any], path: Path) -> None:
    """The same for a JSON file."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def new_shard_name(index: int) -> str:
    """A name unique across runs: start time and process id of this run, then a counter."""
    return f"shard-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{index:05d}"


def write_shard(out_dir: str | Path, name: str, labels: list[dict[str, Any]], responses: list[dict[str, Any]]) -> None:
    """Write one shard: labels first, responses (the commit mark) last."""
    out_dir = Path(out_dir)
    write_atomic(pa.Table.from_pylist(labels, schema=LABEL_SCHEMA), out_dir / LABELS / f"{name}.parquet")
    write_atomic(pa.Table.from_pylist(responses, schema=RESPONSE_SCHEMA), out_dir / RESPONSES / f"{name}.parquet")


def clean_orphans(out_dir: str | Path) -> list[Path]:
    """Remove temporary files and labels shards whose responses shard is missing; return them. Only
    names the miner writes (`MINER_ENTRIES`) are touched."""
    out_dir = Path(out_dir)
    removed = []
    candidates = [p for folder in (out_dir / LABELS, out_dir / RESPONSES) if folder.exists() for p in folder.glob(".*.tmp")]
    if (out_dir / LABELS).exists():
        candidates += [p for p in (out_dir / LABELS).glob("*.parquet") if not (out_dir / RESPONSES / p.name).exists()]
    for path in candidates:
        if MINER_ENTRIES.fullmatch(path.relative_to(out_dir).as_posix()) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def shard_paths(out_dir: str | Path, kind: str) -> list[Path]:
    """Committed shards of one kind (`labels` or `responses`), sorted by name."""
    folder = Path(out_dir) / kind
    if not folder.exists():
        return []
    paths = sorted(folder.glob("*.parquet"))
    if kind == LABELS:  # only committed ones
        paths = [p for p in paths if (Path(out_dir) / RESPONSES / p.name).exists()]
    return paths


def read_table(out_dir: str | Path, kind: str, columns: list[str] | None = None) -> pa.Table:
    """All committed shards of one kind as one table (an empty table with the schema if none).

    The one reader of a mining folder (train, export, resume and the counts all use it): a shard
    that is not Parquet, or lacks a column of the schema, is an InputError naming the file."""
    from autojudge.errors import InputError

    schema = LABEL_SCHEMA if kind == LABELS else RESPONSE_SCHEMA
    wanted = list(columns or schema.names)
    tables = []
    for path in shard_paths(out_dir, kind):
        try:
            names = pq.read_schema(path).names
            missing = [name for name in wanted if name not in names]
            if missing:
                raise InputError(f"{path}: missing column(s) {', '.join(missing)} (not an `autojudge mine` {kind} shard)")
            tables.append(pq.read_table(path, columns=wanted))
        except (pa.ArrowException, OSError) as err:
            raise InputError(f"{path}: cannot read as Parquet ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    if not tables:
        return schema.empty_table().select(wanted)
    table = pa.concat_tables(tables, promote_options="permissive")
    check_unique(table, out_dir, kind)
    return table


def check_unique(table: pa.Table, out_dir: str | Path, kind: str) -> None:
    """InputError when rows repeat a key (`KEYS`) that the table holds: a label or a prompt written
    twice (two miners on one folder) would count twice in training and in an export."""
    from autojudge.errors import InputError

    keys = list(KEYS[kind])
    if not set(keys) <= set(table.column_names) or table.num_rows == 0:
        return
    counts = table.select(keys).group_by(keys).aggregate([([], "count_all")])
    repeated = counts.filter(pa.compute.greater(counts.column("count_all"), 1)).sort_by([(key, "ascending") for key in keys])
    if repeated.num_rows:
        first = repeated.slice(0, 1).to_pylist()[0]
        key = ", ".join(f"{name} {first[name]!r}" for name in keys)
        raise InputError(
            f"{Path(out_dir) / kind}: {repeated.num_rows} {kind.rstrip('s')}(s) written more than once (first: {key}); "
            "two miners wrote this folder at once: mine it again into a new --out"
        )


def read_labels(out_dir: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Label rows of a mining folder."""
    return read_table(out_dir, LABELS, columns)


def read_responses(out_dir: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Response rows (one per finished prompt) of a mining folder."""
    return read_table(out_dir, RESPONSES, columns)


def finished_prompt_ids(out_dir: str | Path) -> set[str]:
    """Prompts that already have a committed responses row (with or without an error)."""
    return set(read_responses(out_dir, ["prompt_id"]).column("prompt_id").to_pylist())


def count_rows(out_dir: str | Path) -> dict[str, int]:
    """Counts for the manifest: prompts, labels, important labels, prompts with an error."""
    responses = read_responses(out_dir, ["prompt_id", "error"])
    important = read_labels(out_dir, ["important"]).column("important").to_pylist()
    errors = sum(1 for e in responses.column("error").to_pylist() if e is not None)
    return {"prompts": responses.num_rows, "labels": len(important), "important": sum(important), "errors": errors}
