"""Run untrusted Python (model-written programs plus their tests) in a contained subprocess.

What contains a program, and where each guarantee holds (the README's "Sandbox" list
says the same):

Always (any user):
- its own temporary directory as cwd/HOME/TMPDIR, deleted afterwards;
- `python -I` with an environment scrubbed to a short allow-list (no inherited secrets);
- rlimits set before exec: RLIMIT_AS (per process), RLIMIT_CPU, RLIMIT_FSIZE (largest
  file, stdout/stderr included), RLIMIT_NPROC, RLIMIT_NOFILE, RLIMIT_CORE = 0;
- stdout and stderr go to unnamed temporary files (O_TMPFILE) that only the parent
  holds: they are read back, capped, through the parent's own descriptors, never by a
  path the program could replace (e.g. with a symlink to /etc/shadow);
- a wall-clock timeout; the program leads its own session, killed at the end.

Under root, additionally:
- a fresh unprivileged uid/gid, random per run: RLIMIT_NPROC binds, root-owned files
  are out of reach, and clean-up kills every process of that uid (setsid() escapees too);
- a cgroup (v2, else v1 memory + pids; `autojudge.tasks.cgroup`) when /sys/fs/cgroup is
  writable: `total_memory_bytes` bounds the memory of all the program's processes
  together, `max_processes` their number. Without one, the total bound is
  `max_processes_without_cgroup` processes x `total_memory_bytes / that` address space each.
- when the kernel allows it (probed once): new mount, network, PID, IPC and UTS
  namespaces, built by `autojudge/tasks/sandbox_init.py`: *every* mount is read-only,
  fresh tmpfs over /tmp, /var/tmp, /dev/shm, /run and the work dir (size-capped), a
  fresh /proc that shows only the program's processes, no network and no abstract Unix
  sockets of the host. When the program ends, its namespace's init ends and the kernel
  kills whatever it left.

As a non-root user only the "always" list applies: RLIMIT_NPROC counts all of that
user's processes, a setsid() child can outlive the run, and the program may write
wherever the user may. Not covered in any mode: seccomp syscall filtering; a host Unix
socket that is world-writable in a folder other than the ones covered by tmpfs stays
connectable (read-only mounts do not stop connect()). For hostile code at scale use a
real jail (gVisor, nsjail, Firecracker).
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from autojudge.tasks.cgroup import ProgramCgroup

CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID = 0x00020000, 0x40000000, 0x20000000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 1 << 14, 1 << 18
INIT_SCRIPT = Path(__file__).with_name("sandbox_init.py")
"""The launcher that builds the namespaces (run by this interpreter, as root)."""
SETUP_FAILED = 125
"""Exit status of the launcher when the namespaces could not be built (the program never ran)."""
_UID_RANGE = (200_000, 900_000)
SANDBOX_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0"}
"""The whole environment of a sandboxed program (plus HOME and TMPDIR = its temp dir)."""


@dataclass
class SandboxLimits:
    """Limits for one sandboxed run."""

    timeout_s: float = 10.0
    """Wall-clock limit; the whole process group / uid / cgroup is killed when it passes."""
    cpu_s: int = 10
    """RLIMIT_CPU in seconds (the kernel kills with SIGXCPU/SIGKILL)."""
    memory_bytes: int = 1 << 30
    """RLIMIT_AS: address space of each process (with a cgroup; without one see below)."""
    total_memory_bytes: int = 1 << 30
    """Memory of all the program's processes together: the cgroup's limit; without a cgroup,
    each process gets RLIMIT_AS = this / `max_processes_without_cgroup` (if smaller than `memory_bytes`)."""
    max_processes: int = 32
    """Processes at once: the cgroup's pids.max and RLIMIT_NPROC (binding for a non-root uid only)."""
    max_processes_without_cgroup: int = 8
    """RLIMIT_NPROC where no cgroup bounds the total memory (keeps processes x RLIMIT_AS small)."""
    file_size_bytes: int = 8 << 20
    """RLIMIT_FSIZE: largest file a process may write, stdout/stderr included."""
    output_bytes: int = 64 << 10
    """How much of stdout and of stderr is read back."""
    max_open_files: int = 64
    """RLIMIT_NOFILE."""
    drop_privileges: bool = True
    """Under root, run as a fresh unprivileged uid (see module docstring)."""
    isolate_namespaces: bool = True
    """Under root, when the kernel allows it: mount, network, PID, IPC and UTS namespaces with every
    mount read-only and private tmpfs scratch dirs (see `sandbox_init.py`)."""
    use_cgroup: bool = True
    """Under root, when /sys/fs/cgroup is writable: bound total memory and processes with a cgroup."""
    tmpfs_bytes: int = 64 << 20
    """Size of each private tmpfs (the sandbox's disk quota)."""


