"""Starting or attaching to Ray.

Every `autojudge` command that uses Ray picks its cluster the same way:
1. `--address` on the command line, else
2. `$RAY_ADDRESS` (set by `ray job submit`, or by you), else
3. the cluster that `ray start --head` started on this node (the one `ray submit`
   runs against), recorded by Ray in `/tmp/ray/ray_current_cluster`, else
4. a new local cluster, as on a laptop.
"""

from __future__ import annotations

import logging
import os
import tempfile
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


def init_ray(
    address: str | None = None, num_cpus: int | None = None, local_system_config: dict[str, Any] | None = None, **kwargs: Any
) -> None:
    """Connect to Ray once per process (see the module docstring for the order).

    `num_cpus` and `local_system_config` (Ray's `_system_config`) only apply to a local
    cluster this call starts; address "local" always starts one.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        ray.init(address=address, runtime_env=RUNTIME_ENV, **kwargs)
        return
    node_address = None if address == "local" else node_cluster_address()
    if node_address:
        try:
            ray.init(address=node_address, runtime_env=RUNTIME_ENV, **kwargs)
            return
        except ConnectionError as err:  # a stale record of a stopped cluster
            log.warning("Ray cluster recorded at %s is not reachable (%s); starting a local one", node_address, err)
    if local_system_config:
        kwargs["_system_config"] = local_system_config
    ray.init(address="local", num_cpus=num_cpus, runtime_env=RUNTIME_ENV, include_dashboard=False, **kwargs)


def add_ray_arguments(parser: Any) -> None:
    """The `--address` option shared by commands that use Ray."""
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster to attach to (default: $RAY_ADDRESS, else the `ray start` cluster of this node, "
        "else a new local cluster)",
    )
