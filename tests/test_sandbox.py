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


# ----------------------------------------------------------------------------- hardening (issue 15)

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="namespaces, uid drop and cgroups need a root caller")


def world_writable_dirs() -> list[Path]:
    """Every world-writable directory of this machine (/proc and /sys pruned), found by walking."""
    found = []
    for top, dirs, _ in os.walk("/", topdown=True):
        if top in ("/proc", "/sys"):
            dirs[:] = []
            continue
        for name in list(dirs):
            path = os.path.join(top, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if info.st_mode & 0o002 and not os.path.islink(path):
                found.append(Path(path))
    return found


def files_owned_by(uid: int, folders: list[Path]) -> list[Path]:
    owned = []
    for folder in folders:
        for top, _, files in os.walk(folder):
            for name in [*files, ""]:
                path = Path(top, name) if name else Path(top)
                try:
                    if path.lstat().st_uid == uid:
                        owned.append(path)
                except OSError:
                    continue
    return owned


def _namespaced(result) -> None:
    if not result.namespaces:
        pytest.skip("the kernel refused the namespaces here")


@ROOT_ONLY
def test_nothing_on_the_host_is_created_or_changed_with_namespaces():
    """The program tries every world-writable directory of the machine, the repository, /etc and the
    parent of its own work dir; afterwards no file owned by its uid (or named by its marker) exists."""
    targets = world_writable_dirs()
    assert Path("/tmp") in targets
    marker = f"autojudge-escape-{uuid.uuid4().hex}"
    attempts = [*targets, Path(__file__).parent, Path("/etc"), Path("/root"), Path("/work")]
    program = (
        "import os, tempfile\n"
        f"for folder in {[str(p) for p in attempts]!r} + [os.path.dirname(os.getcwd())]:\n"
        f"    path = os.path.join(folder, {marker!r})\n"
        "    for make in (lambda: open(path, 'w').write('x'), lambda: os.mkdir(path + '.d'),\n"
        "                 lambda: os.symlink('/etc/passwd', path + '.ln'), lambda: os.utime(folder)):\n"
        "        try:\n"
        "            make()\n"
        "            print('inside:', folder)\n"
        "        except OSError as err:\n"
        "            pass\n"
        "open('in-workdir.txt', 'w').write('mine')\n"
        "print('done')\n"
    )
    result = run_python(program, QUICK)
    _namespaced(result)
    assert result.passed, result.stderr
    assert result.stdout.strip().endswith("done")
    # inside, only the private tmpfs scratch dirs (and the work dir) took writes
    written = {line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("inside: ")}
    assert written <= {"/tmp", "/var/tmp", "/dev/shm"}, written
    leftovers = [p for folder in attempts + [Path(tempfile_dir())] for p in folder.glob(f"{marker}*")]
    assert leftovers == []
    assert files_owned_by(result.uid, targets) == []


def tempfile_dir() -> str:
    import tempfile

    return tempfile.gettempdir()


@ROOT_ONLY
def test_host_unix_sockets_are_unreachable(tmp_path):
    import socket

    marker = uuid.uuid4().hex[:12]
    paths = [Path("/tmp") / f"aj-{marker}.sock"]
    if Path("/run/lock").is_dir():
        paths.append(Path("/run/lock") / f"aj-{marker}.sock")
    listeners = []
    try:
        for path in paths:
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(path))
            os.chmod(path, 0o777)  # permissions do not stop it: the namespace must
            server.listen(1)
            server.setblocking(False)
            listeners.append(server)
        abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        abstract.bind(f"\0aj-{marker}")
        abstract.listen(1)
        abstract.setblocking(False)
        listeners.append(abstract)
        targets = [str(p) for p in paths] + [f"\0aj-{marker}"]
        program = (
            "import socket\n"
            f"for target in {targets!r}:\n"
            "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            "    try:\n"
            "        s.connect(target); print('connected', repr(target))\n"
            "    except OSError as err:\n"
            "        print('refused', repr(target), err.errno)\n"
        )
        result = run_python(program, QUICK)
        _namespaced(result)
        assert result.passed, result.stderr
        assert "connected" not in result.stdout and result.stdout.count("refused") == len(targets)
        for server in listeners:
            with pytest.raises(BlockingIOError):
                server.accept()
    finally:
        for server in listeners:
            server.close()
        for path in paths:
            path.unlink(missing_ok=True)


@pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "no-namespaces"])
def test_a_symlink_trick_does_not_make_the_parent_read_a_file(tmp_path, namespaces):
    """The program replaces every file it could think the parent reads back with a symlink to a
    root-only secret; stdout/stderr come back through the parent's own descriptors, so the secret never does."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-" + uuid.uuid4().hex)
    secret.chmod(0o600)
    program = (
        "import os, sys\n"
        "for name in ('.stdout', '.stderr', 'stdout', 'stderr', 'program.py', 'output.txt'):\n"
        "    try:\n"
        "        os.remove(name)\n"
        "    except OSError:\n"
        "        pass\n"
        f"    os.symlink({str(secret)!r}, name)\n"
        "try:\n"
        f"    print(open({str(secret)!r}).read())\n"
        "except OSError as err:\n"
        "    print('cannot read the secret:', type(err).__name__)\n"
    )
    result = run_python(program, SandboxLimits(timeout_s=3.0, cpu_s=3, isolate_namespaces=namespaces))
    assert result.passed, result.stderr
    assert "TOP-SECRET" not in result.stdout + result.stderr
    if os.geteuid() == 0:
        assert "cannot read the secret" in result.stdout


@ROOT_ONLY
def test_host_processes_are_invisible():
    program = (
        "import os\n"
        "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        "cmdlines = [open(f'/proc/{p}/cmdline', 'rb').read() for p in pids]\n"
        "print(len(pids), any(b'pytest' in c for c in cmdlines))\n"
    )
    result = run_python(program, QUICK)
    _namespaced(result)
    assert result.passed, result.stderr
    count, sees_pytest = result.stdout.split()
    assert int(count) <= 2 and sees_pytest == "False"  # the namespace's init and the program


BOMB = (
    "import os, time\n"
    "children = []\n"
    "for _ in range(4):\n"
    "    pid = os.fork()\n"
    "    if pid == 0:\n"
    "        try:\n"
    "            blob = b'x' * (200 << 20)\n"  # 200 MB each, touched
    "            time.sleep(1)\n"
    "        except MemoryError:\n"
    "            os._exit(3)\n"
    "        os._exit(0)\n"
    "    children.append(pid)\n"
    "codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]\n"
    "print(codes)\n"
)


@ROOT_ONLY
def test_fork_and_allocate_bomb_stays_within_the_total_memory_bound():
    """4 children x 200 MB against a 256 MB bound: the cgroup's peak stays at or under it."""
    limits = SandboxLimits(timeout_s=20.0, cpu_s=20, total_memory_bytes=256 << 20)
    result = run_python(BOMB, limits)
    if not result.cgroup:
        pytest.skip("no writable cgroup here")
    assert result.memory_bound_bytes == 256 << 20
    assert result.memory_peak_bytes is not None and result.memory_peak_bytes <= 256 << 20
    codes = eval(result.stdout.strip()) if result.stdout.strip() else None
    assert codes is None or any(code != 0 for code in codes)  # some child was stopped
    assert_nothing_left(result)


def test_without_a_cgroup_processes_times_address_space_stay_within_the_bound():
    from autojudge.tasks.sandbox import rlimits

    limits = SandboxLimits(timeout_s=10.0, total_memory_bytes=256 << 20, use_cgroup=False)
    values = rlimits(limits, cgroup=False)
    assert values["nproc"][0] * values["as"][0] <= 256 << 20
    result = run_python(BOMB, limits)
    assert not result.cgroup and result.memory_peak_bytes is None
    assert result.passed, result.stderr
    assert eval(result.stdout.strip()) == [3, 3, 3, 3]  # each child's 200 MB exceeds its 32 MB address space


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists() or not Path("/usr/bin/python3").exists(),
                    reason="needs root to start a non-root caller (setpriv) and a system python3")
def test_a_non_root_caller_gets_the_rlimit_guarantees():
    """Started by an ordinary user (nobody), the sandbox has no uid drop, namespaces or cgroup, but
    processes x address space still bound the memory: a 300 MB allocation fails against 128 MB."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    script = (
        "from autojudge.tasks.sandbox import run_python\n"
        "r = run_python('import os; print(os.getuid())')\n"
        "print(r.status, r.stdout.strip(), r.namespaces, r.cgroup, r.memory_bound_bytes)\n"
        "r = run_python('b = bytearray(300 << 20)')\n"
        "print(r.status, 'MemoryError' in r.stderr)\n"
    )
    done = subprocess.run(
        ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", script],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(root), "HOME": "/tmp", "PATH": "/usr/bin:/bin"},
        cwd="/tmp",
    )
    if done.returncode != 0 and ("Permission denied" in done.stderr or "ModuleNotFoundError" in done.stderr):
        pytest.skip(f"the repository is not importable by nobody here: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == f"ok 65534 False False {1 << 30}"
    assert second == "failed True"
