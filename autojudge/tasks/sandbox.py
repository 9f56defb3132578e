"""Run untrusted Python (model-written programs plus their tests) in a contained subprocess.

What contains a program here, and why each piece is there:
- its own temporary directory as cwd/HOME/TMPDIR, deleted afterwards;
- `python -I` (isolated mode: no PYTHON* variables, no user site, no cwd on sys.path)
  with an environment scrubbed to a short allow-list (no inherited secrets);
- resource limits set in the child before exec: RLIMIT_AS (memory), RLIMIT_CPU,
  RLIMIT_FSIZE (largest file; stdout/stderr go to files, so it caps them too),
  RLIMIT_NPROC, RLIMIT_NOFILE, RLIMIT_CORE = 0; stdout/stderr are read back capped;
- a wall-clock timeout; the child leads its own session / process group, killed at the end.

Under root (containers, this machine), RLIMIT_NPROC alone is useless (root ignores
it) and the program could write anywhere, so the child additionally:
- drops to a fresh unprivileged uid/gid picked at random per run (no passwd entry
  needed). RLIMIT_NPROC now caps a fork bomb at `max_processes`, root-owned files are
  out of reach, and clean-up kills *every* process of that uid - also ones that
  left the group with setsid() - through a forked helper that takes the uid and
  calls kill(-1, SIGKILL) (no exec, so NPROC cannot stop it);
- when the kernel allows (probed once): enters new network and mount namespaces:
  no network at all, and private size-capped tmpfs over /tmp, /var/tmp, /dev/shm and
  its work dir, so the world-writable places of the host stay untouched and the
  disk use is capped at `tmpfs_bytes` per directory.

As a non-root user only the rlimits and the process-group kill apply: RLIMIT_NPROC
counts all of that user's processes, a setsid() child can outlive the run, and the
program may write wherever the user may. Not covered in any mode: seccomp syscall
filtering, CPU/memory cgroups (RLIMIT_AS is per process, so a capped number of
processes times `memory_bytes` is the memory bound). For hostile code at scale use
a real jail (gVisor, nsjail, Firecracker).
"""

from __future__ import annotations

import ctypes
import os
import random
import resource
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 1 << 14, 1 << 18
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
"""World-writable places that get a private, size-capped tmpfs inside the sandbox."""
_UID_RANGE = (200_000, 900_000)
SANDBOX_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0"}
"""The whole environment of a sandboxed program (plus HOME and TMPDIR = its temp dir)."""


@dataclass
class SandboxLimits:
    """Limits for one sandboxed run."""

    timeout_s: float = 10.0
    """Wall-clock limit; the whole process group / uid is killed when it passes."""
    cpu_s: int = 10
    """RLIMIT_CPU in seconds (the kernel kills with SIGXCPU/SIGKILL)."""
    memory_bytes: int = 1 << 30
    """RLIMIT_AS: address space of each process."""
    max_processes: int = 32
    """RLIMIT_NPROC (only binding for a non-root uid, hence the uid drop under root)."""
    file_size_bytes: int = 8 << 20
    """RLIMIT_FSIZE: largest file a process may write, stdout/stderr included."""
    output_bytes: int = 64 << 10
    """How much of stdout and of stderr is read back."""
    max_open_files: int = 64
    """RLIMIT_NOFILE."""
    drop_privileges: bool = True
    """Under root, run as a fresh unprivileged uid (see module docstring)."""
    isolate_namespaces: bool = True
    """Under root, when the kernel allows it: a new network namespace (no network) and a new
    mount namespace where /tmp, /var/tmp, /dev/shm and the work dir are private tmpfs."""
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
    """Whether it ran in private net + mount namespaces."""
    pid: int | None = None
    """Process id of the program (its session and process group id too)."""
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


def _mount_tmpfs(libc: ctypes.CDLL, target: str, size: int, mode: str) -> None:
    options = f"size={size},mode={mode}".encode()
    if libc.mount(b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options) != 0:
        raise OSError(ctypes.get_errno(), f"mount tmpfs on {target}")


