#!/usr/bin/env python
"""Run any `autojudge` command on a Ray cluster, from one self-contained file.

    ray submit cluster.yaml scripts/autojudge_entry.py -- mine --task toy ... --out DIR
    ray submit cluster.yaml scripts/autojudge_entry.py -- infer --input s3://B/corpus.parquet ...
    ray submit cluster.yaml scripts/autojudge_entry.py -- cluster-info

`ray submit` copies this file to the head node and runs it there with the arguments
after `--`. Everything is forwarded to `autojudge.cli.main`, so the commands and
flags are exactly those of the local `autojudge` CLI. The package itself must be
installed on the cluster (cluster.yaml's setup_commands do it); this file only
bridges the launcher and the CLI.

The commands attach to the running cluster instead of starting one: `--address`
wins, then $RAY_ADDRESS, then the cluster started on this node by `ray start`
(Ray finds it through its `ray_current_cluster` file).

One extra pseudo-command, `cluster-info [--address ADDR]`, connects and prints the
cluster's nodes and resources as JSON: a quick check that the GPUs are visible.
"""

from __future__ import annotations

import argparse
import json
import sys


def cluster_info(argv: list[str]) -> int:
    """Attach to the cluster (as every autojudge command does) and print what it holds."""
    parser = argparse.ArgumentParser(prog="autojudge_entry.py cluster-info", description=cluster_info.__doc__)
    parser.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    args = parser.parse_args(argv)

    import ray

    import autojudge
    from autojudge.ray_utils import init_ray

    init_ray(args.address)
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    info = {
        "autojudge_package": str(autojudge.__path__[0]),  # which copy of the code the job runs
        "gcs_address": ray.get_runtime_context().gcs_address,
        "num_nodes": len(nodes),
        "resources": {key: value for key, value in ray.cluster_resources().items() if "node:" not in key},
        "nodes": [
            {
                "node_id": node["NodeID"],
                "ip": node["NodeManagerAddress"],
                "CPU": node["Resources"].get("CPU", 0),
                "GPU": node["Resources"].get("GPU", 0),
            }
            for node in nodes
        ],
    }
    print(json.dumps(info, indent=2, sort_keys=True))
    ray.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from autojudge.cli import main as autojudge_main
    except ImportError as err:
        print(
            f"autojudge_entry.py: cannot import the autojudge package ({err}). Install it on the "
            "cluster (cluster.yaml's setup_commands run `pip install -e ~/autojudge`), or use "
            "`ray job submit --working-dir . -- python scripts/autojudge_entry.py ...`.",
            file=sys.stderr,
        )
        return 1
    if argv and argv[0] == "cluster-info":
        return cluster_info(argv[1:])
    return autojudge_main(argv)


if __name__ == "__main__":
    sys.exit(main())