@dataclass
class SandboxResult:
    """What happened to one run."""

    status: str
    """"ok" (exit 0), "failed" (non-zero exit), "timeout", "killed" (by a signal, e.g. a limit) or "error" (could not start)."""
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    truncated: bool = False
    """stdout or stderr was longer than `output_bytes`."""
    uid: int | None = None
    """The uid the program ran as."""
    namespaces: bool = False
    """Whether it ran in its own mount/net/PID namespaces with a read-only host."""
    pid: int | None = None
    """Process id of the program's launcher (its session and process group id too)."""
    cgroup: bool = False
    """Whether a cgroup bounded its total memory and process count."""
    memory_peak_bytes: int | None = None
    """Highest memory use of all its processes together (from the cgroup; None without one)."""
    memory_bound_bytes: int | None = None
    """The total memory bound that held for this run (None: only the per-process RLIMIT_AS)."""
    notes: list[str] = field(default_factory=list)
    """Anything unusual (killing signal, clean-up trouble)."""

    @property
    def passed(self) -> bool:
        return self.status == "ok"


def _world_executable(path: str) -> bool:
    """Whether an unprivileged user can execute `path` (every directory on the way searchable)."""
    try:
        real = Path(path).resolve()
        if not real.stat().st_mode & stat.S_IXOTH:
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents)
    except OSError:
        return False


def sandbox_python(unprivileged: bool) -> str:
    """The interpreter for sandboxed programs: this one, unless an unprivileged uid cannot run it
    (e.g. it lives under /root), then the system python3."""
    if not unprivileged or _world_executable(sys.executable):
        return sys.executable
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"):
        if _world_executable(candidate):
            return candidate
    raise RuntimeError("no python3 that an unprivileged user can run (needed for the sandbox under root)")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


_NAMESPACES_WORK: bool | None = None


def namespaces_available() -> bool:
    """Whether this process may create mount + net + PID namespaces, make mounts read-only and
    mount tmpfs and proc (probed once, in a child, then one trial run of the launcher; where
    either fails, programs run without namespaces)."""
    global _NAMESPACES_WORK
    if _NAMESPACES_WORK is None:
        if os.geteuid() != 0 or not INIT_SCRIPT.exists():
            _NAMESPACES_WORK = False
        else:
            probe = os.fork()
            if probe == 0:
                code = 1
                try:
                    libc = _libc()
                    if libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID) == 0 and \
                            libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0:
                        inner = os.fork()  # PID 1 of the new namespace
                        if inner == 0:
                            ok = libc.mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1048576") == 0
                            ok = ok and libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV, None) == 0
                            os._exit(0 if ok else 1)
                        code = 0 if os.waitpid(inner, 0)[1] == 0 else 1
                finally:
                    os._exit(code)
            _NAMESPACES_WORK = os.waitpid(probe, 0)[1] == 0
            if _NAMESPACES_WORK:  # the whole launcher once (read-only remounts can fail on odd hosts)
                trial = run_python("pass", SandboxLimits(timeout_s=30.0, use_cgroup=False))
                _NAMESPACES_WORK = trial.passed and trial.namespaces
    return _NAMESPACES_WORK


def proc_files(name: str) -> Iterator[tuple[int, str]]:
    """(PID, text of /proc/PID/`name`) of every process whose file could be read (one may exit meanwhile)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/{name}") as handle:
                text = handle.read()
        except OSError:
            continue
        yield int(entry), text


def processes_of_uid(uid: int) -> list[int]:
    """PIDs whose real uid is `uid` (the first number of the `Uid:` line of /proc/PID/status)."""
    found = []
    for pid, status in proc_files("status"):
        real_uid = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)  # Uid: real effective saved filesystem
        if real_uid and int(real_uid[1]) == uid:
            found.append(pid)
    return found


def processes_in_session(session_id: int) -> list[int]:
    """PIDs whose session id is `session_id` (from /proc/PID/stat)."""
    found = []
    for pid, line in proc_files("stat"):
        fields = line.rsplit(")", 1)[1].split() if ")" in line else []  # after "(comm)": state ppid pgrp session
        if len(fields) > 4 and int(fields[3]) == session_id:
            found.append(pid)
    return found


def _kill_uid(uid: int, deadline_s: float = 10.0) -> bool:
    """SIGKILL every process of `uid`: a forked helper takes the uid and calls kill(-1).
    Repeats until none is left; returns whether that was reached."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not processes_of_uid(uid):
            return True
        helper = os.fork()
        if helper == 0:  # no exec: RLIMIT_NPROC cannot stop this helper
            try:
                os.setgid(uid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)  # every process this uid may signal: exactly its own
            finally:
                os._exit(0)
        os.waitpid(helper, 0)
        time.sleep(0.01)
    return not processes_of_uid(uid)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_capped(handle: BinaryIO, cap: int) -> tuple[str, bool]:
    """Up to `cap` bytes of a file through the descriptor we hold (never reopened by path)."""
    handle.seek(0)
    data = handle.read(cap + 1)
    return data[:cap].decode("utf-8", errors="replace"), len(data) > cap


