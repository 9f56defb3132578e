"""Starting or attaching to Ray.

`autojudge` commands attach to an existing cluster when `--address` or `RAY_ADDRESS`
is given (e.g. under `ray job submit`), and otherwise start a local one.
"""

from __future__ import annotations

import os
from typing import Any


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs: Any) -> None:
    """Connect to Ray once per process: `address`, else $RAY_ADDRESS, else a local cluster."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, runtime_env=runtime_env, include_dashboard=False, **kwargs)


def add_ray_arguments(parser: Any) -> None:
    """The `--address` option shared by commands that use Ray."""
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster to attach to (default: $RAY_ADDRESS, else start a local cluster)",
    )
