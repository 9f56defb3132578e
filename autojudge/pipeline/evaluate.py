"""Evaluating decoding modes on held-out problems: accuracy vs tokens per target call.

For each setting (`exact`; `topk` for several K; the training-free `typical` and
`prob` rules over sweeps of epsilon / p; `autojudge` over a sweep of thresholds, and
optionally other judges `judge:<name>` on a short sweep) the held-out problems are decoded with the speculative engine at the
same window, and we record
- accuracy: `task.is_correct(problem, text)` against the ground-truth answers;
- agreement: share of problems whose answer equals the `exact` (= target greedy) answer;
- tokens per target call (emitted tokens / target forward passes), draft calls,
  mean accepted length, wall time and tokens/s.

`recommend_threshold` picks the largest-throughput autojudge threshold whose quality
(`accuracy`, or `agreement` with the target's own greedy answer - the right measure
for a weak target that is rarely right) is at most `max_accuracy_drop` below `exact`
on the problems it is given; `autojudge
run` applies it on selection problems distinct from the test problems, so the test
curve is an honest estimate. Outputs: `metrics.json`, `report.md`, `pareto.png`. With a `cache_dir`, each finished
setting is stored there (answers included) with what it was decoded with (`made_with`: the pair,
the task, the problems, the window, the budget and, for a judged setting, the judge), and a rerun
reuses it only when all of that is unchanged, so an interrupted evaluation resumes and a changed
one decodes again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from autojudge.decode.engine.acceptance import FLY_WINDOW
from autojudge.setup import DEFAULT_MAX_NEW_TOKENS, DEFAULT_WINDOW
from autojudge.tasks.base import Problem, Task

log = logging.getLogger(__name__)

DEFAULT_RECALL_LEVELS: tuple[float, ...] = (1.0, 0.99, 0.98, 0.95, 0.9, 0.8)
DEFAULT_ACCEPTANCE_RATES: tuple[float, ...] = (0.5, 1.0)
DEFAULT_LOW_TAUS: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05)  # fills the safe end, where the table is coarse


@dataclass
class EvalConfig:
    """Settings of `evaluate_modes`."""

    window: int = DEFAULT_WINDOW
    """Draft tokens proposed per cycle (k), the same for every mode."""
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
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
    """Quality (fraction; accuracy or agreement, see `quality`) a recommended threshold may lose against `exact`."""
    device: str = "cpu"
    """Torch device of the models."""
    typical_epsilons: tuple[float, ...] = ()
    """Epsilons of the training-free `typical` acceptance baseline (delta = sqrt(epsilon)); () = not run."""
    min_probs: tuple[float, ...] = ()
    """Thresholds p of the training-free `prob` baseline (accept when p_T(draft token) >= p); () = not run."""
    fly_entropies: tuple[float, ...] = ()
    """Entropy thresholds of the training-free FLy baseline (nats, top-3 entropy); () = not run."""
    fly_window: int = FLY_WINDOW
    """FLy's window (a mismatch plus the draft tokens after it that must match); needs `window` > it."""
    quality: str = "accuracy"
    """What `max_accuracy_drop` is measured on: "accuracy" (ground truth) or "agreement" (with exact's answer)."""
    workers: int = 0
    """Settings decoded at once, each on a Ray actor that holds its own pair (`actors/evaluator.py`);
    0 decodes them one after another in this process. Results do not depend on it."""
    threads: int = 1
    """Torch CPU threads (and Ray CPUs) of each worker."""


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
    """Share of problems with the same answer as exact decoding (1.0 for exact itself, None when unknown)."""
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
    from autojudge.decode.engine.metrics import aggregate

    return float(aggregate(list(metrics)).mean_accepted)


