"""Starting or attaching to Ray.

Every `autojudge` command that uses Ray picks its cluster the same way:
1. `--address` on the command line, else
2. `$RAY_ADDRESS` (set by `ray job submit`, or by you), else
3. the cluster that `ray start --head` started on this node (the one `ray submit`
   runs against), recorded by Ray in `/tmp/ray/ray_current_cluster`, else
4. a new local cluster, as on a laptop.

A local cluster started here has Ray's token authentication on (Ray's default for a new cluster;
`RAY_AUTH_MODE=disabled` opts out) and starts without Ray's notice saying so (`DropTokenAuthNotice`).
It listens on 127.0.0.1 only (Ray's own mode for a single machine;
on Linux Ray otherwise binds its agents, metrics and dashboard ports on the machine's address):
a cluster other machines can join is one started with `ray start --head`, which commands then
attach to (3). Its processes die with the command (Ray ties them to the driver; its workers
exit when their raylet does), even when the command is SIGKILLed.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RUNTIME_ENV = {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}


def node_cluster_address() -> str | None:
    """The address of the cluster `ray start` started on this node, if Ray recorded one."""
    record = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    try:
        address = record.read_text().strip()
    except OSError:
        return None
    return address or None


CONNECT_TIMEOUT_S = 3.0
"""How long the reachability check of a named cluster waits for a TCP connection."""


def host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a Ray address (`host:port`, `ray://host:port`, `http://host:port`), None for
    forms without one (`auto`, `local`)."""
    from urllib.parse import urlsplit

    text = address if "://" in address else f"gcs://{address}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return parts.hostname, port


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """InputError within `timeout_s` when nothing listens at the cluster address (ray.init would
    retry for minutes printing "Failed to get cluster ID")."""
    import socket

    from autojudge.errors import InputError

    target = host_port(address)
    if target is None:
        if address not in ("auto", "local"):
            raise InputError(f"Ray address {address!r} is not HOST:PORT (or ray://HOST:PORT)")
        return
    try:
        with socket.create_connection(target, timeout=timeout_s):
            pass
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or type(err).__name__)
        raise InputError(
            f"cannot reach the Ray cluster at {address} ({reason}); check --address / $RAY_ADDRESS, "
            "or unset it to start a local cluster"
        ) from None


