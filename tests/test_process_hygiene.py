"""Commands that start a local Ray cluster, run as a user runs them: `python -m autojudge.cli ...`
in a process group of its own, toy pair, `--address local`. What their processes listen on, and
what is left of them after SIGTERM, SIGINT or SIGKILL.

`autojudge serve --host 127.0.0.1`: no listening socket of its processes answers HTTP at an
address of this machine other than loopback (the gRPC servers that Serve's replicas open on every
interface for calls between deployments require Ray's authentication token and do not speak
HTTP/1); SIGTERM or SIGINT stop it with exit status 0, requests in flight end (an answer or an
error) and no process it started is left; after a SIGKILL of its process group no process it
started is left within GONE_WITHIN_S and a new server starts; HAProxy dies with the Ray worker
that started it even when nothing of Ray is left to stop it; a stale HAProxy on --port is
stopped, any other holder named. `autojudge mine`: the same exposure and SIGKILL checks.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.helpers import wait_until as wait_for

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 300.0
GONE_WITHIN_S = 60.0
"""How long the processes of a stopped or killed command may take to go (their workers exit once
they see their raylet die; measured: under 5 s on 2 busy cores)."""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nothing listens on the port (connections of the past in TIME_WAIT aside, as for any server)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


class Command:
    """One `autojudge` command in a process group of its own, its output in `log`."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "autojudge.cli", *argv], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.seen: dict[int, psutil.Process] = {}

    def tree(self) -> list[psutil.Process]:
        """The command's process and every descendant now (also remembered for `left`)."""
        try:
            root = psutil.Process(self.process.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            processes = []
        self.seen.update((p.pid, p) for p in processes)
        return processes

    def left(self) -> list[str]:
        """'name (pid)' of every process seen in `tree` that still runs."""
        running = []
        for process in self.seen.values():
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    running.append(f"{process.name()} ({process.pid})")
            except psutil.NoSuchProcess:
                pass
        return running

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def clean_up(self) -> None:
        """Whatever a failed test left: SIGKILL the group and every process seen."""
        self.signal_group(signal.SIGKILL)
        for process in self.seen.values():
            try:
                process.kill()
            except psutil.Error:
                pass
        self.process.wait(timeout=30)


@pytest.fixture
def commands(tmp_path):
    started: list[Command] = []

    def start(*argv: str) -> Command:
        command = Command([*argv], tmp_path / f"command{len(started)}.log")
        started.append(command)
        return command

    yield start
    for command in started:
        command.clean_up()


def start_server(start, port: int) -> Command:
    """`autojudge serve` on the toy pair at 127.0.0.1:`port`, once /health answers 200."""
    server = start("serve", "--host", LOOPBACK, "--port", str(port), "--address", "local", "--no-access-log")

    def healthy() -> bool:
        assert server.process.poll() is None, f"the server exited with {server.process.returncode}:\n{tail(server.log)}"
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/health", timeout=10) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    assert wait_for(healthy, START_TIMEOUT_S, interval=1.0), f"no /health in {START_TIMEOUT_S:.0f} s:\n{tail(server.log)}"
    return server


def machine_addresses() -> list[str]:
    """This machine's IP addresses other than loopback (and IPv6 link-local)."""
    found = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                ip = ipaddress.ip_address(address.address.split("%")[0])
                if not ip.is_loopback and not ip.is_link_local:
                    found.append(str(ip))
    return found


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def answers_http(ip: str, port: int) -> bool:
    """Whether an HTTP/1 request to ip:port gets an HTTP status line back (any status, 401 too)."""
    try:
        with socket.create_connection((ip, port), timeout=3) as sock:
            sock.settimeout(3)
            sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: autojudge-test\r\n\r\n")
            head = b""
            while len(head) < 5:
                chunk = sock.recv(5 - len(head))
                if not chunk:
                    break
                head += chunk
            return head == b"HTTP/"
    except OSError:
        return False


def name_of(process: psutil.Process) -> str:
    """The process's name, or "" when it has exited since it was listed (short-lived Ray helpers do)."""
    try:
        return process.name()
    except psutil.Error:
        return ""


def http_off_loopback(processes: list[psutil.Process]) -> list[str]:
    """'name (pid) listening on ip:port answers HTTP at address' for every listening socket of
    `processes` bound beyond loopback that answers HTTP at one of this machine's other addresses
    (a socket bound to every interface is tried at each; on a machine with no other address, at
    loopback: it would answer on any network the machine joins)."""
    addresses = machine_addresses()
    found = []
    for process in processes:
        try:
            name, connections = process.name(), process.net_connections(kind="inet")
        except psutil.Error:
            continue
        for conn in connections:
            ip, port = conn.laddr.ip, conn.laddr.port
            if conn.status != psutil.CONN_LISTEN or is_loopback(ip):
                continue
            bound = ipaddress.ip_address(ip.split("%")[0])
            if not bound.is_unspecified:
                targets = [ip]
            else:
                targets = [a for a in addresses if bound.version == 6 or ipaddress.ip_address(a).version == 4]
                targets = targets or [LOOPBACK if bound.version == 4 else "::1"]
            found += [f"{name} ({process.pid}) listening on {ip}:{port} answers HTTP at {t}" for t in targets if answers_http(t, port)]
    return found


def stream_until(url: str, stop: threading.Event, outcomes: list[str]) -> None:
    """Streamed completions, one after another until `stop`: each outcome is 'done' (the stream
    ended with [DONE]) or the error that ended it; a request that hangs leaves this thread running."""
    body = json.dumps({"prompt": "Tom has 3 apples and buys 5 more.", "max_tokens": 200, "speculate": False, "stream": True}).encode()
    while not stop.is_set():
        request = urllib.request.Request(f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                text = response.read().decode()
            outcomes.append("done" if "data: [DONE]" in text else f"cut: {text[-80:]!r}")
        except (urllib.error.URLError, OSError) as err:  # refused, reset, an error status
            outcomes.append(f"error: {err}")
            time.sleep(0.2)


# --------------------------------------------------------------------------- serve


def test_serve_on_loopback_answers_http_on_loopback_only(commands):
    port = free_port()
    server = start_server(commands, port)
    processes = server.tree()
    assert any(name_of(p) == "haproxy" for p in processes) or "default HTTP proxy" in server.log.read_text()
    assert answers_http(LOOPBACK, port)  # the check sees an HTTP server where there is one
    assert http_off_loopback(processes) == []
    assert "Token authentication is enabled" not in server.log.read_text()  # the local cluster started quietly


def test_only_rays_notice_that_token_authentication_is_on_is_dropped():
    """A local cluster a command starts has Ray's token authentication on, without Ray's notice
    saying so at every start (`ray_utils.DropTokenAuthNotice`); its warning that authentication is off stays."""
    import logging

    from autojudge.ray_utils import DropTokenAuthNotice

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("ray", logging.WARNING, __file__, 1, message, None, None)

    quiet = DropTokenAuthNotice()
    assert not quiet.filter(record("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out."))
    assert quiet.filter(record("Token authentication is disabled for this Ray cluster. Anyone with network access ..."))
    assert quiet.filter(record("Started a local Ray instance."))


@pytest.mark.parametrize("signum,to_group", [
    (signal.SIGTERM, False),  # kill PID, a supervisor
    pytest.param(signal.SIGINT, True, marks=pytest.mark.slow),  # Ctrl-C in a terminal: the whole foreground group
])  # fmt: skip
def test_sigterm_or_sigint_stops_the_server_with_status_0_and_leaves_nothing(commands, signum, to_group):
    port = free_port()
    server = start_server(commands, port)
    server.tree()
    stop, outcomes = threading.Event(), []
    client = threading.Thread(target=stream_until, args=(f"http://{LOOPBACK}:{port}", stop, outcomes), daemon=True)
    client.start()
    assert wait_for(lambda: outcomes, 60), "no request finished before the signal"
    server.tree()  # HAProxy may have been restarted since
    if to_group:
        server.signal_group(signum)
    else:
        server.process.send_signal(signum)
    returncode = server.process.wait(timeout=180)
    stop.set()
    client.join(timeout=90)
    assert returncode == 0, tail(server.log)
    assert "received at time" not in server.log.read_text()  # Ray's crash reporter did not fire
    assert not client.is_alive(), "a request in flight hung after the server stopped"
    assert all(o == "done" or o.startswith("error") for o in outcomes), outcomes
    assert wait_for(lambda: not server.left(), GONE_WITHIN_S), f"left running: {server.left()}"
    assert port_is_free(port)


@pytest.mark.slow
def test_sigkill_of_the_server_group_leaves_nothing_and_a_new_server_starts(commands):
    port = free_port()
    server = start_server(commands, port)
    server.tree()
    server.signal_group(signal.SIGKILL)
    server.process.wait(timeout=30)
    assert wait_for(lambda: not server.left(), GONE_WITHIN_S), f"left running {GONE_WITHIN_S:.0f} s after SIGKILL: {server.left()}"
    assert port_is_free(port)
    start_server(commands, free_port())


@pytest.mark.slow
def test_haproxy_dies_with_the_ray_worker_that_started_it_when_nothing_else_stops_it(commands):
    """The mechanism under the SIGKILL test above, without its race: killed with the group, the
    Ray worker that started HAProxy may still stop it on its way out (when it quits in an orderly
    way on losing its raylet), or not. SIGKILL that worker with the group: HAProxy must go anyway."""
    server = start_server(commands, free_port())
    haproxies = [p for p in server.tree() if name_of(p) == "haproxy"]
    assert haproxies, "no HAProxy (Serve's default proxy)"
    managers = {p.parent() for p in haproxies}
    assert all("HAProxyManager" in m.name() for m in managers)
    server.signal_group(signal.SIGKILL)
    for manager in managers:
        manager.kill()
    server.process.wait(timeout=30)

    def gone() -> bool:
        return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in haproxies)

    assert wait_for(gone, 30), f"HAProxy outlived its Ray worker: {[p.pid for p in haproxies]}"


def test_a_stale_ray_serve_haproxy_on_the_port_is_stopped_anything_else_is_named(tmp_path, capsys):
    """An HAProxy of Ray Serve whose parent is gone (what a SIGKILLed server left before HAProxy was
    tied to its worker) and which holds --port is stopped before the server starts; any other
    process holding it is named in the error."""
    from autojudge.commands.serve import check_port_free
    from autojudge.errors import InputError
    from autojudge.pipeline.serve import haproxy_binary

    binary = haproxy_binary()
    if binary is None:
        pytest.skip("no HAProxy binary")
    port = free_port()
    config = tmp_path / "haproxy-serve" / "node" / "haproxy.cfg"
    config.parent.mkdir(parents=True)
    config.write_text(f"defaults\n  mode http\n  timeout client 5s\nfrontend api\n  bind {LOOPBACK}:{port}\n  http-request return status 200\n")
    subprocess.run(["sh", "-c", f"{binary} -db -f {config} >/dev/null 2>&1 &"], check=True)  # the shell exits: an orphan
    assert wait_for(lambda: not port_is_free(port), 10)
    check_port_free(LOOPBACK, port)
    assert f"which holds port {port}" in capsys.readouterr().err and port_is_free(port)
    with socket.socket() as sock:
        sock.bind((LOOPBACK, port))
        sock.listen()
        with pytest.raises(InputError, match=f"held by pid {os.getpid()} "):
            check_port_free(LOOPBACK, port)


def test_the_haproxy_launcher_drops_the_stats_and_prometheus_sections():
    from autojudge.actors.haproxy_launcher import without_sections

    config = (
        "global\n    maxconn 10\nfrontend prometheus\n    bind :9101\n    no log\n"
        "frontend http_frontend\n    bind 127.0.0.1:8000\n# a comment\nlisten stats\n  bind *:8404\n  stats enable\n"
    )
    assert without_sections(config) == "global\n    maxconn 10\nfrontend http_frontend\n    bind 127.0.0.1:8000\n# a comment\n"


# --------------------------------------------------------------------------- mine


@pytest.mark.slow
def test_mine_local_cluster_answers_http_on_loopback_only_and_dies_with_a_sigkill(commands, tmp_path):
    miner = commands("mine", "--target", "toy:target", "--draft", "toy:draft", "--limit", "200", "--workers", "1",
                     "--out", str(tmp_path / "mined"), "--address", "local", "--no-progress")  # fmt: skip

    def mining() -> bool:
        assert miner.process.poll() is None, f"mine exited with {miner.process.returncode}:\n{tail(miner.log)}"
        return any("MinerActor" in name_of(p) for p in miner.tree())

    assert wait_for(mining, START_TIMEOUT_S, interval=1.0), tail(miner.log)
    assert http_off_loopback(miner.tree()) == []
    miner.signal_group(signal.SIGKILL)
    miner.process.wait(timeout=30)
    assert wait_for(lambda: not miner.left(), GONE_WITHIN_S), f"left running {GONE_WITHIN_S:.0f} s after SIGKILL: {miner.left()}"
