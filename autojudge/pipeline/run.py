"""The main job on the built-in toy world: mine -> train -> choose threshold -> evaluate.

Problem sets never overlap:
- mining: the first `mine_problems` problems of seed 1;
- threshold selection: the next `select_problems` problems of seed 1 (never mined);
- test: `test_problems` problems of seed 2 (the held-out evaluation seed).

The judge's default threshold is the one the selection sweep recommends (most tokens
per target call within `max_accuracy_drop` of exact); the test sweep then reports the
whole curve and where the chosen threshold lands, so the headline number is not tuned
on the problems it is measured on. Every mode runs at the same window; the test stage
also runs exact and the chosen threshold at `compare_windows`, so the report shows how
the gain depends on the window (a judge that accepts most mismatches needs a long
window to turn acceptance into fewer target calls).

Run folder layout:
    RUN/mined/      labels/*.parquet, responses/*.parquet, manifest.json
    RUN/judge/      judge.json, weights.safetensors, train_report.md
    RUN/select/     report.md, metrics.json, pareto.png (threshold selection)
    RUN/eval/       report.md, metrics.json, pareto.png (held-out test)
    RUN/summary.json, RUN/report.md (the headline lines and where everything went)
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from autojudge.tasks.base import Problem

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """Settings of the main job (defaults take ~3.5 minutes on an idle 2-core CPU machine)."""

    out: str | None = None
    """Run folder; default runs/<timestamp>."""
    target: str = "toy:target"
    """Target model spec."""
    draft: str = "toy:draft"
    """Draft model spec."""
    mine_problems: int = 600
    """Problems of seed 1 to mine labels from."""
    select_problems: int = 500
    """Problems of seed 1 after the mined ones, used to choose the threshold (1 point = 5 problems)."""
    test_problems: int = 500
    """Held-out problems of seed 2 for the final curve."""
    mine_seed: int = 1
    """Toy seed of the mining and selection problems."""
    test_seed: int = 2
    """Toy seed of the test problems."""
    max_new_tokens: int = 112
    """Generation budget per problem (mining and decoding); toy target answers take at most ~92 tokens."""
    window: int = 12
    """Draft tokens per cycle in selection and evaluation, the same for every mode."""
    compare_windows: tuple[int, ...] = (8, 16)
    """Other windows at which the test stage also runs exact and the chosen threshold."""
    top_ks: tuple[int, ...] = (2, 3)
    """K values of the topk baseline."""
    judge_model: str = "logreg"
    """Judge classifier: logreg or lightgbm."""
    feature_setup: str = "DD-DT"
    """Judge features: DT or DD-DT."""
    max_accuracy_drop: float = 0.01
    """Accuracy (fraction) the chosen threshold may lose against exact on the selection problems."""
    mine_batch_size: int = 32
    """Searches in flight per mining worker."""
    mine_workers: int = 1
    """Mining workers (Ray actors, `threads` CPUs each); 0 mines in this process without Ray."""
    eval_batch_size: int = 50
    """Problems decoded together in evaluation."""
    device: str = "cpu"
    """Torch device."""
    threads: int = 1
    """Torch CPU threads (and CPUs of the mining actor). 1 by default: the toy models gain
    little from a second thread, and with another process busy on one of two cores, two
    threads made mining 24x slower (378 s vs 16 s for 64 problems)."""
    seed: int = 0
    """Seed of the judge's prompt split and classifier."""

    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def toy_problems(seed: int, start: int, count: int) -> list[Problem]:
    """Problems start..start+count-1 of a toy seed (a stream: earlier ones do not depend on count)."""
    from autojudge.toy.world import generate_problems

    records = generate_problems(start + count, seed)[start:]
    return [Problem(id=r["id"], question=r["question"], answer=r["answer"]) for r in records]