def evaluate_setting(
    pair: Any, task: Task, problems: Sequence[Problem], mode: str, param: float | None, config: EvalConfig,
    judge: Any = None, reference_answers: Sequence[Any] | None = None, progress: Callable[[int], None] | None = None,
) -> SettingResult:
    """Decode `problems` with one mode/parameter and score the outputs."""
    from autojudge.decode.engine.acceptance import build_rule
    from autojudge.decode.engine.core import EngineCore, RequestSettings

    if mode == "topk":
        rule = build_rule("topk", top_k=int(param))  # type: ignore[arg-type]
        label = f"topk K={int(param)}"  # type: ignore[arg-type]
    elif mode == "autojudge" or mode.startswith("judge:"):
        rule = build_rule("autojudge", judge=judge, threshold=float(param))  # type: ignore[arg-type]
        label = f"{'autojudge' if mode == 'autojudge' else mode} tau={param:g}"
    elif mode == "typical":
        rule = build_rule("typical", epsilon=float(param))  # type: ignore[arg-type]
        label = f"typical eps={param:g}"
    elif mode == "prob":
        rule = build_rule("prob", min_prob=float(param))  # type: ignore[arg-type]
        label = f"prob p={param:g}"
    elif mode == "fly":
        rule = build_rule("fly", fly_entropy=float(param), fly_window=config.fly_window)  # type: ignore[arg-type]
        label = f"fly H={param:g} w={config.fly_window}"
    else:
        rule = build_rule("exact")
        label = "exact"
    tokenizer = pair.tokenizer
    engine = EngineCore.for_pair(pair, judge=judge, default_window=config.window, max_batch=config.batch_size,
                                 shared_prefix=task.shared_prefix_ids(tokenizer))
    settings = RequestSettings(max_new_tokens=config.max_new_tokens, rule=rule)
    texts, metrics, wall_s = decode_problems(engine, settings, tokenizer, task, problems, progress)
    answers = [task.answer(problem, text) for problem, text in zip(problems, texts)]
    correct = [task.is_correct(problem, text) for problem, text in zip(problems, texts)]
    agreement = 1.0 if mode == "exact" else None
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


def quality_of(result: SettingResult, quality: str = "accuracy") -> float:
    """The setting's accuracy, or its agreement with exact's answers (exact itself: 1.0)."""
    if quality == "accuracy":
        return result.accuracy
    if quality == "agreement":
        return 1.0 if result.agreement_with_target is None else result.agreement_with_target
    raise ValueError(f"unknown quality measure {quality!r}: use accuracy or agreement")


def setting_cache_path(cache_dir: str | Path, mode: str, param: float | None, config: EvalConfig, num_problems: int) -> Path:
    """File holding one finished setting: mode, parameter, window, budget and problem count in the name."""
    name = f"{mode.replace(':', '_')}-{'none' if param is None else f'{param:g}'}-k{config.window}-L{config.max_new_tokens}-n{num_problems}"
    if mode == "fly":
        name += f"-w{config.fly_window}"
    return Path(cache_dir) / f"{name}.json"


def made_with(mode: str, param: float | None, config: EvalConfig, pair: Any, task: Task, problems_hash: str,
              judge: Any) -> dict[str, Any]:
    """Everything a setting's result depends on (stored with it; a stored result is reused only when equal)."""
    return {
        "mode": mode, "param": param, "window": config.window, "max_new_tokens": config.max_new_tokens,
        "target": pair.target_id, "draft": pair.draft_id, "task": task.name,
        "instruction": getattr(task, "instruction", None), "shots": getattr(task, "shots", 0), "problems": problems_hash,
        "fly_window": config.fly_window if mode == "fly" else None,
        "judge": None if judge is None else judge.fingerprint(),
    }


def problems_fingerprint(problems: Sequence[Problem]) -> str:
    """A short hash of the problems (ids, texts and answers, in order)."""
    import hashlib

    rows = [(p.id, p.question, p.prompt, p.answer) for p in problems]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def load_cached_setting(path: Path, settings: dict[str, Any]) -> SettingResult | None:
    """A setting stored by `store_setting` with these `made_with` settings, or None (none stored,
    or stored by a decode with other settings: it is decoded again and replaced)."""
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    if not isinstance(stored, dict) or stored.get("made_with") != json.loads(json.dumps(settings)):
        return None
    return SettingResult(**stored["result"])


