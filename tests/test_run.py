"""`autojudge run` wiring: train -> threshold selection -> held-out evaluation -> run folder.

Mining is replaced by a synthetic mining folder (the miner has its own tests); decoding
runs for real on tiny random models saved with the toy tokenizer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from autojudge.models import TOY_WEIGHTS, load_tokenizer, tokenizer_fingerprint
from autojudge.pipeline import run as run_module
from autojudge.setup import DecodingConfig
from autojudge.judge import Judge
from tests.helpers import write_mining_folder


def save_tiny(folder: Path, seed: int, hidden: int, layers: int, vocab: int) -> str:
    from tests.helpers import tiny_model

    tiny_model(seed=seed, vocab_size=vocab, hidden_size=hidden, layers=layers).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TOY_WEIGHTS / "target" / name, folder / name)
    return str(folder)


def test_run_main_writes_every_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    torch.set_num_threads(1)
    tokenizer = load_tokenizer("toy:target")
    target = save_tiny(tmp_path / "target", seed=1, hidden=16, layers=2, vocab=len(tokenizer))
    draft = save_tiny(tmp_path / "draft", seed=2, hidden=8, layers=1, vocab=len(tokenizer))
    manifest = {"target": target, "draft": draft, "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
                "target_hidden_size": 16, "draft_hidden_size": 8}

    def fake_mine(config: run_module.RunConfig, out: Path) -> Path:
        return write_mining_folder(out, num_prompts=40, manifest_overrides=manifest)

    monkeypatch.setattr(run_module, "mine_stage", fake_mine)
    config = run_module.RunConfig(
        out=str(tmp_path / "run"), decoding=DecodingConfig(target, draft, max_new_tokens=8, window=3), mine_problems=40, select_problems=3,
        test_problems=3, compare_windows=(2, 3), top_ks=(2,), threads=1,
    )
    summary = run_module.run_main(config, echo=lambda line: None)
    run_dir = Path(summary["run_dir"])
    for path in summary["artifacts"].values():
        assert Path(path).exists(), path
    assert {p.name for p in (run_dir / "eval").iterdir()} >= {"report.md", "metrics.json", "pareto.png"}
    judge = Judge.load(run_dir / "judge")
    assert judge.default_threshold == summary["default_threshold"]
    assert judge.threshold_source.startswith("selection sweep")  # tiny problems: accuracy is 0 everywhere
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["chosen"]["param"] == round(judge.default_threshold, 4)
    assert set(summary["stage_seconds"]) == {"mine", "train", "select threshold", "evaluate", "other windows"}
    assert [w["window"] for w in summary["other_windows"]] == [2]
    assert summary["other_windows"][0]["exact_tokens_per_target_call"] > 0
    text = run_module.format_summary(summary)
    assert "validation ROC AUC" in text and str(run_dir / "eval" / "pareto.png") in text
    assert "same problems, window 2:" in text
    assert (run_dir / "report.md").read_text().count("window 2") == 1


def test_eval_command_refuses_a_mismatched_pair(tmp_path: Path, capsys) -> None:
    from autojudge.cli import main
    from autojudge.pipeline.dataset import read_mined
    from autojudge.pipeline.train import train_judge

    judge = train_judge(read_mined(write_mining_folder(tmp_path / "mined", num_prompts=30)))
    judge.save(tmp_path / "judge")  # trained for synthetic:target / synthetic:draft
    vocab = len(load_tokenizer("toy:target"))
    target = save_tiny(tmp_path / "target", seed=1, hidden=16, layers=1, vocab=vocab)
    draft = save_tiny(tmp_path / "draft", seed=2, hidden=8, layers=1, vocab=vocab)
    code = main(["eval", "--judge", str(tmp_path / "judge"), "--target", target, "--draft", draft,
                 "--out", str(tmp_path / "eval"), "--limit", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "does not fit the model pair" in err and "synthetic:target" in err
    assert not (tmp_path / "eval").exists()


def test_eval_command_refuses_a_bad_window(tmp_path: Path, capsys) -> None:
    from autojudge.cli import main

    assert main(["eval", "--window", "0", "--limit", "1", "--out", str(tmp_path / "eval")]) == 2
    assert "--window must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()


def test_selection_that_keeps_nothing_makes_the_judge_accept_nothing() -> None:
    """The selection sweep's pick becomes the judge's default threshold; when no threshold kept the
    quality within the allowed drop, the default is 0 (exact decoding), not the validation default."""
    import numpy as np

    from autojudge.judge import PairInfo
    from autojudge.pipeline.evaluate import SettingResult
    from autojudge.pipeline.run import RunConfig, apply_selection

    judge = Judge("logreg", "DT", PairInfo("t", "d", "x", 4, 4), scaler_mean=np.zeros(4), scaler_scale=np.ones(4),
                  coef=np.ones(4), thresholds=[{"tau": 0.3, "acceptance_rate": 0.5}])
    judge.set_default_threshold(0.3, "validation recall of important >= 0.95")
    config = RunConfig(decoding=DecodingConfig(window=8), quality="agreement")
    chosen = SettingResult(mode="autojudge", param=0.12, label="autojudge tau=0.12", accuracy=0.1, num_correct=1,
                           num_problems=10, agreement_with_target=1.0, tokens_per_target_call=2.0, new_tokens=20,
                           target_calls=10, draft_calls=80, mean_accepted_length=1.0, wall_s=1.0, tokens_per_s=20.0)
    said: list[str] = []
    apply_selection(judge, chosen, "selection problems", config, said.append)
    assert (judge.default_threshold, judge.default_window, said) == (0.12, 8, [])
    apply_selection(judge, None, "selection problems", config, said.append)
    assert judge.default_threshold == 0.0 and judge.default_window == 8
    assert "no threshold kept agreement" in judge.threshold_source and "instead of the validation default 0.12" in said[0]