class StageTimer:
    """Wall time per stage, printed as each stage ends."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.times: dict[str, float] = {}
        self.echo = echo

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        self.echo(f"\n== {name} ==")
        start = time.perf_counter()
        result = fn()
        self.times[name] = time.perf_counter() - start
        self.echo(f"-- {name} done in {self.times[name]:.0f} s")
        return result


def mine_stage(config: RunConfig, out: Path) -> Path:
    """Mine labels + features for the first `mine_problems` problems of the mining seed."""
    from autojudge.pipeline.mine import MineConfig, mine

    mine_config = MineConfig(
        task="toy", target=config.target, draft=config.draft, limit=config.mine_problems, seed=config.mine_seed,
        out=str(out), max_new_tokens=config.max_new_tokens, batch_size=config.mine_batch_size,
        workers=config.mine_workers, cpus_per_worker=config.threads,
        gpus_per_worker=1.0 if config.device.startswith("cuda") else 0.0,
    )
    return Path(mine(mine_config))


def run_main(config: RunConfig, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Mine, train, select the threshold, evaluate; return the summary (also written to RUN/summary.json)."""
    import torch

    from autojudge.models import load_pair
    from autojudge.pipeline.dataset import read_mined
    from autojudge.pipeline.evaluate import (
        EvalConfig, evaluate_modes, recommend_threshold, sweep_thresholds, write_eval_outputs,
    )
    from autojudge.pipeline.train import TrainConfig, format_report, train_judge
    from autojudge.tasks import get_task

    torch.set_num_threads(config.threads)
    run_dir = config.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    echo(f"run folder: {run_dir}")
    timer = StageTimer(echo)

    mined_dir = timer.run("mine", lambda: mine_stage(config, run_dir / "mined"))
    data = read_mined(mined_dir)
    echo(f"{len(data)} mismatches ({int(data.important.sum())} important) from {len(set(data.prompt_ids.tolist()))} prompts")

    def train() -> Any:
        judge = train_judge(data, TrainConfig(model=config.judge_model, feature_setup=config.feature_setup, seed=config.seed))
        judge.save(run_dir / "judge")
        (run_dir / "judge" / "train_report.md").write_text(format_report(judge))
        return judge

    judge = timer.run("train", train)
    echo(f"validation ROC AUC {judge.metrics['val_roc_auc']:.4f}, PR AUC {judge.metrics['val_pr_auc']:.4f}")

    pair = load_pair(config.target, config.draft, device=config.device)
    judge.check_model_pair(pair)
    task = get_task("toy")
    eval_config = EvalConfig(
        window=config.window, max_new_tokens=config.max_new_tokens, batch_size=config.eval_batch_size,
        top_ks=config.top_ks, max_accuracy_drop=config.max_accuracy_drop, device=config.device,
    )
    eval_config.thresholds = tuple(
        sweep_thresholds(judge.thresholds, eval_config.acceptance_rates, eval_config.recall_levels)
    )
    context = {
        "target / draft": f"`{config.target}` / `{config.draft}`",
        "judge": f"{judge.kind} {judge.feature_setup}, validation ROC AUC {judge.metrics['val_roc_auc']:.3f}",
        "window": config.window,
        "max new tokens": config.max_new_tokens,
    }

    select_problems = toy_problems(config.mine_seed, config.mine_problems, config.select_problems)

    def select() -> Any:
        select_config = EvalConfig(**dict(asdict(eval_config), top_ks=()))  # exact vs autojudge only
        results = evaluate_modes(pair, task, select_problems, judge, select_config, stop_after_drop=True)
        chosen = recommend_threshold(results, config.max_accuracy_drop)
        where = f"{len(select_problems)} problems of seed {config.mine_seed} after the {config.mine_problems} mined"
        write_eval_outputs(results, run_dir / "select", "Threshold selection", dict(context, problems=where),
                           config.max_accuracy_drop, chosen)
        if chosen is not None:
            judge.set_default_threshold(
                float(chosen.param),
                f"selection sweep on {where}: most tokens/target call within "
                f"{100 * config.max_accuracy_drop:g} point of exact",
                window=config.window,
            )
        else:
            echo("no threshold kept accuracy within the allowed drop on the selection problems; "
                 f"keeping the validation default tau={judge.default_threshold:g}")
        judge.save(run_dir / "judge")
        return chosen

    timer.run("select threshold", select)
    echo(f"default threshold tau = {judge.default_threshold:g} ({judge.threshold_source})")

    test_problems = toy_problems(config.test_seed, 0, config.test_problems)

    def test() -> Any:
        thresholds = tuple(sorted(set(eval_config.thresholds or ()) | {round(judge.default_threshold, 4)}))
        test_config = EvalConfig(**dict(asdict(eval_config), thresholds=thresholds))
        results = evaluate_modes(pair, task, test_problems, judge, test_config)
        chosen = next(r for r in results if r.mode == "autojudge" and r.param == round(judge.default_threshold, 4))
        where = f"{len(test_problems)} held-out problems of seed {config.test_seed}"
        paths = write_eval_outputs(results, run_dir / "eval", "AutoJudge on held-out toy problems",
                                   dict(context, problems=where, **{"chosen tau (from selection)": judge.default_threshold}),
                                   config.max_accuracy_drop, chosen)
        return results, chosen, paths

    results, chosen, eval_paths = timer.run("evaluate", test)
    exact = next(r for r in results if r.mode == "exact")

    def other_windows() -> list[dict[str, Any]]:
        return [
            window_comparison(pair, task, test_problems, judge, dict(asdict(eval_config), window=window))
            for window in config.compare_windows if window != config.window
        ]

    by_window = timer.run("other windows", other_windows) if config.compare_windows else []
    summary = {
        "run_dir": str(run_dir),
        "config": asdict(config),
        "stage_seconds": timer.times,
        "total_seconds": sum(timer.times.values()),
        "judge": {key: judge.metrics[key] for key in ("val_roc_auc", "val_pr_auc", "val_important_rate", "num_train", "num_val")},
        "default_threshold": judge.default_threshold,
        "test": compare_with_exact(exact, chosen),
        "other_windows": by_window,
        "artifacts": {
            "mined": str(mined_dir),
            "judge": str(run_dir / "judge"),
            "train_report": str(run_dir / "judge" / "train_report.md"),
            "selection_report": str(run_dir / "select" / "report.md"),
            "report": str(eval_paths["report"]),
            "metrics": str(eval_paths["metrics"]),
            "plot": str(eval_paths["plot"]),
            "run_report": str(run_dir / "report.md"),
        },
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (run_dir / "report.md").write_text("# autojudge run\n\n```\n" + format_summary(summary).strip() + "\n```\n")
    return summary


def window_comparison(pair: Any, task: Any, problems: list[Problem], judge: Any, eval_fields: dict[str, Any]) -> dict[str, Any]:
    """Exact and autojudge at the judge's default threshold on `problems` at another window."""
    from autojudge.pipeline.evaluate import EvalConfig, evaluate_setting

    config = EvalConfig(**eval_fields)
    exact = evaluate_setting(pair, task, problems, "exact", None, config)
    tau = round(judge.default_threshold, 4)  # as in the test sweep
    judged = evaluate_setting(pair, task, problems, "autojudge", tau, config, judge, exact.answers)
    return {"window": config.window, **compare_with_exact(exact, judged)}


def compare_with_exact(exact: Any, chosen: Any) -> dict[str, float]:
    """Headline fields of an autojudge setting against exact decoding on the same problems."""
    return {
        "exact_accuracy": exact.accuracy,
        "exact_tokens_per_target_call": exact.tokens_per_target_call,
        "chosen_accuracy": chosen.accuracy,
        "chosen_tokens_per_target_call": chosen.tokens_per_target_call,
        "speedup_tokens_per_target_call": chosen.tokens_per_target_call / exact.tokens_per_target_call,
        "accuracy_drop_points": 100 * (exact.accuracy - chosen.accuracy),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The closing lines of `autojudge run`: headline numbers and where every artifact went."""
    test = summary["test"]
    lines = [
        "",
        "== result ==",
        f"validation ROC AUC of the judge: {summary['judge']['val_roc_auc']:.4f}",
        f"held-out test, window {summary['config']['window']}: exact {test['exact_tokens_per_target_call']:.2f} "
        f"tokens/target call at {100 * test['exact_accuracy']:.1f}% accuracy; autojudge tau={summary['default_threshold']:g} "
        f"{test['chosen_tokens_per_target_call']:.2f} tokens/target call ({test['speedup_tokens_per_target_call']:.2f}x) "
        f"at {100 * test['chosen_accuracy']:.1f}% ({-test['accuracy_drop_points']:+.1f} points)",
    ]
    lines += [
        f"  same problems, window {w['window']}: exact {w['exact_tokens_per_target_call']:.2f}, autojudge "
        f"{w['chosen_tokens_per_target_call']:.2f} tokens/target call ({w['speedup_tokens_per_target_call']:.2f}x) "
        f"at {100 * w['chosen_accuracy']:.1f}% vs {100 * w['exact_accuracy']:.1f}% ({-w['accuracy_drop_points']:+.1f} points)"
        for w in summary.get("other_windows", [])
    ]
    lines += [
        "stage times: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in summary["stage_seconds"].items())
        + f" (total {summary['total_seconds'] / 60:.1f} min)",
        "",
        "artifacts:",
    ]
    lines += [f"  {name:17s} {path}" for name, path in summary["artifacts"].items()]
    lines.append(f"  {'summary':17s} {Path(summary['run_dir']) / 'summary.json'}")
    return "\n".join(lines)
