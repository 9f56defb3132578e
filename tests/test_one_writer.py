"""One writer per mining folder (issue 24, item 4).

`mine` (and `run`'s mining stage) hold an exclusive lock on OUT/.lock while they write; a
second writer is refused in one line naming the first, and a writer killed with -9 leaves
nothing stuck. `train` and `export` refuse a folder that holds a label (or a prompt) twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOY = ["--target", "toy:target", "--draft", "toy:draft"]
HOLD = (
    "import sys, time\n"
    "from autojudge.pipeline.shards import writer_lock\n"
    "with writer_lock(sys.argv[1]):\n"
    "    print('locked', flush=True)\n"
    "    time.sleep(600)\n"
)


def cli(argv: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "autojudge.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT, **kwargs)


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding the folder's writer lock (as a running miner does)."""
    folder.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def assert_refused_by(done: subprocess.CompletedProcess, command: str, pid: int) -> None:
    err = done.stderr
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stdout[-2000:]}\n{err[-2000:]}"
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"autojudge {command}: error:" in err and f"is being written by process {pid} (" in err, err
    assert "wait for it to end, or use another --out" in err


def test_a_second_mine_on_a_folder_being_mined_is_refused_naming_the_first(tmp_path: Path) -> None:
    out = tmp_path / "mined"
    argv = ["mine", *TOY, "--workers", "0", "--limit", "4", "--max-new-tokens", "48", "--no-progress", "--out", str(out)]
    first = subprocess.Popen([sys.executable, "-m", "autojudge.cli", *argv],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
    deadline = time.monotonic() + 120
    while not (out / ".lock").exists() or not (out / ".lock").read_text():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGSTOP)  # the first stays in the middle of its mining while the second starts
    try:
        second = cli(argv)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out_text, err_text = first.communicate(timeout=600)
    assert_refused_by(second, "mine", first.pid)
    assert "autojudge mine" in second.stderr  # the holder's command line
    assert first.returncode == 0, err_text
    from autojudge.pipeline.shards import read_labels, read_responses

    ids = read_responses(out, ["prompt_id"]).column("prompt_id").to_pylist()
    assert len(ids) == len(set(ids)) == 4  # every prompt once
    labels = read_labels(out, ["prompt_id", "position"]).to_pylist()
    assert len(labels) == len({(r["prompt_id"], r["position"]) for r in labels})
    assert not (out / ".lock").exists()  # removed by the writer that ends


def test_mine_takes_the_lock_itself_before_touching_the_folder(tmp_path: Path) -> None:
    """Past the command's check (e.g. `run`'s mining stage, or a race): `mine()` refuses too."""
    from autojudge.errors import InputError
    from autojudge.pipeline.mine import MineConfig, mine

    out = tmp_path / "mined"
    holder = hold_lock(out)
    try:
        (out / "labels").mkdir()
        orphan = out / "labels" / "shard-in-flight.parquet"  # the holder's labels shard before its responses one
        orphan.write_bytes(b"in flight")
        with pytest.raises(InputError, match=rf"is being written by process {holder.pid} \("):
            mine(MineConfig(out=str(out), limit=2, workers=0, progress=False))
        assert orphan.read_bytes() == b"in flight"  # not cleaned away as an orphan
    finally:
        holder.kill()
        holder.wait()


def test_a_writer_killed_with_minus_9_leaves_no_stuck_lock(tmp_path: Path) -> None:
    from autojudge.pipeline.shards import check_no_writer, writer_lock

    out = tmp_path / "mined"
    holder = hold_lock(out)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (out / ".lock").exists()  # left behind, but nobody holds it
    check_no_writer(out)
    with writer_lock(out):
        assert str(os.getpid()) in (out / ".lock").read_text()
    assert not (out / ".lock").exists()


def test_run_refuses_while_its_mining_folder_is_being_written(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = hold_lock(run_dir / "mined")
    try:
        before = snapshot(run_dir)
        done = cli(["run", "--out", str(run_dir), "--mine-problems", "4", "--select-problems", "2", "--test-problems", "2"])
        assert_refused_by(done, "run", holder.pid)
        assert snapshot(run_dir) == before
    finally:
        holder.kill()
        holder.wait()


def test_train_and_export_refuse_a_folder_holding_a_label_twice(tmp_path: Path) -> None:
    """What two miners on one folder left: the same prompts in two shards."""
    from tests.helpers import write_mining_folder

    data = write_mining_folder(tmp_path / "mined", num_prompts=20, shards=2)
    for kind in ("labels", "responses"):
        shutil.copy(data / kind / "part-00000.parquet", data / kind / "part-00000-again.parquet")
    manifest = json.loads((data / "manifest.json").read_text())
    before = snapshot(tmp_path)
    for argv in (["train", "--data", str(data), "--out", str(tmp_path / "judge")],
                 ["export", "--data", str(data), "--out", str(tmp_path / "export"), "--no-text"]):
        done = cli(argv)
        err = done.stderr
        assert done.returncode == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert f"autojudge {argv[0]}: error:" in err
        assert "label(s) written more than once (first: prompt_id 'toy-1-0', position " in err, err
        assert "two miners wrote this folder at once" in err
    assert snapshot(tmp_path) == before
    assert manifest["counts"]["prompts"] == 20
