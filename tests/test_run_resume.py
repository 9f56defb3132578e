"""`autojudge run` resumed with changed settings (issue 24, item 3).

Every stage's stored result carries the settings it was made with: a rerun whose settings
differ redoes that stage and the ones after it (or, for mining, refuses naming what
changed), reuses what is unchanged, and `summary.json` records only what was used.

As in test_run.py, mining is replaced by a synthetic mining folder that grows like a resumed
mining does (a rerun adds prompts, never removes any); decoding runs for real on tiny random
models saved with the toy tokenizer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autojudge.judge import Judge
from autojudge.models import TOY_WEIGHTS, load_tokenizer, tokenizer_fingerprint
from autojudge.pipeline import run as run_module
from autojudge.setup import DecodingConfig
from tests.helpers import write_mining_folder

ROOT = Path(__file__).resolve().parents[1]


def save_tiny(folder: Path, seed: int, hidden: int, vocab: int) -> str:
    from tests.helpers import tiny_model

    tiny_model(seed=seed, vocab_size=vocab, hidden_size=hidden, layers=1).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TOY_WEIGHTS / "target" / name, folder / name)
    return str(folder)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> run_module.RunConfig:
    torch.set_num_threads(1)
    tokenizer = load_tokenizer("toy:target")
    target = save_tiny(tmp_path / "target", seed=1, hidden=16, vocab=len(tokenizer))
    draft = save_tiny(tmp_path / "draft", seed=2, hidden=8, vocab=len(tokenizer))
    manifest = {"target": target, "draft": draft, "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
                "target_hidden_size": 16, "draft_hidden_size": 8}

    def mine_more(config: run_module.RunConfig, out: Path) -> Path:
        from autojudge.pipeline.shards import count_rows

        there = count_rows(out)["prompts"] if out.exists() else 0
        return write_mining_folder(out, num_prompts=max(there, config.mine_problems), manifest_overrides=manifest)

    monkeypatch.setattr(run_module, "mine_stage", mine_more)
    return run_module.RunConfig(
        out=str(tmp_path / "run"), decoding=DecodingConfig(target, draft, max_new_tokens=6, window=3), mine_problems=40, select_problems=2,
        test_problems=2, compare_windows=(), top_ks=(2,), threads=1,
    )


def run(config: run_module.RunConfig, **changes) -> dict:
    return run_module.run_main(dataclasses.replace(config, **changes), echo=lambda line: None)


def wall_times(run_dir: Path, stage: str) -> dict[tuple[str, float | None], float]:
    """(mode, param) -> wall time of each setting in a stage's metrics.json (equal only when reused)."""
    settings = json.loads((run_dir / stage / "metrics.json").read_text())["settings"]
    return {(s["mode"], s["param"]): s["wall_s"] for s in settings}


def test_another_judge_model_and_features_train_the_judge_again(config: run_module.RunConfig) -> None:
    run_dir = Path(config.out)
    run(config)
    assert Judge.load(run_dir / "judge").kind == "logreg"
    eval_first = wall_times(run_dir, "eval")
    second = run(config, judge_model="lightgbm", feature_setup="DT")
    judge = Judge.load(run_dir / "judge")
    assert (judge.kind, judge.feature_setup) == ("lightgbm", "DT")
    assert (second["config"]["judge_model"], second["config"]["feature_setup"]) == ("lightgbm", "DT")
    assert second["judge"] == {key: judge.metrics[key] for key in second["judge"]}
    assert "rounds" in judge.metrics  # a LightGBM fit
    # exact decoding does not depend on the judge: reused; the new judge's settings are decoded anew
    assert wall_times(run_dir, "eval")[("exact", None)] == eval_first[("exact", None)]
    # the same settings again: nothing is trained or decoded again
    judge_bytes = (run_dir / "judge" / "model.txt").read_bytes()
    eval_before = wall_times(run_dir, "eval")
    third = run(config, judge_model="lightgbm", feature_setup="DT")
    assert (run_dir / "judge" / "model.txt").read_bytes() == judge_bytes
    assert wall_times(run_dir, "eval") == eval_before
    assert third["judge"] == second["judge"]


def test_more_or_fewer_mined_problems_retrain_and_reselect(config: run_module.RunConfig) -> None:
    run_dir = Path(config.out)
    first = run(config)
    select_first, eval_first = wall_times(run_dir, "select"), wall_times(run_dir, "eval")

    second = run(config, mine_problems=60)  # mines 20 more: the judge and the selection problems change
    judge = Judge.load(run_dir / "judge")
    assert second["mined"]["prompts"] == 60
    assert judge.metrics["num_train_prompts"] + judge.metrics["num_val_prompts"] == 60
    assert second["judge"]["num_train"] + second["judge"]["num_val"] == second["mined"]["mismatches"]
    # the selection problems moved past the new mined ones: decoded again, not reused
    assert wall_times(run_dir, "select")[("exact", None)] != select_first[("exact", None)]
    # the test problems did not move: exact is reused there
    assert wall_times(run_dir, "eval")[("exact", None)] == eval_first[("exact", None)]

    third = run(config, mine_problems=30)  # the folder holds 60: only the first 30 are this run's mined problems
    judge = Judge.load(run_dir / "judge")
    assert third["mined"]["prompts"] == 30
    assert judge.metrics["num_train_prompts"] + judge.metrics["num_val_prompts"] == 30
    assert third["mined"]["mismatches"] < first["mined"]["mismatches"]


def test_mining_from_another_train_file_is_refused_naming_it(tmp_path: Path) -> None:
    """GSM8K prompt ids are line numbers: labels mined from another file under the same ids would be
    reused as if they were this file's. The run refuses before it writes anything."""
    from autojudge.toy.world import generate_problems

    records = generate_problems(12, 2)
    train, other = tmp_path / "train.jsonl", tmp_path / "other.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in records))
    other.write_text("".join(json.dumps(dict(r, question=r["question"] + " ")) + "\n" for r in records))
    run_dir = tmp_path / "run"
    (run_dir / "mined").mkdir(parents=True)
    source = {"train_sha256": hashlib.sha256(train.read_bytes()).hexdigest()[:16]}
    manifest = {"task": "gsm8k", "target": "toy:target", "draft": "toy:draft", "status": "complete",
                "settings": {"task": "gsm8k", "settings_note": {"problems": source}}, "counts": {}}
    (run_dir / "mined" / "manifest.json").write_text(json.dumps(manifest))
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, "-m", "autojudge.cli", "run", "--task", "gsm8k", "--train-input", str(other), "--test-input",
         str(other), "--mine-problems", "4", "--select-problems", "2", "--test-problems", "2", "--mine-workers", "0",
         "--out", str(run_dir)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert f"autojudge run: error: {run_dir / 'mined'} was mined from another --train-input" in done.stderr
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert not (run_dir / "inputs").exists()
