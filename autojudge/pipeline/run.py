"""The main job: mine -> train -> choose threshold -> evaluate, on the toy world or on GSM8K.

Problem sets never overlap. Toy world (`task="toy"`):
- mining: the first `mine_problems` problems of seed 1;
- threshold selection: the next `select_problems` problems of seed 1 (never mined);
- test: `test_problems` problems of seed 2 (the held-out evaluation seed).
GSM8K (`task="gsm8k"`, e.g. the `smollm2-gsm8k` preset): the same split over the
*train* file (first `mine_problems` mined, the next `select_problems` for selection)
and the first `test_problems` of the *test* file, each question in the chat template
with `instruction` appended.

`quality` says what the threshold may lose at most `max_accuracy_drop` of: "accuracy"
(ground truth) or "agreement" (same final answer as the target's own greedy decoding;
exact agrees 100% by construction). A weak target (SmolLM2-135M rarely solves GSM8K)
cannot lose much accuracy, so agreement is the measure there.

Every stage resumes, and every stored result carries the settings it was made with: mining
skips finished prompts (and refuses a folder mined with another pair, task, instruction,
budget or train file); training loads the judge in RUN/judge when it was trained with the
same classifier, features, seed and labels (the labels of this run's mining problems), else
trains it again; each evaluated setting is stored under RUN/{select,eval}/settings/ with
what it was decoded with and is decoded again when any of that changed. The training-free baselines `typical` and `prob` and the extra
judges (`extra_judges`, e.g. lightgbm and the DT feature setup, each on a short tau
sweep) run on the same test problems, so the curve answers whether the learned judge
beats rules that need no mining at equal quality.

The judge's default threshold is the one the selection sweep recommends (most tokens
per target call within `max_accuracy_drop` of exact; 0, which accepts no mismatch, when none keeps
it); the test sweep then reports the
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
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from autojudge.setup import DEFAULT_WINDOW, DecodingConfig
from autojudge.tasks.base import Problem

log = logging.getLogger(__name__)


TOY_RUN: dict[str, object] = {"window": 12, "max_new_tokens": 112}
"""The decoding settings `autojudge run` uses on the toy world unless told others (its `toy` preset,
which `make run`'s headline was measured with): toy target answers take at most ~92 tokens, so a
budget of 112 ends every one and keeps mining short; window 12 because the toy judge accepts most
mismatches, and a long window turns that acceptance into fewer target calls (the report compares
8 and 16)."""


@dataclass
class RunConfig:
    """Settings of the main job (with `TOY_RUN`, the defaults take ~3.5 minutes on an idle 2-core CPU
    machine). Decoding defaults are the project's (`autojudge.setup`); `autojudge run` applies a preset
    on top (`toy` unless told another)."""

    out: str | None = None
    """Run folder; default runs/<timestamp>."""
    decoding: DecodingConfig = field(default_factory=lambda: DecodingConfig(window=DEFAULT_WINDOW))
    """The pair (`target`, `draft`), the generation budget per problem (`max_new_tokens`, mining and
    decoding), the window (draft tokens per cycle in selection and evaluation, the same for every
    mode) and FLy's window (`fly_window`); `autojudge run` takes a preset's (`TOY_RUN`: window 12,
    budget 112). Its rule fields are not used: the run sweeps every mode."""
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
    finished_only: bool = False
    """Mine only problems whose target answer ends (EOS) within the budget (`MineConfig.finished_only`)."""
    mine_batch_size: int = 32
    """Searches in flight per mining worker."""
    mine_workers: int = 1
    """Mining workers (Ray actors, `threads` CPUs each); 0 mines in this process without Ray."""
    eval_batch_size: int = 50
    """Problems decoded together in evaluation."""
    eval_workers: int = 0
    """Settings evaluated at once, each on a Ray actor with its own pair (`threads` CPUs each); 0 evaluates
    them one after another in this process. The curve is the same; each setting's tokens/s is then one
    worker's while the others run beside it."""
    device: str = "cpu"
    """Torch device."""
    threads: int = 1
    """Torch CPU threads (and CPUs of the mining actor). 1 by default: the toy models gain
    little from a second thread, and with another process busy on one of two cores, two
    threads made mining 24x slower (378 s vs 16 s for 64 problems)."""
    seed: int = 0
    """Seed of the judge's prompt split and classifier."""
    task: str = "toy"
    """"toy" (generated problems) or "gsm8k" (`train_input` / `test_input` files)."""
    train_input: str | None = None
    """GSM8K-format JSONL whose problems from `train_offset` on are mined (`mine_problems`), the next
    `select_problems` used for selection (task gsm8k)."""
    train_offset: int = 0
    """Train-file problems skipped first (e.g. those the draft was fitted on)."""
    test_input: str | None = None
    """GSM8K-format JSONL of the held-out test problems (task gsm8k)."""
    instruction: str | None = None
    """Text appended to every question in the user turn (task gsm8k)."""
    shots: int = 0
    """Solved train problems shown first as earlier chat turns (task gsm8k; `tasks.gsm8k.GSM8KTask.shots`).
    They come from the train file's head, before `train_offset`."""
    quality: str = "accuracy"
    """What the chosen threshold may lose `max_accuracy_drop` of: "accuracy" or "agreement" (with the target's answer)."""
    typical_epsilons: tuple[float, ...] = ()
    """Epsilons of the training-free typical-acceptance baseline on the test curve (() = not run)."""
    min_probs: tuple[float, ...] = ()
    """Thresholds p of the training-free `prob` baseline on the test curve (() = not run)."""
    fly_entropies: tuple[float, ...] = ()
    """Entropy thresholds (nats) of the training-free FLy baseline on the test curve (() = not run)."""
    extra_judges: tuple[str, ...] = ()
    """Other judges trained on the same labels and put on the test curve, as "model:features"
    (e.g. "lightgbm:DD-DT", "logreg:DT"), each on a short tau sweep."""
    extra_judge_taus: int = 4
    """Thresholds per extra judge (read off its validation table)."""
    recall_levels: tuple[float, ...] | None = None
    """Validation recall levels of important mismatches whose taus join the sweep (None: evaluate.py's default)."""
    low_taus: tuple[float, ...] | None = None
    """Fixed small taus added to the sweep (None: evaluate.py's default)."""

    def __post_init__(self) -> None:
        if self.decoding.window is None:  # the run sweeps every mode at one window
            self.decoding = replace(self.decoding, window=DEFAULT_WINDOW)

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


def file_problems(path: str | None, start: int, count: int, what: str) -> list[Problem]:
    """Problems start..start+count-1 of a GSM8K-format file; every one must have a ground-truth answer."""
    from autojudge.errors import InputError
    from autojudge.tasks.gsm8k import load_problems

    if not path:
        raise InputError(f"task gsm8k needs {what} (a GSM8K-format JSONL file)")
    if not Path(path).exists():
        raise InputError(f"{path}: {what} not found")
    problems = load_problems(path, limit=start + count)[start:]
    if len(problems) < count:
        raise InputError(f"{path}: {what} has {start + len(problems)} problems, the run needs {start + count}")
    unanswered = [p.id for p in problems if not p.answer]
    if unanswered:
        raise InputError(
            f"{path}: {len(unanswered)} of the {what} problems have no 'answer' (first: {unanswered[0]}); "
            "the run needs ground-truth answers ending in '#### N'"
        )
    return problems


def stage_problems(config: RunConfig, stage: str) -> list[Problem]:
    """The problems of a stage ("mine", "select" or "test"); the three sets never overlap."""
    if config.task == "toy":
        if stage == "mine":
            return toy_problems(config.mine_seed, 0, config.mine_problems)
        if stage == "select":
            return toy_problems(config.mine_seed, config.mine_problems, config.select_problems)
        return toy_problems(config.test_seed, 0, config.test_problems)
    if stage == "mine":
        return file_problems(config.train_input, config.train_offset, config.mine_problems, "the train file")
    if stage == "select":
        start = config.train_offset + config.mine_problems
        return file_problems(config.train_input, start, config.select_problems, "the train file")
    return file_problems(config.test_input, 0, config.test_problems, "the test file")


def stage_description(config: RunConfig, stage: str) -> str:
    """Where a stage's problems come from, for the reports."""
    if config.task == "toy":
        if stage == "select":
            return f"{config.select_problems} problems of seed {config.mine_seed} after the {config.mine_problems} mined"
        return f"{config.test_problems} held-out problems of seed {config.test_seed}"
    if stage == "select":
        start = config.train_offset + config.mine_problems
        return f"{config.train_input} problems {start}..{start + config.select_problems - 1} (after the mined {config.train_offset}..{start - 1})"
    return f"the first {config.test_problems} problems of {config.test_input}"


def check_run_config(config: RunConfig, tokenizer: Any = None) -> None:
    """Clear errors for settings the run cannot use (before any model is loaded). `tokenizer`: the
    target's, when the pair's tokenizers were read and compared already (`setup.resolve`)."""
    from autojudge.errors import InputError

    if config.task not in ("toy", "gsm8k"):
        raise InputError(f"autojudge run supports --task toy or gsm8k, got {config.task!r}")
    if config.quality not in ("accuracy", "agreement"):
        raise InputError(f"--quality must be accuracy or agreement, got {config.quality!r}")
    from autojudge.tasks.gsm8k import MAX_SHOTS

    if not 0 <= config.shots <= MAX_SHOTS:
        raise InputError(f"--shots must be in 0..{MAX_SHOTS}, got {config.shots}")
    if config.train_offset < 0:
        raise InputError(f"--train-offset must be >= 0, got {config.train_offset}")
    if config.task == "gsm8k" and config.shots > config.train_offset:
        raise InputError(f"--shots {config.shots} takes the train file's first problems as examples: --train-offset "
                         f"({config.train_offset}) must skip at least that many, so no example is mined or selected on")
    decoding = config.decoding
    if min(config.mine_problems, config.select_problems, config.test_problems, decoding.max_new_tokens, decoding.window) < 1:
        raise InputError("--mine-problems, --select-problems, --test-problems, --max-new-tokens and --window must be >= 1")
    if config.task == "toy":  # what the world can generate, refused before any problem is built
        from autojudge.toy.world import MAX_PROBLEMS

        for what, count in (("--mine-problems + --select-problems", config.mine_problems + config.select_problems),
                            ("--test-problems", config.test_problems)):
            if count > MAX_PROBLEMS:
                raise InputError(f"{what} must be <= {MAX_PROBLEMS:,} (the toy world's problems per seed), got {count:,}")
    for spec in config.extra_judges:
        model, _, features = spec.partition(":")
        if model not in ("logreg", "lightgbm") or features not in ("DT", "DD-DT"):
            raise InputError(f"extra judge {spec!r}: use MODEL:FEATURES with MODEL logreg|lightgbm and FEATURES DT|DD-DT")
    if any(not 0.0 < x <= 1.0 for x in (*config.typical_epsilons, *config.min_probs)):
        raise InputError("--typical-epsilons and --min-probs must lie in (0, 1]")
    if config.fly_entropies:
        from autojudge.checks import check_fly_parameters

        check_fly_parameters(config.fly_entropies, decoding.fly_window, decoding.window)
    if config.task == "gsm8k":
        for stage in ("mine", "select", "test"):
            stage_problems(config, stage)  # missing file, too few problems, problems without answers
    if tokenizer is None:  # a pair that cannot work is refused before anything is mined (ModelPairError names both)
        from autojudge.models import check_same_tokenizer, load_tokenizer

        tokenizer = load_tokenizer(decoding.target)
        check_same_tokenizer(tokenizer, load_tokenizer(decoding.draft), decoding.target, decoding.draft)
    if config.task == "gsm8k" and config.shots:
        from autojudge.tasks import build_task
        from autojudge.tasks.gsm8k import clean_solution

        task = build_task("gsm8k", shots=config.shots, shots_file=config.train_input)
        shortest = min(len(tokenizer(clean_solution(example.answer or ""), add_special_tokens=False).input_ids)
                       for example in task.examples())
        if decoding.max_new_tokens < shortest:
            raise InputError(f"--max-new-tokens {decoding.max_new_tokens} is shorter than every few-shot example's answer "
                             f"(the shortest is {shortest} tokens): no answer of the form the examples show fits")


def resolve_run_setup(config: RunConfig) -> Any:
    """The run's decoding setup checked (`setup.resolve`): the pair's tokenizers read once, the window,
    the budget and every compared window within the models' context."""
    from autojudge.checks import check_within_context
    from autojudge.setup import resolve

    setup = resolve(config.decoding)
    check_within_context([("--compare-windows", window) for window in config.compare_windows], setup.context)
    return setup


def mine_stage(config: RunConfig, out: Path) -> Path:
    """Mine labels + features for the mining problems (toy seed, or the head of the train file)."""
    from autojudge.pipeline.mine import MineConfig, mine

    where: dict[str, Any] = {"task": "toy", "seed": config.mine_seed}
    if config.task == "gsm8k":  # the mined slice of the train file, ids kept ("train-<line index>")
        from autojudge.tasks import write_jsonl

        source = check_mined_source(config, out)  # before the slice is rewritten
        slice_path = out.parent / "inputs" / "mine.jsonl"
        slice_path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(slice_path, [{"id": p.id, "question": p.question, "answer": p.answer} for p in stage_problems(config, "mine")])
        where = {"task": "gsm8k", "input": str(slice_path), "instruction": config.instruction,
                 "shots": config.shots, "shots_file": config.train_input if config.shots else None,
                 "settings_note": {"problems": source}}
    mine_config = MineConfig(
        decoding=config.decoding, limit=config.mine_problems, out=str(out), batch_size=config.mine_batch_size,
        # shards of batch/8 problems, two batches' worth queued: a shard is written as soon as its 8 slowest-to-mine
        # problems are done (with batch/2 the first shard of the real run took an hour), and a kill loses little
        chunk_size=max(1, config.mine_batch_size // 8), max_chunks_in_flight=16,
        finished_only=config.finished_only,
        workers=config.mine_workers, cpus_per_worker=config.threads,
        gpus_per_worker=1.0 if config.device.startswith("cuda") else 0.0, **where,
    )
    return Path(mine(mine_config))


def check_mined_source(config: RunConfig, out: Path) -> dict[str, str]:
    """The train file's fingerprint, recorded with the mining (gsm8k: prompt ids are line numbers, so
    another file would reuse labels mined from other questions); a folder mined from another one is refused."""
    import hashlib

    from autojudge.pipeline.mine import resume_settings
    from autojudge.errors import InputError

    source = {"train_sha256": hashlib.sha256(Path(str(config.train_input)).read_bytes()).hexdigest()[:16]}
    before = ((resume_settings(out) or {}).get("settings_note") or {}).get("problems")
    if before is not None and before != source:
        raise InputError(f"{out} was mined from another --train-input ({config.train_input} differs from the file "
                         "it was mined from); use a new --out folder")
    return source


def not_mined(mined_dir: Path, config: RunConfig) -> int:
    """This run's mining problems skipped because their target answer did not end within the budget."""
    from autojudge.actors.miner import NOT_MINED
    from autojudge.pipeline.shards import read_responses

    ids = {problem.id for problem in stage_problems(config, "mine")}
    rows = read_responses(mined_dir, ["prompt_id", "error"]).to_pylist()
    return sum(1 for row in rows if row["prompt_id"] in ids and str(row["error"] or "").startswith(NOT_MINED))


def mining_problems_data(data: Any, config: RunConfig) -> Any:
    """The mined labels of this run's mining problems only: a folder mined with a larger
    --mine-problems holds problems that are now selection problems."""
    import numpy as np

    ids = {problem.id for problem in stage_problems(config, "mine")}
    return data.subset(np.array([pid in ids for pid in data.prompt_ids.tolist()], dtype=bool))


def train_or_load(data: Any, config: RunConfig, folder: Path, model: str, features: str,
                  echo: Callable[[str], None] = print) -> Any:
    """The judge in `folder` when a finished run left one there trained with these settings on
    these labels (resume), else train and save it."""
    from autojudge.judge import Judge
    from autojudge.pipeline.train import TrainConfig, format_report, train_judge

    wanted = {"model": model, "feature_setup": features, "seed": config.seed, "data_fingerprint": data.fingerprint()}
    if (folder / "judge.json").exists() and (folder / "train_report.md").exists():
        judge = Judge.load(folder)
        changed = [f"{key} {judge.settings.get(key)!r} -> {value!r}" for key, value in wanted.items()
                   if judge.settings.get(key) != value]
        if not changed:
            return judge
        echo(f"{folder} was trained with other settings ({'; '.join(changed)}): training it again")
    judge = train_judge(data, TrainConfig(model=model, feature_setup=features, seed=config.seed))
    judge.save(folder)
    (folder / "train_report.md").write_text(format_report(judge))
    return judge


def extra_judge_taus(judge: Any, count: int) -> list[float]:
    """A short tau sweep of an extra judge: from its validation table, the largest tau keeping
    recall of important mismatches at 0.99 / 0.95 / 0.9 / 0.8 (the first `count` found), plus
    the smallest reaching acceptance of half the mismatches."""
    from autojudge.pipeline.evaluate import sweep_thresholds

    safe = sweep_thresholds(judge.thresholds, acceptance_rates=(), recall_levels=(0.99, 0.95, 0.9, 0.8), low_taus=())
    wide = sweep_thresholds(judge.thresholds, acceptance_rates=(0.5,), recall_levels=(), low_taus=())
    return sorted(set(safe[: max(count - 1, 1)]) | set(wide))


def run_main(config: RunConfig, echo: Callable[[str], None] = print, setup: Any = None) -> dict[str, Any]:
    """Mine, train, select the threshold, evaluate; return the summary (also written to RUN/summary.json).
    `setup`: the pair, window and budget as `setup.resolve` checked them (`autojudge run`); else they
    are checked here."""
    import torch

    from autojudge.pipeline.dataset import read_mined
    from autojudge.pipeline.evaluate import (
        EvalConfig, evaluate_modes, recommend_threshold, sweep_thresholds, write_eval_outputs,
    )
    from autojudge.tasks import build_task

    setup = setup or resolve_run_setup(config)
    check_run_config(config, setup.tokenizer)
    torch.set_num_threads(config.threads)
    run_dir = config.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    echo(f"run folder: {run_dir}")
    timer = StageTimer(echo)

    mined_dir = timer.run("mine", lambda: mine_stage(config, run_dir / "mined"))
    data = mining_problems_data(read_mined(mined_dir), config)
    skipped = not_mined(mined_dir, config)
    echo(f"{len(data)} mismatches ({int(data.important.sum())} important) from {len(set(data.prompt_ids.tolist()))} prompts"
         + (f"; {skipped} problems not mined (their answer did not end within the budget)" if skipped else ""))

    def train() -> tuple[Any, dict[str, Any]]:
        main = train_or_load(data, config, run_dir / "judge", config.judge_model, config.feature_setup, echo)
        others = {
            spec.replace(":", "-"): train_or_load(data, config, run_dir / "judges" / spec.replace(":", "-"), *spec.split(":"), echo)
            for spec in config.extra_judges
        }
        return main, others

    judge, extra = timer.run("train", train)
    echo(f"validation ROC AUC {judge.metrics['val_roc_auc']:.4f}, PR AUC {judge.metrics['val_pr_auc']:.4f}")
    for name, other in extra.items():
        echo(f"  {name}: validation ROC AUC {other.metrics['val_roc_auc']:.4f}, PR AUC {other.metrics['val_pr_auc']:.4f}")

    pair = setup.load_pair(device=config.device)
    judge.check_model_pair(pair)
    gsm8k = config.task == "gsm8k"
    task = build_task(config.task, instruction=config.instruction if gsm8k else None, shots=config.shots if gsm8k else 0,
                      shots_file=config.train_input if gsm8k and config.shots else None)
    eval_config = EvalConfig(
        window=config.decoding.window, max_new_tokens=config.decoding.max_new_tokens, batch_size=config.eval_batch_size,
        top_ks=config.top_ks, max_accuracy_drop=config.max_accuracy_drop, device=config.device,
        quality=config.quality, workers=config.eval_workers, threads=config.threads,
    )
    if config.recall_levels is not None:
        eval_config.recall_levels = config.recall_levels
    sweep_kwargs = {} if config.low_taus is None else {"low_taus": config.low_taus}
    eval_config.thresholds = tuple(
        sweep_thresholds(judge.thresholds, eval_config.acceptance_rates, eval_config.recall_levels, **sweep_kwargs)
    )
    context = {
        "target / draft": f"`{config.decoding.target}` / `{config.decoding.draft}`",
        "judge": f"{judge.kind} {judge.feature_setup}, validation ROC AUC {judge.metrics['val_roc_auc']:.3f}",
        "window": config.decoding.window,
        "max new tokens": config.decoding.max_new_tokens,
        "quality measure for the threshold": config.quality,
        "mined": f"{len(data)} mismatches ({int(data.important.sum())} important) from {len(set(data.prompt_ids.tolist()))} prompts"
                 + (f"; {skipped} problems not mined (answer did not end within the budget)" if skipped else ""),
    }
    if config.task == "gsm8k":
        context["task"] = f"gsm8k, instruction {config.instruction!r}, {config.shots} few-shot examples"

    select_problems = stage_problems(config, "select")

    def select() -> Any:
        select_config = EvalConfig(**dict(asdict(eval_config), top_ks=()))  # exact vs autojudge only
        results = evaluate_modes(pair, task, select_problems, judge, select_config, stop_after_drop=True,
                                 cache_dir=run_dir / "select" / "settings")
        chosen = recommend_threshold(results, config.max_accuracy_drop, config.quality)
        where = stage_description(config, "select")
        write_eval_outputs(results, run_dir / "select", "Threshold selection", dict(context, problems=where),
                           config.max_accuracy_drop, chosen, config.quality)
        apply_selection(judge, chosen, where, config, echo)
        judge.save(run_dir / "judge")
        return chosen

    timer.run("select threshold", select)
    echo(f"default threshold tau = {judge.default_threshold:g} ({judge.threshold_source})")

    test_problems = stage_problems(config, "test")

    def test() -> Any:
        thresholds = tuple(sorted(set(eval_config.thresholds or ()) | {round(judge.default_threshold, 4)}))
        test_config = EvalConfig(**dict(asdict(eval_config), thresholds=thresholds,
                                        typical_epsilons=config.typical_epsilons, min_probs=config.min_probs,
                                        fly_entropies=config.fly_entropies, fly_window=config.decoding.fly_window))
        others = {name: (other, extra_judge_taus(other, config.extra_judge_taus)) for name, other in extra.items()}
        results = evaluate_modes(pair, task, test_problems, judge, test_config, extra_judges=others,
                                 cache_dir=run_dir / "eval" / "settings")
        chosen = next(r for r in results if r.mode == "autojudge" and r.param == round(judge.default_threshold, 4))
        where = stage_description(config, "test")
        pair_names = f"{config.decoding.target} / {config.decoding.draft}"
        title = ("AutoJudge on held-out toy problems" if config.task == "toy"
                 else f"AutoJudge on held-out GSM8K test problems ({pair_names})")
        paths = write_eval_outputs(results, run_dir / "eval", title,
                                   dict(context, problems=where, **{"chosen tau (from selection)": judge.default_threshold}),
                                   config.max_accuracy_drop, chosen, config.quality)
        return results, chosen, paths

    results, chosen, eval_paths = timer.run("evaluate", test)
    exact = next(r for r in results if r.mode == "exact")

    def other_windows() -> list[dict[str, Any]]:
        return [
            window_comparison(pair, task, test_problems, judge, dict(asdict(eval_config), window=window),
                              run_dir / "eval" / "settings")
            for window in config.compare_windows if window != config.decoding.window
        ]

    by_window = timer.run("other windows", other_windows) if config.compare_windows else []
    summary = {
        "run_dir": str(run_dir),
        "config": asdict(config),
        "stage_seconds": timer.times,
        "total_seconds": sum(timer.times.values()),
        "judge": {key: judge.metrics[key] for key in ("val_roc_auc", "val_pr_auc", "val_important_rate", "num_train", "num_val")},
        "extra_judges": {name: {key: other.metrics[key] for key in ("val_roc_auc", "val_pr_auc")} for name, other in extra.items()},
        "mined": {"mismatches": int(len(data)), "important": int(data.important.sum()),
                  "prompts": int(len(set(data.prompt_ids.tolist()))), "not_mined_unfinished": skipped},
        "quality": config.quality,
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


def apply_selection(judge: Any, chosen: Any, where: str, config: RunConfig, echo: Callable[[str], None] = print) -> None:
    """Make the selection sweep's pick the judge's default threshold. When no threshold kept
    `config.quality` within `config.max_accuracy_drop` of exact's, the default becomes 0: the judge
    accepts no mismatch (exact decoding) rather than keep a validation default the selection problems
    showed to lose more than allowed."""
    points = f"{100 * config.max_accuracy_drop:g} point of exact's"
    if chosen is not None:
        judge.set_default_threshold(float(chosen.param), f"selection sweep on {where}: most tokens/target call within "
                                    f"{points} {config.quality}", window=config.decoding.window)
        return
    echo(f"no threshold kept {config.quality} within the allowed drop on the selection problems; "
         f"default tau = 0 (accept no mismatch) instead of the validation default {judge.default_threshold:g}")
    judge.set_default_threshold(0.0, f"selection sweep on {where}: no threshold kept {config.quality} within {points}, "
                                "so no mismatch is accepted", window=config.decoding.window)


def window_comparison(pair: Any, task: Any, problems: list[Problem], judge: Any, eval_fields: dict[str, Any],
                      cache_dir: Path | None = None) -> dict[str, Any]:
    """Exact and autojudge at the judge's default threshold on `problems` at another window."""
    from autojudge.pipeline.evaluate import EvalConfig, evaluate_modes

    tau = round(judge.default_threshold, 4)  # as in the test sweep
    config = EvalConfig(**dict(eval_fields, top_ks=(), typical_epsilons=(), min_probs=(), thresholds=(tau,)))
    results = evaluate_modes(pair, task, problems, judge, config, show_progress=False, cache_dir=cache_dir)
    exact, judged = results[0], results[1]
    return {"window": config.window, **compare_with_exact(exact, judged)}


def compare_with_exact(exact: Any, chosen: Any) -> dict[str, float]:
    """Headline fields of an autojudge setting against exact decoding on the same problems."""
    return {
        "exact_accuracy": exact.accuracy,
        "exact_tokens_per_target_call": exact.tokens_per_target_call,
        "chosen_accuracy": chosen.accuracy,
        "chosen_agreement": chosen.agreement_with_target,
        "chosen_tokens_per_target_call": chosen.tokens_per_target_call,
        "speedup_tokens_per_target_call": chosen.tokens_per_target_call / exact.tokens_per_target_call,
        "accuracy_drop_points": 100 * (exact.accuracy - chosen.accuracy),
        "agreement_drop_points": 100 * (1.0 - (chosen.agreement_with_target if chosen.agreement_with_target is not None else 1.0)),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The closing lines of `autojudge run`: headline numbers and where every artifact went."""
    test = summary["test"]
    lines = [
        "",
        "== result ==",
        f"validation ROC AUC of the judge: {summary['judge']['val_roc_auc']:.4f}",
        f"held-out test, window {summary['config']['decoding']['window']}: exact {test['exact_tokens_per_target_call']:.2f} "
        f"tokens/target call at {100 * test['exact_accuracy']:.1f}% accuracy; autojudge tau={summary['default_threshold']:g} "
        f"{test['chosen_tokens_per_target_call']:.2f} tokens/target call ({test['speedup_tokens_per_target_call']:.2f}x) "
        f"at {100 * test['chosen_accuracy']:.1f}% ({-test['accuracy_drop_points']:+.1f} points)"
        + (f", agreement with the target {100 - test.get('agreement_drop_points', 0.0):.1f}%" if "agreement_drop_points" in test else ""),
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