def store_setting(result: SettingResult, path: Path, settings: dict[str, Any]) -> None:
    """Write a finished setting (answers included) and what it was made with, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"made_with": settings, "result": asdict(result)}))
    partial.rename(path)


def evaluate_modes(
    pair: Any, task: Task, problems: Sequence[Problem], judge: Any, config: EvalConfig, show_progress: bool = True,
    stop_after_drop: bool = False, extra_judges: dict[str, tuple[Any, Sequence[float]]] | None = None,
    cache_dir: str | Path | None = None,
) -> list[SettingResult]:
    """exact, topk for each K, typical for each epsilon, prob for each p, autojudge for each
    threshold (ascending), then each extra judge (`judge:<name>`, its own thresholds), on the
    same problems and window. `exact` comes first (the others' agreement is measured against its
    answers); the rest run one after another, or `config.workers` at a time on Ray actors.

    stop_after_drop: skip the remaining (larger) thresholds once one loses more than
    `config.max_accuracy_drop` of `config.quality` against exact — all that threshold selection needs
    (with workers, a larger threshold already in flight is decoded but left out, so the results
    are the same as without).
    cache_dir: reuse settings finished by an earlier (interrupted) call; store new ones there.
    """
    from tqdm.auto import tqdm

    settings = setting_list(judge, config, extra_judges)
    problems_hash = problems_fingerprint(problems) if cache_dir else ""
    bar = tqdm(total=len(settings) * len(problems), desc="eval", unit="problem", disable=not show_progress)
    runner: Any = (RaySettingRunner(pair, task, problems, config) if config.workers > 0
                   else LocalSettingRunner(pair, task, problems, config, bar.update))
    results: dict[int, SettingResult] = {}
    stopped: dict[str, float] = {}  # judged mode -> the threshold that lost too much
    exact_quality = 0.0
    reference: list[Any] | None = None

    def finish(index: int, result: SettingResult) -> None:
        nonlocal reference, exact_quality
        mode, param, _ = settings[index]
        results[index] = result
        log.info("%s: accuracy %.3f, agreement %s, %.2f tokens/target call", result.label, result.accuracy,
                 result.agreement_with_target, result.tokens_per_target_call)
        if mode == "exact":
            reference, exact_quality = result.answers, quality_of(result, config.quality)
        judged = mode == "autojudge" or mode.startswith("judge:")
        if stop_after_drop and judged and quality_of(result, config.quality) < exact_quality - config.max_accuracy_drop - 1e-12:
            stopped[mode] = min(stopped.get(mode, float("inf")), float(param or 0.0))

    pending = list(range(len(settings)))  # settings[0] is exact
    in_flight: dict[Any, tuple[int, Path | None, dict[str, Any]]] = {}
    try:
        while pending or in_flight:
            while pending and len(in_flight) < runner.slots and (reference is not None or not in_flight):
                index = pending.pop(0)
                mode, param, setting_judge = settings[index]
                if mode in stopped:
                    bar.update(len(problems))
                    continue
                path = setting_cache_path(cache_dir, mode, param, config, len(problems)) if cache_dir else None
                key = made_with(mode, param, config, pair, task, problems_hash, setting_judge) if path else {}
                cached = load_cached_setting(path, key) if path else None
                if cached is not None:
                    bar.update(len(problems))
                    finish(index, cached)
                    continue
                bar.set_postfix_str(mode if param is None else f"{mode} {param:g}")
                in_flight[runner.submit(mode, param, setting_judge, reference)] = (index, path, key)
                if reference is None:
                    break  # exact: the others wait for its answers
            for handle, result in runner.finished(list(in_flight)) if in_flight else ():
                index, path, key = in_flight.pop(handle)
                if path:
                    store_setting(result, path, key)
                if not runner.counts_problems:
                    bar.update(len(problems))
                finish(index, result)
    finally:
        runner.close()
        bar.close()
    kept = [result for index, result in sorted(results.items())
            if result.mode not in stopped or float(result.param or 0.0) <= stopped[result.mode]]
    order = {"exact": 0, "topk": 1, "typical": 2, "prob": 3, "fly": 4, "autojudge": 5}
    return sorted(kept, key=lambda r: order.get(r.mode, 6))  # stable: parameters keep their order


def setting_list(judge: Any, config: EvalConfig, extra_judges: dict[str, tuple[Any, Sequence[float]]] | None,
                 ) -> list[tuple[str, float | None, Any]]:
    """(mode, parameter, judge) of every setting `evaluate_modes` decodes, in the order it decodes them:
    exact, the judge first, then the training-free rules (most telling first), so an interrupted run
    has the method's curve; the report lists them in the usual order."""
    thresholds: list[float] = []
    if judge is not None:
        thresholds = sorted(
            config.thresholds or sweep_thresholds(judge.thresholds, config.acceptance_rates, config.recall_levels)
        )
    settings: list[tuple[str, float | None, Any]] = [("exact", None, None)]
    settings += [("autojudge", tau, judge) for tau in thresholds]
    settings += [("typical", float(eps), None) for eps in config.typical_epsilons]
    settings += [("prob", float(p), None) for p in config.min_probs]
    settings += [("fly", float(h), None) for h in config.fly_entropies]
    settings += [("topk", float(k), None) for k in config.top_ks]
    for name, (other, taus) in (extra_judges or {}).items():
        settings += [(f"judge:{name}", float(tau), other) for tau in sorted(taus)]
    return settings


