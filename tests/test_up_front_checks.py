"""Every number has a checked range, and every command checks its options before it works.

Each case runs `python -m autojudge.cli ...` in a subprocess, as a user would, and checks a
one-line refusal (exit status 2, no traceback, no Ray start) and that no file under the
test's folder was created or changed. The ranges: windows and budgets up to the models'
context length (a judge's default window too), `--threads` up to the cores, seeds 0..2^32-1,
ports 1..65535, toy problems up to what the world generates per seed, actors that the
cluster can place (issue 24, items 8, 9, 10 and 13).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOY = ["--target", "toy:target", "--draft", "toy:draft"]
HUGE = str(10**12)
MORE_CPUS = str((os.cpu_count() or 1) + 1)  # more than any local cluster here can have


def free_port() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def run_cli(argv: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    for name in ("RAY_ADDRESS", "AUTOJUDGE_DEBUG", "HF_TOKEN"):
        if name not in (env or {}):
            environment.pop(name, None)
    return subprocess.run([sys.executable, "-m", "autojudge.cli", *argv], capture_output=True, text=True,
                          env=environment, timeout=timeout, cwd=ROOT)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` and a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_refused(argv: list[str], pattern: str, env: dict[str, str] | None = None) -> str:
    done = run_cli(argv, env)
    err = done.stderr
    assert done.returncode == 2, f"exit {done.returncode}: {argv}\n{done.stdout[-2000:]}\n{err[-2000:]}"
    assert "Traceback" not in done.stdout + err, err
    assert f"autojudge {argv[0]}: error:" in err and len(err.strip().splitlines()) == 1, err
    assert re.search(pattern, err), f"{pattern!r} not in: {err}"
    assert "Started a local Ray instance" not in done.stdout + err
    return err


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import numpy as np

    from autojudge.judge import Judge, PairInfo
    from autojudge.models import load_tokenizer, resolve_spec, tokenizer_fingerprint
    from tests.helpers import write_mining_folder
    from autojudge.toy.world import generate_problems

    base = tmp_path_factory.mktemp("checks")
    w: dict[str, Path] = {"base": base}
    w["good"] = base / "good.jsonl"
    w["good"].write_text("".join(json.dumps(r) + "\n" for r in generate_problems(2, 2)))
    w["empty"] = base / "empty.jsonl"
    w["empty"].write_text("\n")
    w["long"] = base / "long.jsonl"
    w["long"].write_text(json.dumps({"id": "long-1", "question": " ".join(str(i % 10) for i in range(400))}) + "\n")
    w["afile"] = base / "a-file"
    w["afile"].write_text("not a folder")
    w["adir"] = base / "a-dir"
    w["adir"].mkdir()
    w["mined"] = write_mining_folder(base / "mined", num_prompts=12)
    w["mined_corrupt"] = base / "mined-corrupt"
    shutil.copytree(w["mined"], w["mined_corrupt"])
    for shard in (w["mined_corrupt"] / "labels").glob("*.parquet"):
        shard.write_bytes(b"PAR1 not parquet")

    hidden = json.loads((Path(resolve_spec("toy:target")[0]) / "config.json").read_text())["hidden_size"]
    draft_hidden = json.loads((Path(resolve_spec("toy:draft")[0]) / "config.json").read_text())["hidden_size"]
    pair = PairInfo("toy:target", "toy:draft", tokenizer_fingerprint(load_tokenizer("toy:target")), hidden, draft_hidden)
    judge = Judge("logreg", "DT", pair, scaler_mean=np.zeros(hidden), scaler_scale=np.ones(hidden),
                  coef=np.full(hidden, 0.01), intercept=-2.0, thresholds=[{"tau": 0.5, "recall_important": 1.0}])
    w["judge"] = judge.save(base / "judge")

    def judge_variant(name: str, change: Callable[[dict[str, Any]], Any]) -> None:
        folder = base / f"judge-{name}"
        shutil.copytree(w["judge"], folder)
        meta = json.loads((folder / "judge.json").read_text())
        change(meta)
        (folder / "judge.json").write_text(json.dumps(meta))
        w[f"judge_{name}"] = folder

    judge_variant("window_huge", lambda m: m.update(default_window=10**12))
    judge_variant("no_thresholds", lambda m: m.pop("thresholds"))
    judge_variant("nan_threshold", lambda m: m["thresholds"][0].update(recall_important=float("nan")))
    w["judge_deep"] = base / "judge-deep"
    shutil.copytree(w["judge"], w["judge_deep"])
    (w["judge_deep"] / "judge.json").write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)
    w["target_copy"] = base / "target-copy"  # the toy target at another path
    shutil.copytree(resolve_spec("toy:target")[0], w["target_copy"])
    w["export"] = base / "export"
    done = run_cli(["export", "--data", str(w["mined"]), "--out", str(w["export"]), "--no-text"])
    assert done.returncode == 0, done.stderr
    return w


def cmd(*parts: str) -> Callable[[dict[str, Path]], list[str]]:
    return lambda w: [part.format(**w) for part in parts]


def decode(*extra: str) -> Callable[[dict[str, Path]], list[str]]:
    return cmd("decode", "--task", "toy", "--input", "{good}", "--output", "{base}/out/d.jsonl", *extra)


def hogwild(*extra: str) -> Callable[[dict[str, Path]], list[str]]:
    base = ["hogwild", "--task", "toy", "--max-new-tokens", "8", "--input", "{good}", "--output", "{base}/out/h.jsonl"]
    return cmd(*base, *extra)


CONTEXT = r"must be <= 256 \(the models' context length\), got 1000000000000"
CORES = r"must be <= \d+ \(the CPU cores here\), got 100000"
CASES: list[tuple[str, Callable[[dict[str, Path]], list[str]], str]] = [
    # item 9: upper bounds
    ("decode-window-huge", decode("--window", HUGE), "--window " + CONTEXT),
    ("decode-budget-huge", decode("--max-new-tokens", HUGE), "--max-new-tokens " + CONTEXT),
    ("decode-judge-window-huge", decode("--mode", "autojudge", "--judge", "{judge_window_huge}"),
     r"the default_window of --judge .*judge-window_huge \(used when --window is not given\) " + CONTEXT),
    ("decode-threads-huge", decode("--threads", "100000"), "--threads " + CORES),
    ("decode-stop-empty", decode("--stop", ""), r"--stop must not be empty"),
    ("infer-stop-empty", cmd("infer", "--input", "{good}", "--output", "{base}/out/i", "--stop", ""), r"--stop must not be empty"),
    ("infer-window-huge", cmd("infer", "--input", "{good}", "--output", "{base}/out/i", "--window", HUGE), "--window " + CONTEXT),
    ("eval-budget-huge", cmd("eval", "--limit", "2", "--max-new-tokens", HUGE, "--out", "{base}/out/e"), "--max-new-tokens " + CONTEXT),
    ("eval-threads-huge", cmd("eval", "--limit", "2", "--threads", "100000", "--out", "{base}/out/e"), "--threads " + CORES),
    ("eval-limit-huge", cmd("eval", "--limit", str(10**9), "--out", "{base}/out/e"),
     r"the toy world generates at most 200,000 problems per seed, 1,000,000,000 were asked for"),
    ("serve-port-huge", cmd("serve", "--port", "70000"), r"--port must be <= 65535, got 70000"),
    ("serve-budget-huge", cmd("serve", "--max-tokens", HUGE, "--port", free_port()), "--max-tokens " + CONTEXT),
    ("mine-budget-huge", cmd("mine", *TOY, "--workers", "0", "--limit", "2", "--max-new-tokens", HUGE, "--out", "{base}/out/m"),
     "--max-new-tokens " + CONTEXT),
    ("mine-seed-negative", cmd("mine", *TOY, "--workers", "0", "--limit", "2", "--seed", "-1", "--out", "{base}/out/m"),
     r"--seed must be >= 0, got -1"),
    ("mine-limit-huge", cmd("mine", *TOY, "--workers", "0", "--limit", str(10**9), "--out", "{base}/out/m"),
     r"the toy world generates at most 200,000 problems"),
    ("mine-threads-huge", cmd("mine", *TOY, "--workers", "0", "--cpus-per-worker", "100000", "--out", "{base}/out/m"),
     "--cpus-per-worker " + CORES),
    ("train-seed-negative", cmd("train", "--data", "{mined_corrupt}", "--out", "{base}/out/j", "--seed", "-1"),
     r"--seed must be >= 0, got -1"),  # before the (corrupt) data is read
    ("train-threads-huge", cmd("train", "--data", "{mined}", "--out", "{base}/out/j", "--threads", "100000"), "--threads " + CORES),
    ("run-mine-problems-huge", cmd("run", "--mine-problems", str(10**9), "--out", "{base}/out/r"),
     r"--mine-problems \+ --select-problems must be <= 200,000 \(the toy world's problems per seed\), got 1,000,000,500"),
    ("run-window-huge", cmd("run", "--window", HUGE, "--out", "{base}/out/r"), "--window " + CONTEXT),
    ("run-threads-huge", cmd("run", "--threads", "100000", "--out", "{base}/out/r"), "--threads " + CORES),
    ("toy-num-huge", cmd("toy", "--num", str(10**9), "--out", "{base}/out/t.jsonl"), r"--num must be <= 200000, got 1000000000"),
    ("toy-seed-negative", cmd("toy", "--seed", "-1", "--out", "{base}/out/t.jsonl"), r"--seed must be >= 0, got -1"),
    # item 8: actors the local cluster cannot place
    ("mine-workers-more-than-cpus", cmd("mine", *TOY, "--workers", MORE_CPUS, "--limit", "2", "--out", "{base}/out/m"),
     rf"mining workers need {MORE_CPUS} x 1 CPUs; the cluster has \d+ \(they would wait forever\); use fewer --workers"),
    ("mine-cpus-per-worker-more-than-a-node", cmd("mine", *TOY, "--workers", "1", "--cpus-per-worker", MORE_CPUS,
                                                  "--limit", "2", "--out", "{base}/out/m"),
     rf"mining workers ask for {MORE_CPUS} CPUs each; the largest node of the cluster has \d+"),
    ("run-mine-workers-more-than-cpus", cmd("run", "--mine-workers", MORE_CPUS, "--out", "{base}/out/r"),
     rf"mining workers need {MORE_CPUS} x 1 CPUs; the cluster has \d+"),
    ("run-eval-workers-more-than-cpus", cmd("run", "--eval-workers", MORE_CPUS, "--out", "{base}/out/r"),
     rf"evaluation workers need {MORE_CPUS} x 1 CPUs; the cluster has \d+ \(they would wait forever\); use fewer --eval-workers"),
    ("eval-workers-more-than-cpus", cmd("eval", "--limit", "2", "--workers", MORE_CPUS, "--out", "{base}/out/e"),
     rf"evaluation workers need {MORE_CPUS} x 1 CPUs; the cluster has \d+ \(they would wait forever\); use fewer --workers"),
    # item 10: hogwild checks up front like the other commands
    ("hogwild-header-without-name", hogwild("--header", "Worker: "), r"the worker header must contain \{name\}"),
    ("hogwild-output-is-dir", cmd("hogwild", "--task", "toy", "--input", "{good}", "--output", "{adir}"),
     r"--output .*a-dir: is a folder, expected a file path"),
    ("hogwild-output-unwritable", cmd("hogwild", "--task", "toy", "--input", "{good}", "--output", "{afile}/sub/h.jsonl"),
     r"cannot be created, .*a-file is a file"),
    ("hogwild-empty-input", cmd("hogwild", "--task", "toy", "--input", "{empty}", "--output", "{base}/out/h.jsonl"), r"no records"),
    ("hogwild-limit-0", hogwild("--limit", "0"), r"--limit must be >= 1, got 0"),
    ("hogwild-limit-negative", hogwild("--limit", "-1"), r"--limit must be >= 1, got -1"),
    ("hogwild-prompt-too-long", cmd("hogwild", "--task", "toy", "--input", "{long}", "--output", "{base}/out/h.jsonl"),
     r"long\.jsonl: record 'long-1': prompt has \d+ tokens, the models' context is 256 tokens"),
    ("hogwild-threads-negative", hogwild("--threads", "-1"), r"--threads must be >= 1, got -1"),
    ("hogwild-budget-huge", cmd("hogwild", "--task", "toy", "--max-new-tokens", HUGE, "--input", "{good}",
                                "--output", "{base}/out/h.jsonl"), "--max-new-tokens " + CONTEXT),
    # item 13: judge.json and export --push
    ("judge-without-thresholds", decode("--mode", "autojudge", "--judge", "{judge_no_thresholds}"),
     r"judge\.json: missing key\(s\) 'thresholds'"),
    ("judge-nan-in-thresholds", decode("--mode", "autojudge", "--judge", "{judge_nan_threshold}"),
     r"judge\.json: 'thresholds'\[0\] 'recall_important' must be a finite number, got nan"),
    ("judge-nested-deeply", decode("--mode", "autojudge", "--judge", "{judge_deep}"),
     r"judge\.json: nested too deeply to be a judge\.json"),
    ("judge-copy-of-target-without-override", decode("--mode", "autojudge", "--judge", "{judge}", "--target", "{target_copy}"),
     r"this judge does not fit the model pair: target model .*target-copy.*pass --same-pair"),
    ("export-push-without-token", cmd("export", "--data", "{mined}", "--out", "{base}/out/x", "--push", "--repo-id", "me/aj"),
     r"--push needs a Hugging Face write token: set HF_TOKEN or run `hf auth login` \(nothing was exported\)"),
    ("export-push-bad-repo-id", cmd("export", "--data", "{mined}", "--out", "{base}/out/x", "--push", "--repo-id", "no slash"),
     r"--repo-id 'no slash' is not a Hub repository id"),
    ("export-push-repo-id-without-org", cmd("export", "--data", "{mined}", "--out", "{base}/out/x", "--push", "--repo-id", "aj"),
     r"--repo-id must be ORG/NAME"),
]
CASE_ENV = {"export-push-without-token": "hf-home", "export-push-bad-repo-id": "token", "export-push-repo-id-without-org": "token"}


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_refused_in_one_line_before_any_work(world: dict[str, Path], case: Any, tmp_path: Path) -> None:
    name, argv, pattern = case
    env = {"hf-home": {"HF_HOME": str(tmp_path / "hf")}, "token": {"HF_TOKEN": "hf_dummy"}}.get(CASE_ENV.get(name, ""))
    before = snapshot(world["base"])
    assert_refused(argv(world), pattern, env)
    assert snapshot(world["base"]) == before  # nothing created, nothing changed


def test_hogwild_passes_the_header_on(world: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "h.jsonl"
    done = run_cli(["hogwild", "--task", "toy", "--max-new-tokens", "4", "--limit", "1", "--threads", "1",
                    "--header", "[{name} says] ", "--input", str(world["good"]), "--output", str(out)])
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text().splitlines()[0])
    assert "[Alice says] " in record["transcript"] and "[Bob says] " in record["transcript"]


def test_same_pair_accepts_an_identical_copy_when_declared(world: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "d.jsonl"
    done = run_cli(["decode", "--task", "toy", "--mode", "autojudge", "--judge", str(world["judge"]), "--target",
                    str(world["target_copy"]), "--same-pair", "--max-new-tokens", "8", "--threads", "1",
                    "--input", str(world["good"]), "--output", str(out)])
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 2
    # the other facts are still checked: a judge of another width is refused with --same-pair too
    other = tmp_path / "judge-other"
    shutil.copytree(world["judge"], other)
    meta = json.loads((other / "judge.json").read_text())
    meta["pair"]["target_hidden_size"] += 1
    meta["num_features"] += 1
    (other / "judge.json").write_text(json.dumps(meta))
    from safetensors.numpy import save_file
    import numpy as np

    width = meta["num_features"]
    save_file({"scaler_mean": np.zeros(width, np.float32), "scaler_scale": np.ones(width, np.float32),
               "coef": np.zeros(width, np.float32)}, str(other / "weights.safetensors"))
    assert_refused(["decode", "--task", "toy", "--mode", "autojudge", "--judge", str(other), "--target",
                    str(world["target_copy"]), "--same-pair", "--input", str(world["good"]), "--output", str(out) + "2"],
                   r"target hidden size \d+ \(judge expects \d+\)")


def test_export_push_pushes_an_existing_export(world: dict[str, Path], tmp_path: Path) -> None:
    """The retry the push failure advises: the same command again pushes the export that is there
    (no network here, so it fails again, the same way, and the export stays as it was)."""
    export = tmp_path / "export"
    shutil.copytree(world["export"], export)
    before = snapshot(export)
    env = {"HF_TOKEN": "hf_dummy", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2",
           "HF_HOME": str(tmp_path / "hf")}
    done = run_cli(["export", "--data", str(world["mined"]), "--out", str(export), "--push", "--repo-id", "me/aj"], env)
    assert done.returncode == 1, done.stderr
    assert "already holds an export: pushing it as it is" in done.stdout
    assert "push to https://huggingface.co/datasets/me/aj failed" in done.stderr and "already exists" not in done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(export) == before


def test_actors_the_running_cluster_cannot_place_are_refused(local_ray: None) -> None:
    """After Ray started: the cluster's own resources (the local one of the tests has 2 CPUs)."""
    from autojudge.errors import InputError
    from autojudge.ray_utils import check_actor_resources

    check_actor_resources("workers", 2, 1.0)
    check_actor_resources("replicas", 1, 1.0, spare_cpus=1.0)
    with pytest.raises(InputError, match=r"workers need 3 x 1 CPUs; the cluster has 2 \(they would wait forever\)"):
        check_actor_resources("workers", 3, 1.0)
    with pytest.raises(InputError, match=r"workers ask for 3 CPUs each; the largest node of the cluster has 2"):
        check_actor_resources("workers", 1, 3.0)
    with pytest.raises(InputError, match=r"replicas need 2 x 1 CPUs \+ 1 for reading and writing; the cluster has 2"):
        check_actor_resources("replicas", 2, 1.0, spare_cpus=1.0)
    with pytest.raises(InputError, match=r"workers ask for 1 GPUs each; the largest node of the cluster has 0"):
        check_actor_resources("workers", 1, 1.0, gpus=1.0)
