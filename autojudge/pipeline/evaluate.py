"""Evaluating decoding modes on held-out problems: accuracy vs tokens per target call.

For each setting (`exact`; `topk` for several K; `autojudge` over a sweep of
thresholds) the held-out problems are decoded with the speculative engine at the
same window, and we record
- accuracy: `task.is_correct(problem, text)` against the ground-truth answers;
- agreement: share of problems whose answer equals the `exact` (= target greedy) answer;
- tokens per target call (emitted tokens / target forward passes), draft calls,
  mean accepted length, wall time and tokens/s.

`recommend_threshold` picks the largest-throughput autojudge threshold whose accuracy
is at most `max_accuracy_drop` below `exact` on the problems it is given; `autojudge
run` applies it on selection problems distinct from the test problems, so the test
curve is an honest estimate. Outputs: `metrics.json`, `report.md`, `pareto.png`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from autojudge.tasks.base import Problem, Task

log = logging.getLogger(__name__)

DEFAULT_RECALL_LEVELS: tuple[float, ...] = (1.0, 0.99, 0.98, 0.95, 0.9, 0.8)
DEFAULT_ACCEPTANCE_RATES: tuple[float, ...] = (0.5, 1.0)
DEFAULT_LOW_TAUS: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05)  # fills the safe end, where the table is coarse


@dataclass
class EvalConfig:
    """Settings of `evaluate_modes`."""

    window: int = 8
    """Draft tokens proposed per cycle (k), the same for every mode."""
    max_new_tokens: int = 160
    """Generation budget per problem."""
    batch_size: int = 16
    """Problems decoded together by the engine."""
    top_ks: tuple[int, ...] = (2, 3, 5)
    """K values of the `topk` baseline (accept a draft token in the target's top-K)."""
    thresholds: tuple[float, ...] | None = None
    """Autojudge thresholds; None = read off the judge's validation table (`sweep_thresholds`)."""
    recall_levels: tuple[float, ...] = DEFAULT_RECALL_LEVELS
    """Validation recall levels of important mismatches whose (largest) thresholds join the sweep."""
    acceptance_rates: tuple[float, ...] = DEFAULT_ACCEPTANCE_RATES
    """Validation acceptance rates of mismatches whose (smallest) thresholds join the sweep."""
    max_accuracy_drop: float = 0.01
    """Accuracy (fraction) a recommended threshold may lose against `exact`."""
    device: str = "cpu"
    """Torch device of the models."""


@dataclass
class SettingResult:
    """One decoding setting evaluated on a set of problems."""

    mode: str
    """"exact", "topk" or "autojudge"."""
    param: float | None
    """K for topk, tau for autojudge, None for exact."""
    label: str
    """Short display name, e.g. "autojudge tau=0.35"."""
    accuracy: float
    """Share of problems answered correctly (ground truth)."""
    num_correct: int
    """Problems answered correctly."""
    num_problems: int
    """Problems decoded."""
    agreement_with_target: float | None
    """Share of problems with the same answer as exact decoding (None for exact itself)."""
    tokens_per_target_call: float
    """Emitted tokens / target forward passes (over all problems)."""
    new_tokens: int
    """Tokens emitted in total."""
    target_calls: int
    """Target forward passes in total."""
    draft_calls: int
    """Draft forward passes in total."""
    mean_accepted_length: float
    """Mean draft tokens accepted per cycle (the target's own token not counted)."""
    wall_s: float
    """Wall time of decoding all problems (batched) in seconds."""
    tokens_per_s: float
    """new_tokens / wall_s."""
    answers: list[str | None] = field(default_factory=list, repr=False)
    """Extracted answer per problem (for agreement and debugging)."""

    def summary(self) -> dict[str, Any]:
        """The JSON-friendly fields without per-problem answers."""
        return {key: value for key, value in asdict(self).items() if key != "answers"}


def sweep_thresholds(
    thresholds_table: list[dict[str, float]], acceptance_rates: Sequence[float] = DEFAULT_ACCEPTANCE_RATES,
    recall_levels: Sequence[float] = DEFAULT_RECALL_LEVELS, low_taus: Sequence[float] = DEFAULT_LOW_TAUS,
) -> list[float]:
    """Thresholds of the sweep, read off the judge's validation table, sorted and unique:
    the largest tau keeping each recall level of important mismatches (the safe end), and
    the smallest tau reaching each acceptance rate of mismatches (out to where it breaks),
    plus fixed small taus `low_taus` (validation rarely resolves the safe end finely)."""
    chosen = {round(float(tau), 4) for tau in low_taus}
    for level in recall_levels:
        keeping = [row["tau"] for row in thresholds_table if row["recall_important"] >= level]
        if keeping:
            chosen.add(round(max(keeping), 4))
    for rate in acceptance_rates:
        if rate >= 1.0:
            chosen.add(1.0)  # p < 1 always: accept every mismatch (where the judge is no longer a judge)
            continue
        reaching = [row["tau"] for row in thresholds_table if row["acceptance_rate"] >= rate]
        if reaching:
            chosen.add(round(min(reaching), 4))
    return sorted(chosen)


def decode_problems(
    engine: Any, settings: Any, tokenizer: Any, task: Task, problems: Sequence[Problem],
    progress: Callable[[int], None] | None = None,
) -> tuple[list[str], list[Any], float]:
    """(texts, per-request metrics, wall seconds) of decoding `problems` on the engine core
    (continuous batching: a finished row's slot is taken by the next problem at once)."""
    prompt_ids = [task.prompt_ids(problem, tokenizer) for problem in problems]
    start = time.perf_counter()
    results = engine.generate(prompt_ids, settings, on_finished=None if progress is None else (lambda _: progress(1)))
    texts = [tokenizer.decode(result.token_ids, skip_special_tokens=True) for result in results]
    return texts, [result.metrics for result in results], time.perf_counter() - start


def _mean_accepted_length(metrics: Sequence[Any]) -> float:
    """Mean draft tokens accepted per cycle over requests (without the target's own token)."""
    from autojudge.decode.metrics import aggregate

    return float(aggregate(list(metrics)).mean_accepted)


def evaluate_setting(
    pair: Any, task: Task, problems: Sequence[Problem], mode: str, param: float | None, config: EvalConfig,
    judge: Any = None, reference_answers: Sequence[Any] | None = None, progress: Callable[[int], None] | None = None,
) -> SettingResult:
    """Decode `problems` with one mode/parameter and score the outputs."""
    from autojudge.decode.acceptance import build_rule
    from autojudge.decode.core import EngineCore, RequestSettings

    if mode == "topk":
        rule = build_rule("topk", top_k=int(param))  # type: ignore[arg-type]
        label = f"topk K={int(param)}"  # type: ignore[arg-type]
    elif mode == "autojudge":
        rule = build_rule("autojudge", judge=judge, threshold=float(param))  # type: ignore[arg-type]
        label = f"autojudge tau={param:g}"
    else:
        rule = build_rule("exact")
        label = "exact"
    tokenizer = pair.tokenizer
    engine = EngineCore.for_pair(pair, judge=judge, default_window=config.window, max_batch=config.batch_size)
    settings = RequestSettings(max_new_tokens=config.max_new_tokens, rule=rule)
    texts, metrics, wall_s = decode_problems(engine, settings, tokenizer, task, problems, progress)
    answers = [task.answer(problem, text) for problem, text in zip(problems, texts)]
    correct = [task.is_correct(problem, text) for problem, text in zip(problems, texts)]
    agreement = None
    if reference_answers is not None:
        agreement = sum(a == b for a, b in zip(answers, reference_answers)) / max(len(problems), 1)
    new_tokens = sum(m.new_tokens for m in metrics)
    target_calls = sum(m.target_calls for m in metrics)
    return SettingResult(
        mode=mode, param=param, label=label,
        accuracy=sum(correct) / max(len(problems), 1), num_correct=sum(correct), num_problems=len(problems),
        agreement_with_target=agreement,
        tokens_per_target_call=new_tokens / max(target_calls, 1),
        new_tokens=new_tokens, target_calls=target_calls, draft_calls=sum(m.draft_calls for m in metrics),
        mean_accepted_length=_mean_accepted_length(metrics), wall_s=wall_s, tokens_per_s=new_tokens / max(wall_s, 1e-9),
        answers=[None if a is None else str(a) for a in answers],
    )


def evaluate_modes(
    pair: Any, task: Task, problems: Sequence[Problem], judge: Any, config: EvalConfig, show_progress: bool = True,
    stop_after_drop: bool = False,
) -> list[SettingResult]:
    """exact, topk for each K, autojudge for each threshold (ascending), on the same problems and window.

    stop_after_drop: skip the remaining (larger) thresholds once one loses more than
    `config.max_accuracy_drop` against exact — all that threshold selection needs.
    """
    from tqdm.auto import tqdm

    thresholds: list[float] = []
    if judge is not None:
        thresholds = sorted(
            config.thresholds or sweep_thresholds(judge.thresholds, config.acceptance_rates, config.recall_levels)
        )
    settings: list[tuple[str, float | None]] = [("exact", None)]
    settings += [("topk", float(k)) for k in config.top_ks]
    settings += [("autojudge", tau) for tau in thresholds]
    results: list[SettingResult] = []
    bar = tqdm(total=len(settings) * len(problems), desc="eval", unit="problem", disable=not show_progress)
    reference, exact_accuracy = None, 0.0
    for mode, param in settings:
        bar.set_postfix_str(mode if param is None else f"{mode} {param:g}")
        result = evaluate_setting(pair, task, problems, mode, param, config, judge, reference, bar.update)
        if mode == "exact":
            reference, exact_accuracy = result.answers, result.accuracy
        results.append(result)
        log.info("%s: accuracy %.3f, %.2f tokens/target call", result.label, result.accuracy, result.tokens_per_target_call)
        if stop_after_drop and mode == "autojudge" and result.accuracy < exact_accuracy - config.max_accuracy_drop - 1e-12:
            break
    bar.close()
    return results


def recommend_threshold(results: Sequence[SettingResult], max_accuracy_drop: float) -> SettingResult | None:
    """The autojudge setting with the most tokens per target call among the thresholds that,
    from the smallest up, all stay within `max_accuracy_drop` of exact accuracy.

    Walking up from small tau and stopping at the first failure keeps a lucky high-tau
    point past a breakdown (small sets are noisy) from being recommended. None when even
    the smallest threshold loses too much.
    """
    exact = next(r for r in results if r.mode == "exact")
    floor = exact.accuracy - max_accuracy_drop - 1e-12
    qualifying: list[SettingResult] = []
    for result in sorted((r for r in results if r.mode == "autojudge"), key=lambda r: r.param or 0.0):
        if result.accuracy < floor:
            break
        qualifying.append(result)
    return max(qualifying, key=lambda r: (r.tokens_per_target_call, -(r.param or 0.0))) if qualifying else None


# --------------------------------------------------------------------------- outputs


def plot_pareto(results: Sequence[SettingResult], path: str | Path, title: str, max_accuracy_drop: float,
                chosen: SettingResult | None = None) -> Path:
    """Accuracy vs tokens per target call, one curve per mode; a dashed line at exact - max drop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, 5.0), dpi=120)
    exact = next(r for r in results if r.mode == "exact")
    styles = {"exact": ("black", "s"), "topk": ("tab:orange", "^"), "autojudge": ("tab:blue", "o")}
    for mode in ("topk", "autojudge"):
        points = sorted((r for r in results if r.mode == mode), key=lambda r: r.tokens_per_target_call)
        if not points:
            continue
        color, marker = styles[mode]
        ax.plot([r.tokens_per_target_call for r in points], [100 * r.accuracy for r in points],
                marker=marker, color=color, label=mode)
        for index, r in enumerate(points):
            text = f"K={int(r.param)}" if mode == "topk" else f"τ={r.param:.2g}"  # type: ignore[arg-type]
            above = (index % 2 == 0) != (mode == "topk")  # alternate so neighbouring labels do not collide
            ax.annotate(text, (r.tokens_per_target_call, 100 * r.accuracy), textcoords="offset points",
                        xytext=(3, 6 if above else -12), fontsize=7, color=color)
    ax.scatter([exact.tokens_per_target_call], [100 * exact.accuracy], color="black", marker="s", s=50,
               zorder=5, label="exact (speculative, lossless)")
    ax.axhline(100 * (exact.accuracy - max_accuracy_drop), color="grey", linestyle="--", linewidth=1,
               label=f"exact − {100 * max_accuracy_drop:g} point")
    if chosen is not None:
        ax.scatter([chosen.tokens_per_target_call], [100 * chosen.accuracy], s=160, facecolors="none",
                   edgecolors="tab:red", linewidths=2, zorder=6, label=f"chosen τ={chosen.param:.3g}")
    ax.set_xlabel("tokens per target call (higher = fewer target passes)")
    ax.set_ylabel("accuracy vs ground truth (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def format_eval_report(
    results: Sequence[SettingResult], title: str, context: dict[str, Any], chosen: SettingResult | None,
    max_accuracy_drop: float,
) -> str:
    """Markdown: the setting table, the chosen threshold, and where the judge breaks down."""
    exact = next(r for r in results if r.mode == "exact")
    lines = [f"# {title}", ""]
    lines += [f"- {key}: {value}" for key, value in context.items()]
    lines += [
        "",
        "| setting | accuracy | Δ vs exact (points) | same answer as target | tokens / target call | × exact | "
        "mean accepted | draft calls | target calls | wall s | tokens/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        agreement = "—" if r.agreement_with_target is None else f"{100 * r.agreement_with_target:.1f}%"
        lines.append(
            f"| {r.label}{' **(chosen)**' if r is chosen else ''} | {100 * r.accuracy:.1f}% "
            f"({r.num_correct}/{r.num_problems}) | {100 * (r.accuracy - exact.accuracy):+.1f} | {agreement} | "
            f"{r.tokens_per_target_call:.2f} | {r.tokens_per_target_call / exact.tokens_per_target_call:.2f} | "
            f"{r.mean_accepted_length:.2f} | {r.draft_calls} | {r.target_calls} | {r.wall_s:.1f} | {r.tokens_per_s:.0f} |"
        )
    lines.append("")
    judged = [r for r in results if r.mode == "autojudge"]
    if chosen is not None:
        lines.append(
            f"Chosen threshold tau = {chosen.param:g}: {chosen.tokens_per_target_call / exact.tokens_per_target_call:.2f}x "
            f"the tokens per target call of exact speculative decoding, accuracy {100 * chosen.accuracy:.1f}% vs "
            f"{100 * exact.accuracy:.1f}% ({100 * (chosen.accuracy - exact.accuracy):+.1f} points)."
        )
    elif judged:
        lines.append(f"No autojudge threshold stays within {100 * max_accuracy_drop:g} point of exact here.")
    broken = [r for r in judged if r.accuracy < exact.accuracy - max_accuracy_drop - 1e-12]
    if broken:
        first = min(broken, key=lambda r: r.param or 0.0)
        lines.append(
            f"Breakdown: from tau = {first.param:g} on, accuracy falls more than {100 * max_accuracy_drop:g} point "
            f"below exact ({100 * first.accuracy:.1f}%); at the largest tau ({max(judged, key=lambda r: r.param or 0.0).label}) "
            f"the judge accepts almost every mismatch and accuracy is "
            f"{100 * max(judged, key=lambda r: r.param or 0.0).accuracy:.1f}%."
        )
    return "\n".join(lines) + "\n"


def write_eval_outputs(
    results: Sequence[SettingResult], out_dir: str | Path, title: str, context: dict[str, Any],
    max_accuracy_drop: float, chosen: SettingResult | None = None,
) -> dict[str, Path]:
    """Write metrics.json, report.md and pareto.png into `out_dir`; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exact = next(r for r in results if r.mode == "exact")
    payload = {
        "title": title,
        "context": context,
        "max_accuracy_drop": max_accuracy_drop,
        "chosen": None if chosen is None else chosen.summary(),
        "settings": [
            dict(r.summary(), speedup_vs_exact=r.tokens_per_target_call / exact.tokens_per_target_call)
            for r in results
        ],
    }
    paths = {"metrics": out_dir / "metrics.json", "report": out_dir / "report.md", "plot": out_dir / "pareto.png"}
    paths["metrics"].write_text(json.dumps(payload, indent=2))
    paths["report"].write_text(format_eval_report(results, title, context, chosen, max_accuracy_drop))
    plot_pareto(results, paths["plot"], title, max_accuracy_drop, chosen)
    return paths