class LocalSettingRunner:
    """Settings decoded in this process, one at a time (`submit` decodes; `finished` hands it back)."""

    slots = 1
    counts_problems = True  # the progress bar moves per finished problem

    def __init__(self, pair: Any, task: Task, problems: Sequence[Problem], config: EvalConfig,
                 progress: Callable[[int], None] | None) -> None:
        self.pair, self.task, self.problems, self.config, self.progress = pair, task, problems, config, progress
        self.done: dict[int, SettingResult] = {}
        self.submitted = 0

    def submit(self, mode: str, param: float | None, judge: Any, reference: list[Any] | None) -> int:
        self.submitted += 1
        handle = self.submitted
        self.done[handle] = evaluate_setting(self.pair, self.task, self.problems, mode, param, self.config, judge,
                                             reference, self.progress)
        return handle

    def finished(self, handles: list[Any]) -> list[tuple[Any, SettingResult]]:
        return [(handle, self.done.pop(handle)) for handle in handles]

    def close(self) -> None:
        self.done.clear()


class RaySettingRunner:
    """`config.workers` Ray actors (`actors.evaluator.EvalActor`), each decoding one setting at a time
    with its own copy of the pair (loaded from the pair's specs). Started at the first setting to
    decode (none when every setting is stored already)."""

    counts_problems = False  # the progress bar moves per finished setting

    def __init__(self, pair: Any, task: Task, problems: Sequence[Problem], config: EvalConfig) -> None:
        self.pair, self.task, self.problems, self.config = pair, task, problems, config
        self.slots = config.workers
        self.actors: list[Any] = []
        self.idle: list[Any] = []
        self.busy: dict[Any, Any] = {}
        self.shared: tuple[Any, Any] = (None, None)

    def _start(self) -> None:
        import ray

        from autojudge.actors.evaluator import EvalActor
        from autojudge.ray_utils import init_ray

        init_ray(None)
        config = self.config
        actor_class = EvalActor.options(num_cpus=config.threads,
                                        num_gpus=1.0 if config.device.startswith("cuda") else 0.0)
        self.actors = [actor_class.remote(self.pair.target_id, self.pair.draft_id, config.device, config.threads)
                       for _ in range(config.workers)]
        self.idle = list(self.actors)
        self.shared = (ray.put(self.task), ray.put(list(self.problems)))  # stored once, read by every actor

    def submit(self, mode: str, param: float | None, judge: Any, reference: list[Any] | None) -> Any:
        if not self.actors:
            self._start()
        actor = self.idle.pop()
        ref = actor.run.remote(evaluate_setting, *self.shared, mode, param, self.config, judge, reference)
        self.busy[ref] = actor
        return ref

    def finished(self, handles: list[Any]) -> list[tuple[Any, SettingResult]]:
        import ray

        ready, _ = ray.wait(handles, num_returns=1)
        out = []
        for ref in ready:
            self.idle.append(self.busy.pop(ref))
            out.append((ref, ray.get(ref)))
        return out

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)