def rlimits(limits: SandboxLimits, cgroup: bool) -> dict[str, tuple[int, int]]:
    """The resource limits of a run (name -> (soft, hard)); without a cgroup, fewer and smaller processes
    so that processes x address space stays within `total_memory_bytes`."""
    processes, memory = limits.max_processes, limits.memory_bytes
    if not cgroup:
        processes = min(processes, limits.max_processes_without_cgroup)
        memory = min(memory, limits.total_memory_bytes // max(processes, 1))
    return {
        "as": (memory, memory), "cpu": (limits.cpu_s, limits.cpu_s + 1),
        "fsize": (limits.file_size_bytes, limits.file_size_bytes), "nproc": (processes, processes),
        "nofile": (limits.max_open_files, limits.max_open_files), "core": (0, 0),
    }


def _child_setup(limits: dict[str, tuple[int, int]], uid: int | None, group: ProgramCgroup | None,
                 namespaces: bool) -> None:
    """Runs in the child between fork and exec: new session, cgroup; without namespaces also the
    limits and the uid drop (with namespaces the launcher does those after building them)."""
    import resource

    os.setsid()
    if group is not None:
        group.join()
    if namespaces:
        return
    names = {"as": resource.RLIMIT_AS, "cpu": resource.RLIMIT_CPU, "fsize": resource.RLIMIT_FSIZE,
             "nproc": resource.RLIMIT_NPROC, "nofile": resource.RLIMIT_NOFILE, "core": resource.RLIMIT_CORE}
    for name, value in limits.items():
        resource.setrlimit(names[name], value)
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


def _command(python: str, program: Path, namespaces: bool, config: dict[str, Any]) -> list[str]:
    """The launcher (namespaces) or the program itself."""
    if namespaces:
        return [sys.executable, "-I", "-S", str(INIT_SCRIPT), json.dumps(config)]  # -S: stdlib only, fast start
    return [python, "-I", str(program)]


def run_python(source: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run `source` as a Python program in the sandbox and report how it ended."""
    limits = limits or SandboxLimits()
    as_root = os.geteuid() == 0
    uid = random.SystemRandom().randrange(*_UID_RANGE) if as_root and limits.drop_privileges else None
    group = ProgramCgroup.create(limits.total_memory_bytes, limits.max_processes) if as_root and limits.use_cgroup else None
    limit_values = rlimits(limits, group is not None)
    bound = None if as_root and uid is None and group is None else limits.total_memory_bytes
    try:
        with tempfile.TemporaryDirectory(prefix="autojudge-sandbox-") as workdir, \
                tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            work = Path(workdir)
            program = work / "program.py"
            program.write_text(source, encoding="utf-8")
            if uid is not None:
                os.chown(work, uid, uid)
                os.chmod(work, 0o700)
            env = dict(SANDBOX_ENV, HOME=workdir, TMPDIR=workdir)
            started = time.monotonic()
            try:
                python = sandbox_python(uid is not None)
                namespaces = uid is not None and limits.isolate_namespaces and namespaces_available()
                config = {"python": python, "uid": uid, "workdir": workdir, "tmpfs_bytes": limits.tmpfs_bytes,
                          "rlimits": limit_values, "env": env}
                process = subprocess.Popen(
                    _command(python, program, namespaces, config), cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=err, close_fds=True,
                    preexec_fn=lambda: _child_setup(limit_values, uid, group, namespaces),
                )
            except (OSError, RuntimeError, subprocess.SubprocessError) as error:
                return SandboxResult("error", None, "", f"sandbox could not start: {error}", 0.0, uid=uid)
            timed_out = False
            try:
                returncode = process.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(process.pid)  # the session leader's pgid is its pid; also kills leftovers
                if timed_out:
                    returncode = process.wait()
            wall_s = time.monotonic() - started
            notes = []
            if group is not None and not group.kill_all():
                notes.append("processes of the sandbox cgroup survived clean-up")
            if uid is not None and not _kill_uid(uid):
                notes.append(f"processes of sandbox uid {uid} survived clean-up")
            if uid is None and processes_in_session(process.pid):
                _kill_group(process.pid)
            stdout, cut_out = _read_capped(out, limits.output_bytes)
            stderr, cut_err = _read_capped(err, limits.output_bytes)
    finally:
        peak = group.peak_bytes() if group is not None else None
        if group is not None:
            group.close()
    if timed_out:
        status = "timeout"
    elif namespaces and returncode == SETUP_FAILED and stderr.startswith("sandbox setup failed"):
        status = "error"
    elif returncode == 0:
        status = "ok"
    elif returncode < 0:
        status = "killed"
        notes.append(f"killed by signal {signal.Signals(-returncode).name}")
    else:
        status = "failed"
    return SandboxResult(status, returncode, stdout, stderr, wall_s, cut_out or cut_err, uid, namespaces,
                         process.pid, group is not None, peak, bound, notes)
