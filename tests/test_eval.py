"""Evaluation helpers: threshold sweep from the validation table, the recommendation rule,
and the written outputs (metrics.json, report.md, pareto.png)."""

from __future__ import annotations

import json
from pathlib import Path

from autojudge.pipeline.evaluate import SettingResult, recommend_threshold, sweep_thresholds, write_eval_outputs


def setting(mode: str, param: float | None, accuracy: float, tokens_per_call: float) -> SettingResult:
    label = mode if param is None else f"{mode} {param:g}"
    return SettingResult(
        mode=mode, param=param, label=label, accuracy=accuracy, num_correct=int(100 * accuracy), num_problems=100,
        agreement_with_target=None if mode == "exact" else 0.97, tokens_per_target_call=tokens_per_call,
        new_tokens=1000, target_calls=int(1000 / tokens_per_call), draft_calls=900,
        mean_accepted_length=tokens_per_call, wall_s=2.0, tokens_per_s=500.0,
    )


RESULTS = [
    setting("exact", None, 0.90, 3.0),
    setting("topk", 2, 0.86, 4.0),
    setting("autojudge", 0.1, 0.90, 3.8),
    setting("autojudge", 0.3, 0.89, 4.9),
    setting("autojudge", 0.5, 0.85, 6.0),
    setting("autojudge", 1.0, 0.40, 9.0),
]


def test_recommend_is_fastest_within_the_drop() -> None:
    assert recommend_threshold(RESULTS, 0.01).param == 0.3
    assert recommend_threshold(RESULTS, 0.0).param == 0.1
    assert recommend_threshold(RESULTS, 0.06).param == 0.5
    assert recommend_threshold([RESULTS[0], RESULTS[-1]], 0.01) is None
    lucky = [*RESULTS, setting("autojudge", 0.9, 0.95, 8.0)]  # recovers by chance past the breakdown at 0.5
    assert recommend_threshold(lucky, 0.01).param == 0.3


def test_sweep_from_validation_table() -> None:
    table = [{"tau": t / 10, "acceptance_rate": t / 10, "recall_important": 1 - t / 20} for t in range(1, 10)]
    assert sweep_thresholds(table, (0.25, 0.5, 0.5, 1.0), (), ()) == [0.3, 0.5, 1.0]
    assert sweep_thresholds(table, (), (0.99, 0.9, 0.5), ()) == [0.2, 0.9]  # largest tau keeping each recall
    assert sweep_thresholds(table, (), (), (0.01, 0.05)) == [0.01, 0.05]


def test_outputs_are_written(tmp_path: Path) -> None:
    chosen = recommend_threshold(RESULTS, 0.01)
    paths = write_eval_outputs(RESULTS, tmp_path, "test", {"problems": 100}, 0.01, chosen)
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["chosen"]["param"] == 0.3
    assert [s["mode"] for s in metrics["settings"]] == ["exact", "topk", "autojudge", "autojudge", "autojudge", "autojudge"]
    assert abs(metrics["settings"][3]["speedup_vs_exact"] - 4.9 / 3.0) < 1e-9
    report = paths["report"].read_text()
    assert "(chosen)" in report and "Breakdown: from tau = 0.5" in report
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_modes_end_to_end_with_tiny_models(tmp_path: Path) -> None:
    """Wiring: tiny random models, the toy tokenizer and task, a hand-made judge.
    tau = 0 accepts no mismatch, so it must decode exactly like `exact`."""
    import numpy as np
    import torch

    from tests.helpers import tiny_model
    from autojudge.models import ModelPair, load_tokenizer
    from autojudge.pipeline.evaluate import EvalConfig, evaluate_modes
    from autojudge.judge import Judge, PairInfo
    from autojudge.tasks import get_task

    torch.set_num_threads(1)
    tokenizer = load_tokenizer("toy:target")
    vocab = len(tokenizer)
    pair = ModelPair(tiny_model(seed=1, vocab_size=vocab, hidden_size=32, layers=2),
                     tiny_model(seed=2, vocab_size=vocab, hidden_size=32, layers=1), tokenizer, "tiny:t", "tiny:d")
    rng = np.random.default_rng(0)
    judge = Judge("logreg", "DD-DT", PairInfo("tiny:t", "tiny:d", "x", 32, 32),
                  scaler_mean=np.zeros(64), scaler_scale=np.ones(64), coef=rng.normal(size=64) * 0.1,
                  thresholds=[{"tau": 0.5, "acceptance_rate": 0.5}])
    task = get_task("toy", seed=2)
    problems = task.load(limit=3)
    config = EvalConfig(window=3, max_new_tokens=10, batch_size=2, top_ks=(3,), thresholds=(0.0, 1.0))
    results = evaluate_modes(pair, task, problems, judge, config, show_progress=False)
    by_label = {r.label: r for r in results}
    assert list(by_label) == ["exact", "topk K=3", "autojudge tau=0", "autojudge tau=1"]
    exact, never, always = by_label["exact"], by_label["autojudge tau=0"], by_label["autojudge tau=1"]
    assert never.answers == exact.answers and never.target_calls == exact.target_calls
    assert never.agreement_with_target == 1.0
    assert always.tokens_per_target_call >= exact.tokens_per_target_call
    assert all(r.num_problems == 3 and r.new_tokens > 0 for r in results)
    # threshold selection stops at the first threshold that loses too much (here: any)
    strict = EvalConfig(window=3, max_new_tokens=10, batch_size=3, top_ks=(), thresholds=(1.0, 0.0), max_accuracy_drop=-0.5)
    stopped = evaluate_modes(pair, task, problems, judge, strict, show_progress=False, stop_after_drop=True)
    assert [r.label for r in stopped] == ["exact", "autojudge tau=0"]