def recommend_threshold(
    results: Sequence[SettingResult], max_accuracy_drop: float, quality: str = "accuracy", mode: str = "autojudge",
) -> SettingResult | None:
    """The `mode` setting with the most tokens per target call among the parameters that,
    from the most conservative up, all stay within `max_accuracy_drop` of exact's `quality`
    ("accuracy", or "agreement" with exact's answers).

    Walking up from small tau and stopping at the first failure keeps a lucky high-tau
    point past a breakdown (small sets are noisy) from being recommended. None when even
    the smallest threshold loses too much. For `prob`, `typical` and `fly` (a larger p / epsilon /
    entropy threshold is more conservative) the walk goes from large down.
    """
    exact = next(r for r in results if r.mode == "exact")
    floor = quality_of(exact, quality) - max_accuracy_drop - 1e-12
    qualifying: list[SettingResult] = []
    descending = mode in ("prob", "typical", "fly")
    for result in sorted((r for r in results if r.mode == mode), key=lambda r: r.param or 0.0, reverse=descending):
        if quality_of(result, quality) < floor:
            break
        qualifying.append(result)
    if not qualifying:
        return None
    return max(qualifying, key=lambda r: (r.tokens_per_target_call, (r.param or 0.0) if descending else -(r.param or 0.0)))


# --------------------------------------------------------------------------- outputs


MODE_STYLES: dict[str, tuple[str, str]] = {
    "exact": ("black", "s"), "topk": ("tab:orange", "^"), "autojudge": ("tab:blue", "o"),
    "typical": ("tab:green", "v"), "prob": ("tab:purple", "D"), "fly": ("tab:red", "p"),
}
"""Colour and marker per mode in `pareto.png`; other judges (`judge:<name>`) cycle through the rest."""

OTHER_JUDGE_STYLES: tuple[tuple[str, str], ...] = (("tab:cyan", "P"), ("tab:brown", "X"), ("tab:pink", "*"), ("tab:olive", "h"))


def _point_label(result: SettingResult) -> str:
    if result.mode == "topk":
        return f"K={int(result.param)}"  # type: ignore[arg-type]
    if result.mode == "typical":
        return f"ε={result.param:.2g}"
    if result.mode == "prob":
        return f"p={result.param:.2g}"
    if result.mode == "fly":
        return f"H={result.param:.2g}"
    return f"τ={result.param:.2g}"


