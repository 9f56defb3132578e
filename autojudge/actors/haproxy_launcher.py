"""`autojudge-haproxy`: how Ray Serve starts HAProxy for `autojudge serve` on a local cluster.

When `autojudge serve` starts its own Ray cluster in Serve's high-throughput mode, it points
`RAY_SERVE_HAPROXY_BINARY_PATH` at this command (and `AUTOJUDGE_HAPROXY_BINARY` at the real
HAProxy). Ray runs it as `autojudge-haproxy -db -f CONFIG [reload flags]`, once at start and
once per reload, from its HAProxyManager actor. It then:

1. ties HAProxy's life to that actor's process (Linux: `prctl(PR_SET_PDEATHSIG, SIGKILL)`, which
   the exec keeps): when the actor dies, even when the whole server is SIGKILLed, HAProxy dies
   with it instead of holding the server's ports as an orphan;
2. removes HAProxy's statistics page (`listen stats`, port 8404) and Prometheus exporter
   (`frontend prometheus`, port 9101) from CONFIG, in place: Ray binds both on every interface
   whatever the server's `--host`, and the server needs neither (Ray reads HAProxy's state
   through its admin socket and reports it in the server's /metrics);
3. replaces itself with the real HAProxy, same arguments (Ray finds its HAProxy processes by
   the CONFIG path on their command line, and signals the pid it started).

Standard library only: it runs at every HAProxy start.
"""

from __future__ import annotations

import os
import signal
import sys

REAL_BINARY_ENV = "AUTOJUDGE_HAPROXY_BINARY"
DROPPED_SECTIONS = ("frontend prometheus", "listen stats")
"""HAProxy config sections removed before HAProxy starts (see the module docstring)."""
PR_SET_PDEATHSIG = 1


def without_sections(config: str, names: tuple[str, ...] = DROPPED_SECTIONS) -> str:
    """The HAProxy config text without the sections named `names` ("frontend prometheus"): a
    section runs from its header (a line that starts in column 0) to the next header."""
    kept, dropping = [], False
    for line in config.splitlines(keepends=True):
        if line.strip() and not line[0].isspace() and not line.startswith("#"):
            dropping = " ".join(line.split()[:2]) in names
        if not dropping:
            kept.append(line)
    return "".join(kept)


def die_with_parent() -> None:
    """SIGKILL this process when the process that started it dies (Linux; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # it died before the prctl
        os._exit(1)


def main() -> None:
    args = sys.argv[1:]
    binary = os.environ.get(REAL_BINARY_ENV)
    if not binary:
        sys.exit(f"autojudge-haproxy: ${REAL_BINARY_ENV} names no HAProxy binary")
    die_with_parent()
    if "-f" in args[:-1]:
        path = args[args.index("-f") + 1]
        with open(path) as f:
            config = f.read()
        kept = without_sections(config)
        if kept != config:
            with open(path, "w") as f:
                f.write(kept)
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main()
