"""The sandbox contains infinite loops, fork bombs, huge output, memory bombs, and leaves the host alone."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from autojudge.tasks.sandbox import SandboxLimits, processes_in_session, processes_of_uid, run_python

QUICK = SandboxLimits(timeout_s=3.0, cpu_s=3)


def assert_nothing_left(result) -> None:
    """No process of the run survives: its session is empty, and so is its uid (when it had one)."""
    assert result.pid is not None
    assert processes_in_session(result.pid) == []
    if result.uid is not None:
        assert processes_of_uid(result.uid) == []


def test_ok_program_runs_in_its_own_dir_with_a_scrubbed_env(monkeypatch):
    monkeypatch.setenv("AUTOJUDGE_TEST_SECRET", "hunter2")
    result = run_python(
        "import os, sys\n"
        "print(os.getcwd()); print(sorted(os.environ)); print('to stderr', file=sys.stderr)\n"
        "print(sys.flags.isolated)\n"
    )
    assert result.status == "ok" and result.passed and result.returncode == 0
    cwd, env_keys, isolated = result.stdout.splitlines()
    assert "autojudge-sandbox-" in cwd and not Path(cwd).exists()  # removed afterwards (on the host)
    assert "AUTOJUDGE_TEST_SECRET" not in env_keys and "hunter2" not in result.stdout
    assert isolated == "1"
    assert result.stderr.strip() == "to stderr"
    assert_nothing_left(result)


def test_failing_program_is_a_failure():
    result = run_python("raise SystemExit(3)")
    assert result.status == "failed" and result.returncode == 3 and not result.passed
    assert run_python("assert 1 + 1 == 3").status == "failed"
    assert run_python("def broken(:\n").status == "failed"


def test_infinite_loop_times_out_and_is_killed():
    result = run_python("while True:\n    pass\n", SandboxLimits(timeout_s=2.0, cpu_s=30))
    assert result.status == "timeout" and not result.passed
    assert result.wall_s < 10
    assert_nothing_left(result)


def test_cpu_limit_kills_a_busy_program():
    result = run_python("while True:\n    pass\n", SandboxLimits(timeout_s=60.0, cpu_s=1))
    assert result.status == "killed" and not result.passed  # SIGXCPU / SIGKILL from RLIMIT_CPU
    assert result.wall_s < 30


def test_huge_output_is_capped_and_fails():
    limits = SandboxLimits(timeout_s=10.0, output_bytes=4096, file_size_bytes=1 << 20)
    result = run_python("while True:\n    print('x' * 10000)\n", limits)
    assert not result.passed and result.truncated
    assert len(result.stdout) <= 4096
    assert_nothing_left(result)


def test_memory_bomb_fails():
    result = run_python("blob = bytearray(8 << 30)\n", SandboxLimits(memory_bytes=512 << 20))
    assert not result.passed and "MemoryError" in result.stderr


def test_fork_bomb_is_contained_and_cleaned_up():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    before = len([p for p in os.listdir("/proc") if p.isdigit()])
    result = run_python(bomb, SandboxLimits(timeout_s=3.0, cpu_s=5, max_processes=16))
    assert not result.passed
    assert result.wall_s < 20
    assert_nothing_left(result)
    after = len([p for p in os.listdir("/proc") if p.isdigit()])
    assert after < before + 16  # other users' processes come and go; the bomb's are gone


@pytest.mark.skipif(os.geteuid() != 0, reason="a setsid() escapee is only killable for sure under root (uid drop)")
def test_setsid_escapee_is_killed():
    program = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(300)\nprint('parent done')\n"
    result = run_python(program, QUICK)
    assert result.passed and result.uid is not None
    assert processes_of_uid(result.uid) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root caller can drop the program to a fresh uid")
def test_host_files_are_untouched_under_root(tmp_path):
    marker = f"autojudge-escape-{uuid.uuid4().hex}"
    host_tmp = Path("/tmp") / marker
    private_file = tmp_path / "owned-by-root.txt"
    private_file.write_text("keep")
    program = (
        "import pathlib\n"
        f"for path in [{str(host_tmp)!r}, {str(private_file)!r}, {str(Path(__file__).with_name(marker))!r}]:\n"
        "    try:\n"
        "        pathlib.Path(path).write_text('pwned')\n"
        "        print('wrote', path)\n"
        "    except OSError as err:\n"
        "        print('denied', path, type(err).__name__)\n"
    )
    result = run_python(program, QUICK)
    assert result.passed, result.stderr
    assert result.uid is not None and result.uid != 0
    assert private_file.read_text() == "keep"
    assert not Path(__file__).with_name(marker).exists()
    if result.namespaces:  # /tmp is a private tmpfs: the write succeeds inside, nothing on the host
        assert not host_tmp.exists()
    else:
        host_tmp.unlink(missing_ok=True)


def test_no_network_when_namespaces_are_available():
    result = run_python(
        "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 80), timeout=2)\n    print('connected')\n"
        "except OSError as err:\n    print('no network', err.errno)\n",
        QUICK,
    )
    if not result.namespaces:
        pytest.skip("no network namespace here (not root, or the kernel refused unshare)")
    assert result.stdout.startswith("no network")