def plot_pareto(results: Sequence[SettingResult], path: str | Path, title: str, max_accuracy_drop: float,
                chosen: SettingResult | None = None, quality: str = "accuracy") -> Path:
    """Quality (accuracy or agreement with the target) vs tokens per target call, one curve per
    mode; a dashed line at exact - max drop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 5.2), dpi=120)
    exact = next(r for r in results if r.mode == "exact")
    modes = [m for m in ("topk", "typical", "prob", "fly", "autojudge") if any(r.mode == m for r in results)]
    modes += sorted({r.mode for r in results if r.mode.startswith("judge:")})
    others = iter(OTHER_JUDGE_STYLES * 4)
    for number, mode in enumerate(modes):
        points = sorted((r for r in results if r.mode == mode), key=lambda r: r.tokens_per_target_call)
        color, marker = MODE_STYLES.get(mode) or next(others)
        ax.plot([r.tokens_per_target_call for r in points], [100 * quality_of(r, quality) for r in points],
                marker=marker, color=color, label=mode, linewidth=1.2, markersize=5)
        for index, r in enumerate(points):
            above = (index + number) % 2 == 0  # alternate so neighbouring labels do not collide
            ax.annotate(_point_label(r), (r.tokens_per_target_call, 100 * quality_of(r, quality)), textcoords="offset points",
                        xytext=(3, 6 if above else -12), fontsize=6, color=color)
    ax.scatter([exact.tokens_per_target_call], [100 * quality_of(exact, quality)], color="black", marker="s", s=50,
               zorder=5, label="exact (speculative, lossless)")
    ax.axhline(100 * (quality_of(exact, quality) - max_accuracy_drop), color="grey", linestyle="--", linewidth=1,
               label=f"exact − {100 * max_accuracy_drop:g} point")
    if chosen is not None:
        ax.scatter([chosen.tokens_per_target_call], [100 * quality_of(chosen, quality)], s=160, facecolors="none",
                   edgecolors="tab:red", linewidths=2, zorder=6, label=f"chosen τ={chosen.param:.3g}")
    ax.set_xlabel("tokens per target call (higher = fewer target passes)")
    ax.set_ylabel("accuracy vs ground truth (%)" if quality == "accuracy" else "same final answer as the target's greedy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def best_within_drop(results: Sequence[SettingResult], max_drop: float, quality: str) -> list[tuple[str, SettingResult | None]]:
    """Per lossy mode, its setting with the most tokens per target call whose `quality` is
    within `max_drop` of exact on these problems (None when no setting is): the comparison
    at equal quality. Any setting counts here (no walk from the safe end)."""
    exact = next(r for r in results if r.mode == "exact")
    floor = quality_of(exact, quality) - max_drop - 1e-12
    modes: list[str] = []
    for r in results:
        if r.mode != "exact" and r.mode not in modes:
            modes.append(r.mode)
    best: list[tuple[str, SettingResult | None]] = []
    for mode in modes:
        keeping = [r for r in results if r.mode == mode and quality_of(r, quality) >= floor]
        best.append((mode, max(keeping, key=lambda r: r.tokens_per_target_call) if keeping else None))
    return best


def format_eval_report(
    results: Sequence[SettingResult], title: str, context: dict[str, Any], chosen: SettingResult | None,
    max_accuracy_drop: float, quality: str = "accuracy",
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
    name = "accuracy" if quality == "accuracy" else "agreement with the target"
    if chosen is not None:
        lines.append(
            f"Chosen threshold tau = {chosen.param:g}: {chosen.tokens_per_target_call / exact.tokens_per_target_call:.2f}x "
            f"the tokens per target call of exact speculative decoding, {name} {100 * quality_of(chosen, quality):.1f}% vs "
            f"{100 * quality_of(exact, quality):.1f}% ({100 * (quality_of(chosen, quality) - quality_of(exact, quality)):+.1f} points), "
            f"accuracy {100 * chosen.accuracy:.1f}% vs {100 * exact.accuracy:.1f}%."
        )
    elif judged:
        lines.append(f"No autojudge threshold stays within {100 * max_accuracy_drop:g} point of exact's {name} here.")
    broken = [r for r in judged if quality_of(r, quality) < quality_of(exact, quality) - max_accuracy_drop - 1e-12]
    if broken:
        first = min(broken, key=lambda r: r.param or 0.0)
        last = max(judged, key=lambda r: r.param or 0.0)
        lines.append(
            f"Breakdown: from tau = {first.param:g} on, {name} falls more than {100 * max_accuracy_drop:g} point "
            f"below exact ({100 * quality_of(first, quality):.1f}%); at the largest tau ({last.label}) "
            f"{name} is {100 * quality_of(last, quality):.1f}%."
        )
    lossy = [r for r in results if r.mode != "exact"]
    if lossy:
        lines += ["", f"Best tokens per target call within {100 * max_accuracy_drop:g} point of exact's {name} "
                  "(on these problems, any setting of the mode):", ""]
        for mode, best in best_within_drop(results, max_accuracy_drop, quality):
            if best is None:
                lines.append(f"- {mode}: no setting stays within the drop")
            else:
                lines.append(
                    f"- {mode}: {best.label}, {best.tokens_per_target_call:.2f} tokens/target call "
                    f"({best.tokens_per_target_call / exact.tokens_per_target_call:.2f}x exact), {name} "
                    f"{100 * quality_of(best, quality):.1f}%"
                )
    return "\n".join(lines) + "\n"


def write_eval_outputs(
    results: Sequence[SettingResult], out_dir: str | Path, title: str, context: dict[str, Any],
    max_accuracy_drop: float, chosen: SettingResult | None = None, quality: str = "accuracy",
) -> dict[str, Path]:
    """Write metrics.json, report.md and pareto.png into `out_dir`; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exact = next(r for r in results if r.mode == "exact")
    payload = {
        "title": title,
        "context": context,
        "max_accuracy_drop": max_accuracy_drop,
        "quality": quality,
        "chosen": None if chosen is None else chosen.summary(),
        "settings": [
            dict(r.summary(), speedup_vs_exact=r.tokens_per_target_call / exact.tokens_per_target_call)
            for r in results
        ],
    }
    paths = {"metrics": out_dir / "metrics.json", "report": out_dir / "report.md", "plot": out_dir / "pareto.png"}
    paths["metrics"].write_text(json.dumps(payload, indent=2))
    paths["report"].write_text(format_eval_report(results, title, context, chosen, max_accuracy_drop, quality))
    plot_pareto(results, paths["plot"], title, max_accuracy_drop, chosen, quality)
    return paths
