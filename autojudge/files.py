"""Writing artifacts so that a kill or a full disk never leaves a half-written one.

`atomic_path(path)` yields a temporary name beside `path` (hidden, unique per process); the
caller writes it; on success it is flushed to disk and renamed over `path` (atomic on POSIX),
on any failure it is removed. Either the old file or the complete new one is there, never a
half-written one. A full disk (ENOSPC, EDQUOT) becomes `NoSpaceError`, a one-line InputError
"no space left on DIR". Every artifact writer uses it: mining shards and manifests
(`pipeline/shards.py`), judges (`Judge.save`), JSONL outputs (`tasks.write_jsonl`) and reports.

This module is at the bottom of the layers (like `errors`): it imports nothing heavy.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from autojudge.errors import InputError

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class NoSpaceError(InputError):
    """The disk (or the quota) is full: what was finished is kept, the half-written file removed."""


def is_no_space(err: BaseException) -> bool:
    """An OSError that says the disk or the quota is full (pyarrow sets errno too)."""
    return isinstance(err, OSError) and (err.errno in NO_SPACE_ERRNOS or "No space left on device" in str(err))


def no_space(folder: str | os.PathLike[str]) -> NoSpaceError:
    """The one message for a full disk."""
    return NoSpaceError(f"no space left on {folder}; finished files are kept, the half-written one was removed "
                        "(free some space and run the command again)")


@contextmanager
def atomic_path(path: str | os.PathLike[str], before_replace: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path` (its folder created); when the block ends, flush it to disk and rename it over
    `path` (a link: over its target), calling `before_replace` just before the rename. On any error the
    temporary file is removed (and a full disk is a NoSpaceError)."""
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()  # written through the link, as open() would
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield temporary
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(temporary, path)
    except BaseException as err:
        temporary.unlink(missing_ok=True)
        if is_no_space(err):
            raise no_space(path.parent) from None
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` through a temporary file (`atomic_path`)."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 `text` to `path` through a temporary file (`atomic_path`)."""
    write_bytes_atomic(path, text.encode("utf-8"))
