"""scripts/autojudge_entry.py attaches to a running `ray start --head` cluster.

The cluster runs in its own temp dir (so no other Ray user on this machine finds it
through /tmp/ray/ray_current_cluster) and in its own process group, which the fixture
terminates by id: never `ray stop`, which would stop every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "scripts" / "autojudge_entry.py"
RAY_BIN = Path(sys.executable).parent / "ray"
# Same auth mode on both sides, whatever ~/.ray/auth_token holds (Ray turns token auth on
# for a new head when that file exists; a client then needs RAY_AUTH_MODE=token too).
AUTH = {"RAY_AUTH_MODE": "disabled"}


def with_repo_on_path() -> str:
    """PYTHONPATH that finds this checkout's `autojudge` whether or not it is pip-installed."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout_s: float, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:  # say why: the end of its own output
            raise RuntimeError(f"ray start exited early with code {process.returncode}: {log_path.read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"no Ray head on port {port} after {timeout_s:.0f}s")


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A two-CPU head node started by `ray start --head --block`; yields its address."""
    temp_dir = tempfile.mkdtemp(prefix="ajray", dir="/tmp")  # short: Unix socket paths are limited
    port = free_port()
    command = [
        str(RAY_BIN), "start", "--head", "--block",
        "--num-cpus", "2", "--num-gpus", "0",
        "--port", str(port),
        "--node-ip-address", "127.0.0.1",
        "--temp-dir", temp_dir,
        "--include-dashboard", "false",
        "--ray-client-server-port", str(free_port()),
        "--dashboard-agent-listen-port", str(free_port()),
        "--disable-usage-stats",
    ]  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": with_repo_on_path(), **AUTH}
    log = open(Path(temp_dir) / "ray_start.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_for_port(port, 90, process, Path(temp_dir) / "ray_start.log")
        time.sleep(2)  # the raylet registers shortly after the GCS port opens
        yield f"127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the group we started: ray start and its children
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def run_entry(args: list[str], address: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": address, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": with_repo_on_path(), **AUTH}
    return subprocess.run(
        [sys.executable, str(ENTRY), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def test_entry_help_lists_commands() -> None:
    env = {**os.environ, "PYTHONPATH": with_repo_on_path()}
    result = subprocess.run([sys.executable, str(ENTRY), "--help"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert "infer" in result.stdout and "export" in result.stdout


def test_cluster_info_attaches_to_running_head(ray_head: str) -> None:
    """RAY_ADDRESS set: the command joins the running head instead of starting its own cluster."""
    result = run_entry(["cluster-info"], ray_head)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout)
    assert info["gcs_address"].rsplit(":", 1)[1] == ray_head.rsplit(":", 1)[1]  # same GCS port
    assert info["num_nodes"] == 1
    assert info["resources"]["CPU"] == 2.0  # the head's --num-cpus


def test_cluster_info_address_flag(ray_head: str) -> None:
    """`--address` works too (RAY_ADDRESS empty)."""
    result = run_entry(["cluster-info", "--address", ray_head], "")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["gcs_address"].endswith(":" + ray_head.rsplit(":", 1)[1])


def test_infer_through_entry_on_running_head(ray_head: str, tmp_path: Path, tiny_pair_dirs, write_corpus) -> None:
    """A real autojudge command (batch inference with Ray Data) runs on the attached cluster."""
    target, draft = tiny_pair_dirs
    corpus = write_corpus(tmp_path / "corpus.jsonl", num=6)
    out = tmp_path / "out"
    result = run_entry(
        ["infer", "--input", str(corpus), "--output", str(out), "--target", str(target), "--draft", str(draft),
         "--max-new-tokens", "4", "--num-replicas", "1", "--num-cpus-per-replica", "0.5", "--batch-size", "3"],
        ray_head,
        timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    assert table.num_rows == 6


@pytest.mark.slow
def test_ray_job_submit_working_dir(tmp_path: Path) -> None:
    """`ray job submit --working-dir .` runs the entry script on a head with a dashboard."""
    temp_dir = tempfile.mkdtemp(prefix="ajjob", dir="/tmp")
    port, dashboard_port = free_port(), free_port()
    command = [
        str(RAY_BIN), "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0",
        "--port", str(port), "--node-ip-address", "127.0.0.1", "--temp-dir", temp_dir,
        "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
        "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
        "--disable-usage-stats",
    ]  # fmt: skip
    # `python` in the entrypoint must be the interpreter Ray runs under (as on a cluster node),
    # not whatever python3 comes first on this machine's PATH.
    env = {**os.environ, "RAY_ADDRESS": "", "PATH": f"{RAY_BIN.parent}{os.pathsep}{os.environ.get('PATH', '')}", **AUTH}
    env.pop("PYTHONPATH", None)  # the job must find autojudge through its working dir
    log = open(Path(temp_dir) / "ray_start.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_for_port(dashboard_port, 120, process, Path(temp_dir) / "ray_start.log")
        job_env = {**env, "RAY_ADDRESS": f"http://127.0.0.1:{dashboard_port}"}
        result = subprocess.run(
            [str(RAY_BIN), "job", "submit", "--working-dir", ".", "--",
             "python", "scripts/autojudge_entry.py", "cluster-info"],
            env=job_env, capture_output=True, text=True, timeout=300, cwd=ROOT,
        )  # fmt: skip
        assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
        assert '"num_nodes": 1' in result.stdout and "succeeded" in result.stdout
        package = re.search(r'"autojudge_package": "([^"]+)"', result.stdout)
        assert package and "working_dir_files" in package[1], result.stdout[-2000:]  # the uploaded copy
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
