"""Reading JSONL files with errors that name the file and the line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Iterator

from autojudge.errors import InputError


def _open_bytes(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def _decode_line(raw: bytes, path: Path, line_number: int) -> tuple[str | None, str | None]:
    """(text, None) for a valid UTF-8 line, else (None, an error naming the file, line and byte)."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as err:
        return None, f"{path}:{line_number}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})"


def scan_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield (line_number, record, error) for each non-blank line; a bad line (not UTF-8, not
    JSON, not an object) has record None and an error naming the file and line. Raises
    InputError only when the file is missing or cannot be read."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a JSONL file")
    try:
        with _open_bytes(path) as handle:
            for line_number, raw in enumerate(handle, start=1):
                line, error = _decode_line(raw, path, line_number)
                if error is not None:
                    yield line_number, None, error
                    continue
                assert line is not None
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    yield line_number, None, f"{path}:{line_number}: not valid JSON ({err.msg})"
                    continue
                if not isinstance(record, dict):
                    yield line_number, None, f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}"
                    continue
                yield line_number, record, None
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise InputError(f"{path}: cannot read ({err})") from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line_number, record) for each non-blank line; raise InputError on a bad line."""
    for line_number, record, error in scan_jsonl(path):
        if error is not None:
            raise InputError(error)
        assert record is not None
        yield line_number, record


def read_jsonl(path: str | Path, required: tuple[str, ...] = (), one_of: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Read all records; each must have every key in `required` and at least one key of `one_of`."""
    records = []
    for line_number, record in iter_jsonl(path):
        missing = [key for key in required if key not in record]
        if missing:
            raise InputError(f"{path}:{line_number}: missing field(s) {', '.join(repr(k) for k in missing)}")
        if one_of and not any(key in record for key in one_of):
            raise InputError(f"{path}:{line_number}: needs one of the fields {', '.join(repr(k) for k in one_of)}")
        records.append(record)
    return records


def write_jsonl(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write records one per line (UTF-8), creating parent folders, through a temporary file
    (`files.atomic_path`): a kill or a full disk leaves the old file, or none, never a part of one."""
    from autojudge.files import atomic_path

    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
