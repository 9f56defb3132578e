"""Multi-node mining on one machine: `ray.cluster_utils.Cluster` with several raylets.

The head offers no CPU and each worker raylet one, so two miner actors must sit on two
different nodes. Faults: a miner actor's process is SIGKILLed mid-job, or a whole node
is removed mid-job. Either way every prompt must end up in exactly one responses shard,
with the same labels as an undisturbed run, and no orphan label shard.

Fault tolerance comes from the miner's actors themselves (`MinerActor` restarts and
retries its tasks, autojudge/actors/miner.py); nothing is patched here. `mine_chunk`
is a pure function of its chunk and only the driver writes shards, so a retried chunk
is written once.

Slow (three raylets on two shared cores): `pytest -m slow tests/test_multinode.py`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pyarrow.compute as pc
import pytest

pytestmark = pytest.mark.slow

NUM_PROMPTS = 24


@pytest.fixture(scope="module")
def pair(tiny_pair_dirs: tuple[Path, Path]) -> tuple[Path, Path]:
    return tiny_pair_dirs


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Head (0 CPU) + three 1-CPU worker nodes; this process is the driver."""
    import ray
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # independent of ~/.ray/auth_token
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(3):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def mine_config(pair: tuple[Path, Path], out: Path, address: str) -> Any:
    from autojudge.pipeline.mine import MineConfig
    from autojudge.setup import DecodingConfig

    target, draft = pair
    return MineConfig(
        task="toy", decoding=DecodingConfig(str(target), str(draft), max_new_tokens=8), out=str(out),
        limit=NUM_PROMPTS, seed=2, workers=2, cpus_per_worker=1, batch_size=2, chunk_size=2, max_chunks_in_flight=1,
        address=address, progress=False,
    )  # fmt: skip


def miner_actors() -> list[dict[str, Any]]:
    import ray._private.state as state

    return [a for a in state.actors().values() if a["ActorClassName"].endswith("MinerActor")]


def committed(out: Path) -> int:
    from autojudge.pipeline import shards

    return len(shards.shard_paths(out, "responses"))


def check_exactly_once(out: Path, reference: dict | None = None) -> dict:
    """Every prompt in exactly one responses row; labels match num_labels; no orphans."""
    from autojudge.pipeline import shards

    assert shards.clean_orphans(out) == []
    responses = shards.read_responses(out)
    labels = shards.read_labels(out)
    ids = responses.column("prompt_id").to_pylist()
    assert len(ids) == NUM_PROMPTS and len(set(ids)) == NUM_PROMPTS
    counts = {pid: 0 for pid in ids}
    for pid in labels.column("prompt_id").to_pylist():
        counts[pid] += 1
    assert counts == dict(zip(ids, responses.column("num_labels").to_pylist()))
    label_set = {
        (row["prompt_id"], row["position"], row["draft_token"], row["important"])
        for row in labels.select(["prompt_id", "position", "draft_token", "important"]).to_pylist()
    }
    assert len(label_set) == labels.num_rows  # no duplicate label rows
    if reference is not None:
        assert label_set == reference
    assert int(pc.sum(responses.column("num_labels")).as_py() or 0) == labels.num_rows
    return label_set


def run_in_thread(config: Any) -> tuple[threading.Thread, dict]:
    from autojudge.pipeline.mine import mine

    outcome: dict = {}

    def target() -> None:
        try:
            outcome["out"] = mine(config)
        except BaseException as err:  # surfaced by the test
            outcome["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def test_mining_spreads_over_nodes(pair: tuple[Path, Path], cluster: Any, tmp_path: Path) -> None:
    from autojudge.pipeline.mine import mine

    out = mine(mine_config(pair, tmp_path / "mined", cluster.address))
    check_exactly_once(out)
    nodes = {actor["Address"]["NodeID"] for actor in miner_actors()}
    assert len(nodes) == 2, "two 1-CPU actors on 1-CPU nodes: two different nodes"


def test_killed_actor_restarts_and_every_prompt_once(
    pair: tuple[Path, Path], cluster: Any, tmp_path: Path
) -> None:
    from autojudge.pipeline.mine import mine

    reference = check_exactly_once(mine(mine_config(pair, tmp_path / "reference", cluster.address)))
    out = tmp_path / "mined"
    thread, outcome = run_in_thread(mine_config(pair, out, cluster.address))
    wait_until(lambda: committed(out) >= 1, 300, "the first shard")
    alive = [a for a in miner_actors() if a["State"] == "ALIVE" and a["JobID"] and a["Pid"]]
    victim = max(alive, key=lambda a: a["StartTime"])  # one of this job's actors
    os.kill(victim["Pid"], signal.SIGKILL)  # a worker process of the cluster this test started
    thread.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    check_exactly_once(out, reference)
    restarted = [a for a in miner_actors() if a["ActorID"] == victim["ActorID"]]
    assert restarted and restarted[0]["NumRestarts"] >= 1


def test_removed_node_and_every_prompt_once(
    pair: tuple[Path, Path], cluster: Any, tmp_path: Path
) -> None:
    from autojudge.pipeline.mine import mine

    reference = check_exactly_once(mine(mine_config(pair, tmp_path / "reference", cluster.address)))
    out = tmp_path / "mined"
    thread, outcome = run_in_thread(mine_config(pair, out, cluster.address))
    wait_until(lambda: committed(out) >= 1, 300, "the first shard")
    busy_nodes = {a["Address"]["NodeID"] for a in miner_actors() if a["State"] == "ALIVE"}
    victim = next(node for node in cluster.worker_nodes if node.node_id in busy_nodes)
    cluster.remove_node(victim, allow_graceful=False)  # the raylet and its workers die
    thread.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    check_exactly_once(out, reference)