def check_cluster_address(address: str | None) -> None:
    """Before any work: the cluster named by `--address` or $RAY_ADDRESS is reachable (nothing to
    check when neither names one)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        check_reachable(address)


_started_local_cluster = False
"""Whether `init_ray` started the cluster this process is connected to (a new local one)."""


def ray_connected() -> bool:
    """Whether this process is connected to a Ray cluster (without importing Ray when it is not loaded)."""
    import sys

    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def will_start_local_cluster(address: str | None) -> bool:
    """Whether `init_ray(address)` would start a new cluster on this machine (nothing named, no
    `ray start` cluster recorded on this node)."""
    address = address or os.environ.get("RAY_ADDRESS")
    return address == "local" or (not address and node_cluster_address() is None)


def check_actor_resources(what: str, actors: int, cpus: float, gpus: float = 0.0, address: str | None = None,
                          spare_cpus: float = 0.0, advice: str = "") -> None:
    """Refuse actors the cluster can never place (Ray would queue them forever, logging "No available
    node types can fulfill ..."): each actor's CPUs and GPUs on one node, and all of them, plus
    `spare_cpus` for the job's other tasks, in the cluster. Once Ray is connected it asks the
    cluster; before, it checks the cores of this machine when the cluster will be a new local one
    (and knows nothing of another cluster). On a cluster named by --address / $RAY_ADDRESS, whose
    autoscaler may add nodes, it warns instead of refusing."""
    import sys

    from autojudge.errors import InputError

    if ray_connected():
        import ray

        local = _started_local_cluster
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        total = {key: sum(node.get(key, 0.0) for node in nodes) for key in ("CPU", "GPU")}
        largest = {key: max((node.get(key, 0.0) for node in nodes), default=0.0) for key in ("CPU", "GPU")}
    elif will_start_local_cluster(address):
        from autojudge.checks import local_cores

        total = largest = {"CPU": float(local_cores())}
        local = True
    else:
        return
    asked = {"CPU": cpus, "GPU": gpus}
    problem = None
    for key in largest:
        if asked[key] > largest[key]:
            problem = f"{what} ask for {asked[key]:g} {key}s each; the largest node of the cluster has {largest[key]:g}"
            break
        if actors * asked[key] + (spare_cpus if key == "CPU" else 0.0) > total[key]:
            needs = f"{actors} x {asked[key]:g} {key}s" + (f" + {spare_cpus:g} for reading and writing" if key == "CPU" and spare_cpus else "")
            problem = f"{what} need {needs}; the cluster has {total[key]:g}"
            break
    if problem is None:
        return
    message = f"{problem} (they would wait forever){'; ' + advice if advice else ''}"
    if not local:
        print(f"autojudge: warning: {message}; an autoscaling cluster may add nodes", file=sys.stderr)
        return
    raise InputError(message)


AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"
"""The logger of Ray's notice "Token authentication is enabled for this Ray cluster ..."."""


class DropTokenAuthNotice(logging.Filter):
    """Drops Ray's notice that a new local cluster has token authentication on. Ray (>= 2.56) turns it
    on for every cluster `ray.init` starts and says so on every start; for the private loopback cluster
    a command starts that is the intended state, not news (docs/cluster.md says it once). Setting
    RAY_AUTH_MODE=token is not the way to silence it: Ray reads the mode once at import, and a value
    set after that starts a cluster the driver cannot join. RAY_AUTH_MODE=disabled still opts out, and
    Ray's warning that authentication is off is never dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
"""Ray's single-machine mode (its default on macOS and Windows): node address 127.0.0.1, and every
HTTP endpoint of the cluster (agents, metrics export, dashboard) bound there."""


def init_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    local_system_config: dict[str, Any] | None = None,
    local_env: dict[str, str] | None = None,
    **kwargs: Any,
) -> None:
    """Connect to Ray once per process (see the module docstring for the order).

    `num_cpus`, `local_system_config` (Ray's `_system_config`) and `local_env` (environment
    variables of the cluster's processes; a variable already set in this process keeps its
    value) only apply to a local cluster this call starts; address "local" always starts one.

    The process's SIGINT and SIGTERM handlers that are Python functions (Python's own SIGINT one,
    and those a command installed) stay installed, and a signal that arrives while Ray starts
    reaches them once it has started: in the middle of `ray.init` it would leave a half-made core
    worker, which crashes the interpreter at exit. (`ray.init` would replace a SIGTERM handler by
    one that calls `sys.exit`, and Ray's core installs a crash reporter that, on SIGTERM, prints
    a stack and aborts the process 3 s later: a clean stop that took longer ended in SIGABRT.)
    """
    import ray
    from ray._private import utils as ray_private_utils

    if ray.is_initialized():
        return
    own = {}
    if threading.current_thread() is threading.main_thread():
        own = {signum: handler for signum in (signal.SIGINT, signal.SIGTERM) if callable(handler := signal.getsignal(signum))}
    if not own:
        _connect(address, num_cpus, local_system_config, local_env, **kwargs)
        return
    pending: list[int] = []

    def defer(signum: int, frame: object) -> None:
        signal.alarm(0)  # the crash reporter's, if it saw a SIGTERM
        pending.append(signum)

    for signum in own:
        signal.signal(signum, defer)
    set_sigterm_handler = ray_private_utils.set_sigterm_handler
    if signal.SIGTERM in own:
        ray_private_utils.set_sigterm_handler = lambda handler: None  # what ray.init calls to install its own
    try:
        _connect(address, num_cpus, local_system_config, local_env, **kwargs)
    finally:
        ray_private_utils.set_sigterm_handler = set_sigterm_handler
        for signum, handler in own.items():
            signal.signal(signum, handler)  # also takes SIGTERM back from the crash reporter
        if pending:
            signal.raise_signal(pending[0])


def _connect(
    address: str | None, num_cpus: int | None, local_system_config: dict[str, Any] | None,
    local_env: dict[str, str] | None, **kwargs: Any,
) -> None:  # fmt: skip
    import ray
    from ray._private import ray_constants

    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        check_reachable(address)
        ray.init(address=address, runtime_env=RUNTIME_ENV, **kwargs)
        return
    node_address = None if address == "local" else node_cluster_address()
    if node_address:
        try:
            check_reachable(node_address)
            ray.init(address=node_address, runtime_env=RUNTIME_ENV, **kwargs)
            return
        except (ConnectionError, ValueError) as err:  # a stale record of a stopped cluster
            log.warning("Ray cluster recorded at %s is not reachable (%s); starting a local one", node_address, err)
    if local_system_config:
        kwargs["_system_config"] = local_system_config
    added = {name: value for name, value in {**LOOPBACK_ENV, **(local_env or {})}.items() if name not in os.environ}
    os.environ.update(added)  # the cluster's processes inherit this process's environment as it starts
    global _started_local_cluster
    enable_cluster = ray_constants.ENABLE_RAY_CLUSTER  # LOOPBACK_ENV for this process, where Ray read it at import
    ray_constants.ENABLE_RAY_CLUSTER = ray_constants.env_bool(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, enable_cluster)
    auth_notice = logging.getLogger(AUTH_NOTICE_LOGGER)
    quiet = DropTokenAuthNotice()
    auth_notice.addFilter(quiet)
    try:
        ray.init(address="local", num_cpus=num_cpus, runtime_env=RUNTIME_ENV, include_dashboard=False, **kwargs)
        _started_local_cluster = True
    finally:
        auth_notice.removeFilter(quiet)
        ray_constants.ENABLE_RAY_CLUSTER = enable_cluster
        for name in added:
            os.environ.pop(name, None)


def add_ray_arguments(parser: Any) -> None:
    """The `--address` option shared by commands that use Ray."""
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster to attach to (default: $RAY_ADDRESS, else the `ray start` cluster of this node, "
        "else a new local cluster)",
    )
