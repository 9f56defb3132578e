"""The sandbox's launcher: runs as root, builds the program's namespaces, then runs it unprivileged.

Started by `autojudge.tasks.sandbox.run_python` as `python -I -S sandbox_init.py CONFIG_JSON`
(stdlib only: with -I this file's folder is not on sys.path). Steps:

1. `unshare` new mount, network, PID, IPC and UTS namespaces, then fork: the child is
   PID 1 of the new PID namespace (the "init"); this launcher waits for it and exits as
   it did (a signal it died of is re-raised here, so the parent sees the same status).
2. The init, still root, makes every mount private and remounts *every* mount point
   read-only (read from /proc/self/mountinfo), so no host path is writable at all; then
   mounts fresh size-capped tmpfs over /tmp, /var/tmp, /dev/shm and /run (scratch space,
   and host Unix sockets there vanish), a fresh /proc for the new PID namespace (host
   processes are invisible), and a size-capped tmpfs over the work dir, into which it
   copies the program.
3. It sets the resource limits, drops to the unprivileged uid (no groups), forks the
   program (`python -I program.py`, PID 2) and reaps until it exits. When the init
   exits, the kernel kills every process left in the namespace.

Any failure before the program starts prints `sandbox setup failed: ...` on stderr and
exits with SETUP_FAILED.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import resource
import signal
import struct
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 1 << 14, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
SETUP_FAILED = 125
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run")
"""Get a fresh tmpfs each (mode 1777 but /run 0755): the program's scratch space; what the host had there is hidden."""
OPTION_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
                "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
RLIMITS = {"as": resource.RLIMIT_AS, "cpu": resource.RLIMIT_CPU, "fsize": resource.RLIMIT_FSIZE,
           "nproc": resource.RLIMIT_NPROC, "nofile": resource.RLIMIT_NOFILE, "core": resource.RLIMIT_CORE}

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda text: None if text is None else text.encode()  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def mount_points() -> list[tuple[str, int]]:
    """(mount point, per-mount flags to keep) of every mount this namespace sees."""
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])  # \040 -> space
            flags = 0
            for option in fields[5].split(","):
                flags |= OPTION_FLAGS.get(option, 0)
            points.append((point, flags))
    return points


def remount_all_read_only() -> None:
    """Every mount read-only (those under /proc are replaced by a fresh /proc below)."""
    for point, flags in mount_points():
        if point == "/proc" or point.startswith("/proc/"):
            continue
        try:
            mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except OSError as err:
            if not os.path.exists(point):  # shadowed by a later mount: unreachable anyway
                continue
            raise OSError(err.errno, f"cannot make {point} read-only: {err.strerror}") from None


def build_filesystem(config: dict) -> str:
    """Steps 2 of the module docstring; returns the program's path inside the sandbox."""
    workdir = config["workdir"]
    with open(os.path.join(workdir, "program.py"), encoding="utf-8") as handle:
        source = handle.read()  # read before the work dir is covered
    mount("none", "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks to the host
    remount_all_read_only()
    size = int(config["tmpfs_bytes"])
    for directory in SCRATCH_DIRS:
        if os.path.isdir(directory) and not os.path.islink(directory):
            mode = "0755" if directory == "/run" else "1777"
            mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode={mode}")
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.makedirs(workdir, exist_ok=True)
    mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=0700")
    program = os.path.join(workdir, "program.py")
    with open(program, "w", encoding="utf-8") as handle:
        handle.write(source)
    uid = int(config["uid"])
    os.chown(workdir, uid, uid)
    os.chown(program, uid, uid)
    return program


def drop_to(config: dict) -> None:
    """Resource limits, then the unprivileged uid/gid with no supplementary groups."""
    for name, value in config["rlimits"].items():
        resource.setrlimit(RLIMITS[name], tuple(value))
    uid = int(config["uid"])
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def init(config: dict, status_fd: int) -> None:
    """PID 1 of the new namespaces: set up, run the program, report how it ended."""
    try:
        program = build_filesystem(config)
        drop_to(config)
        os.chdir(config["workdir"])
    except Exception as err:  # noqa: BLE001 - any set-up failure ends the run before the program
        print(f"sandbox setup failed: {err}", file=sys.stderr, flush=True)
        os._exit(SETUP_FAILED)
    child = os.fork()
    if child == 0:
        try:
            os.execve(config["python"], [config["python"], "-I", program], config["env"])
        finally:
            os._exit(127)
    while True:  # PID 1 reaps every orphan until the program itself ends
        pid, status = os.wait()
        if pid == child:
            break
    os.write(status_fd, struct.pack("ii", os.WIFSIGNALED(status), os.WTERMSIG(status) if os.WIFSIGNALED(status)
                                    else os.WEXITSTATUS(status)))
    os._exit(0)


def main(argv: list[str]) -> None:
    config = json.loads(argv[1])
    try:
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
    except OSError as err:
        print(f"sandbox setup failed: {err}", file=sys.stderr, flush=True)
        os._exit(SETUP_FAILED)
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_fd)
        init(config, write_fd)
    os.close(write_fd)
    _, status = os.waitpid(child, 0)
    report = os.read(read_fd, 8)
    if len(report) == 8:
        signalled, value = struct.unpack("ii", report)
        if signalled:
            signal.signal(value, signal.SIG_DFL)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            os.kill(os.getpid(), value)
            os._exit(128 + value)  # a signal that does not kill (stopped / ignored): say so anyway
        os._exit(value)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else SETUP_FAILED)


if __name__ == "__main__":
    main(sys.argv)