def _enter_namespaces(limits: SandboxLimits, workdir: str, source: str, uid: int) -> None:
    """New net + mount namespaces; private tmpfs over the world-writable dirs and the work dir,
    which gets a fresh copy of the program."""
    libc = _libc()
    if libc.unshare(CLONE_NEWNS | CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:  # keep our mounts to ourselves
        raise OSError(ctypes.get_errno(), "make / private")
    for directory in PRIVATE_DIRS:
        if os.path.isdir(directory):
            _mount_tmpfs(libc, directory, limits.tmpfs_bytes, "1777")
    os.makedirs(workdir, exist_ok=True)
    _mount_tmpfs(libc, workdir, limits.tmpfs_bytes, "0700")
    program = os.path.join(workdir, "program.py")
    with open(program, "w", encoding="utf-8") as handle:
        handle.write(source)
    os.chown(workdir, uid, uid)
    os.chown(program, uid, uid)
    os.chdir(workdir)


def _child_setup(limits: SandboxLimits, uid: int | None, namespaces: bool, workdir: str, source: str) -> None:
    """Runs in the child between fork and exec: new session, namespaces, limits, uid drop."""
    os.setsid()
    if uid is not None and namespaces:
        _enter_namespaces(limits, workdir, source, uid)
    memory, cpu = limits.memory_bytes, limits.cpu_s
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.max_open_files, limits.max_open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


_NAMESPACES_WORK: bool | None = None


def namespaces_available() -> bool:
    """Whether this process may create net + mount namespaces and mount tmpfs (probed once, in a child)."""
    global _NAMESPACES_WORK
    if _NAMESPACES_WORK is None:
        if os.geteuid() != 0:
            _NAMESPACES_WORK = False
        else:
            probe = os.fork()
            if probe == 0:
                code = 1
                try:
                    libc = _libc()
                    if libc.unshare(CLONE_NEWNS | CLONE_NEWNET) == 0 and libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0:
                        _mount_tmpfs(libc, "/tmp", 1 << 20, "1777")
                        code = 0
                finally:
                    os._exit(code)
            _NAMESPACES_WORK = os.waitpid(probe, 0)[1] == 0
    return _NAMESPACES_WORK


def processes_of_uid(uid: int) -> list[int]:
    """PIDs whose real uid is `uid` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as handle:
                for line in handle:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            found.append(int(entry))
                        break
        except (OSError, ValueError):
            continue
    return found


def processes_in_session(session_id: int) -> list[int]:
    """PIDs whose session id is `session_id` (from /proc/PID/stat)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 4 and int(fields[3]) == session_id:  # fields after "(comm)": state ppid pgrp session
            found.append(int(entry))
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


def _read_capped(path: Path, cap: int) -> tuple[str, bool]:
    with path.open("rb") as handle:
        data = handle.read(cap + 1)
    return data[:cap].decode("utf-8", errors="replace"), len(data) > cap


def run_python(source: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run `source` as a Python program in the sandbox and report how it ended."""
    limits = limits or SandboxLimits()
    as_root = os.geteuid() == 0
    uid = random.SystemRandom().randrange(*_UID_RANGE) if as_root and limits.drop_privileges else None
    with tempfile.TemporaryDirectory(prefix="autojudge-sandbox-") as workdir:
        work = Path(workdir)
        program = work / "program.py"
        program.write_text(source, encoding="utf-8")
        if uid is not None:
            os.chown(work, uid, uid)
            os.chmod(work, 0o700)
        env = dict(SANDBOX_ENV, HOME=workdir, TMPDIR=workdir)
        stdout_path, stderr_path = work / ".stdout", work / ".stderr"
        started = time.monotonic()
        try:
            python = sandbox_python(uid is not None)
            namespaces = uid is not None and limits.isolate_namespaces and namespaces_available()
            with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
                process = subprocess.Popen(
                    [python, "-I", str(program)], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=err, close_fds=True, preexec_fn=lambda: _child_setup(limits, uid, namespaces, workdir, source),
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
        if uid is not None and not _kill_uid(uid):
            notes.append(f"processes of sandbox uid {uid} survived clean-up")
        if uid is None and processes_in_session(process.pid):
            _kill_group(process.pid)
        stdout, cut_out = _read_capped(stdout_path, limits.output_bytes)
        stderr, cut_err = _read_capped(stderr_path, limits.output_bytes)
    if timed_out:
        status = "timeout"
    elif returncode == 0:
        status = "ok"
    elif returncode < 0:
        status = "killed"
        notes.append(f"killed by signal {signal.Signals(-returncode).name}")
    else:
        status = "failed"
    return SandboxResult(status, returncode, stdout, stderr, wall_s, cut_out or cut_err, uid, namespaces, process.pid, notes)