def test_evaluation_workers_give_the_same_curve(tiny_pair_dirs: tuple[Path, Path], tmp_path: Path, local_ray) -> None:
    """Two Ray actors (each loading the pair from its folders) decode the settings side by side: the
    results equal the in-process ones setting by setting, threshold selection still stops at the
    first threshold that loses too much (a larger one decoded meanwhile is left out), and the stored
    settings are what a later in-process call reuses."""
    import numpy as np

    from autojudge.judge import Judge, PairInfo
    from autojudge.models import load_pair
    from autojudge.pipeline.evaluate import EvalConfig, evaluate_modes
    from autojudge.tasks import get_task

    target_dir, draft_dir = tiny_pair_dirs
    pair = load_pair(str(target_dir), str(draft_dir))
    judge = Judge("logreg", "DD-DT", PairInfo(str(target_dir), str(draft_dir), "x", 32, 32),
                  scaler_mean=np.zeros(64), scaler_scale=np.ones(64), coef=np.random.default_rng(0).normal(size=64) * 0.1,
                  thresholds=[{"tau": 0.5, "acceptance_rate": 0.5}])
    task = get_task("toy", seed=2)
    problems = task.load(limit=4)
    config = EvalConfig(window=3, max_new_tokens=12, batch_size=2, top_ks=(3,), thresholds=(0.0, 0.5, 1.0),
                        min_probs=(0.3,))
    local = evaluate_modes(pair, task, problems, judge, config, show_progress=False)
    cache = tmp_path / "settings"
    parallel = evaluate_modes(pair, task, problems, judge, EvalConfig(**{**config.__dict__, "workers": 2}),
                              show_progress=False, cache_dir=cache)
    assert [r.label for r in parallel] == [r.label for r in local] == [
        "exact", "topk K=3", "prob p=0.3", "autojudge tau=0", "autojudge tau=0.5", "autojudge tau=1"]
    for ours, theirs in zip(parallel, local):
        assert (ours.answers, ours.new_tokens, ours.target_calls, ours.agreement_with_target) == (
            theirs.answers, theirs.new_tokens, theirs.target_calls, theirs.agreement_with_target), ours.label
    assert len(list(cache.glob("*.json"))) == 6
    again = evaluate_modes(pair, task, problems, judge, config, show_progress=False, cache_dir=cache)
    assert [(r.label, r.wall_s) for r in again] == [(r.label, r.wall_s) for r in parallel]  # read back, not decoded
    strict = EvalConfig(**{**config.__dict__, "top_ks": (), "min_probs": (), "max_accuracy_drop": -0.5, "workers": 2})
    stopped = evaluate_modes(pair, task, problems, judge, strict, show_progress=False, stop_after_drop=True)
    assert [r.label for r in stopped] == ["exact", "autojudge tau=0"]
