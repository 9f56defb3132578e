"""A throw-away cgroup that bounds the memory and the process count of a sandboxed program.

`ProgramCgroup.create(memory_bytes, max_processes)` makes a child of this process's own
cgroup (cgroup v2: one folder with `memory.max` and `pids.max`; cgroup v1: one folder in
the `memory` hierarchy with `memory.limit_in_bytes` (+ `memory.memsw.limit_in_bytes`) and
one in the `pids` hierarchy with `pids.max`) and returns None when that is not possible
(not root, read-only /sys/fs/cgroup, no memory controller). A process joins with
`join()` (called in the child before exec, so every descendant is inside); `peak_bytes()`
reads the high-water mark of memory use; `close()` kills what is left and removes it.
The memory limit covers every process of the program together (and the tmpfs pages it
writes); the kernel's OOM killer ends a process of the group when it is exceeded.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def _own_path(controller: str) -> str:
    """This process's cgroup path in the hierarchy of `controller` ('' = the v2 unified one)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return "/"
    for line in lines:
        _, controllers, path = line.split(":", 2)
        names = controllers.split(",") if controllers else []
        if (controller and controller in names) or (not controller and not names):
            return path
    return "/"


def _child_of(base: Path, own: str) -> Path:
    """A fresh folder under our own cgroup when it is visible, else under the hierarchy's root."""
    parent = base / own.lstrip("/")
    if not parent.is_dir():
        parent = base
    return parent / f"autojudge-sandbox-{uuid.uuid4().hex[:12]}"


class ProgramCgroup:
    """One program's cgroup folders (v2: one; v1: memory and pids)."""

    def __init__(self, version: int, memory_dir: Path, pids_dir: Path | None) -> None:
        self.version = version
        self.memory_dir = memory_dir
        self.pids_dir = pids_dir

    @classmethod
    def create(cls, memory_bytes: int, max_processes: int) -> "ProgramCgroup | None":
        """The cgroup, or None where this process may not make one."""
        if os.geteuid() != 0:
            return None
        for maker in (cls._create_v2, cls._create_v1):
            try:
                group = maker(memory_bytes, max_processes)
            except OSError:
                group = None
            if group is not None:
                return group
        return None

    @classmethod
    def _create_v2(cls, memory_bytes: int, max_processes: int) -> "ProgramCgroup | None":
        controllers = ROOT / "cgroup.controllers"
        if not controllers.exists() or "memory" not in controllers.read_text().split():
            return None
        folder = _child_of(ROOT, _own_path(""))
        if "memory" not in (folder.parent / "cgroup.subtree_control").read_text().split():
            return None
        folder.mkdir()
        group = cls(2, folder, None)
        try:
            (folder / "memory.max").write_text(str(memory_bytes))
            if (folder / "memory.swap.max").exists():
                (folder / "memory.swap.max").write_text("0")
            if (folder / "pids.max").exists():
                (folder / "pids.max").write_text(str(max_processes))
        except OSError:
            group.close()
            return None
        return group

    @classmethod
    def _create_v1(cls, memory_bytes: int, max_processes: int) -> "ProgramCgroup | None":
        memory_root = ROOT / "memory"
        if not (memory_root / "memory.limit_in_bytes").exists():
            return None
        memory_dir = _child_of(memory_root, _own_path("memory"))
        memory_dir.mkdir()
        group = cls(1, memory_dir, None)
        try:
            (memory_dir / "memory.limit_in_bytes").write_text(str(memory_bytes))
            if (memory_dir / "memory.memsw.limit_in_bytes").exists():
                (memory_dir / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
            pids_root = ROOT / "pids"
            if (pids_root / "cgroup.procs").exists():
                group.pids_dir = _child_of(pids_root, _own_path("pids"))
                group.pids_dir.mkdir()
                (group.pids_dir / "pids.max").write_text(str(max_processes))
        except OSError:
            group.close()
            return None
        return group

    def _dirs(self) -> list[Path]:
        return [d for d in (self.memory_dir, self.pids_dir) if d is not None]

    def join(self, pid: int = 0) -> None:
        """Move `pid` (0: the calling process) into the cgroup (async-signal-safe enough for preexec)."""
        for folder in self._dirs():
            fd = os.open(folder / "cgroup.procs", os.O_WRONLY)
            try:
                os.write(fd, str(pid or os.getpid()).encode())
            finally:
                os.close(fd)

    def pids(self) -> list[int]:
        """Processes in the cgroup now."""
        found: set[int] = set()
        for folder in self._dirs():
            try:
                found.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return sorted(found)

    def peak_bytes(self) -> int | None:
        """Largest memory use of the whole group so far (None if the kernel does not say)."""
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((self.memory_dir / name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill_all(self, deadline_s: float = 10.0) -> bool:
        """SIGKILL every process in the group until none is left; whether that was reached."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            pids = self.pids()
            if not pids:
                return True
            if self.version == 2 and (self.memory_dir / "cgroup.kill").exists():
                (self.memory_dir / "cgroup.kill").write_text("1")
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        return not self.pids()

    def close(self) -> None:
        """Kill what is left and remove the folders."""
        self.kill_all()
        for folder in self._dirs():
            for _ in range(100):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # the last processes are still exiting
                    time.sleep(0.01)
