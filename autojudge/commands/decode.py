"""`autojudge decode`: speculative decoding of a JSONL file of prompts (exact, top-k or judge acceptance)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from autojudge.commands import add_rule_arguments, check_rule_arguments
from autojudge.checks import add_same_pair_argument
from autojudge.tasks import add_task_arguments


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "decode",
        help="speculative decoding of prompts (exact | topk | autojudge acceptance)",
        description=(
            "Decode every record of --input with the target, the draft proposing --window tokens per "
            "target call. Records with 'question' are formatted by --task (chat template), records with "
            "'prompt' are used as raw text. Writes one JSON line per record to --output: id, text, "
            "prompt_token_ids, token_ids (generated), stop_reason and stats (target_calls, draft_calls, "
            "new_tokens, wall_s, accepted_lengths, tokens_per_target_call)."
        ),
    )
    parser.add_argument("--target", default="toy:target", help="target model spec (default toy:target)")
    parser.add_argument("--draft", default="toy:draft", help="draft model spec (default toy:draft)")
    add_rule_arguments(parser)
    add_same_pair_argument(parser)
    parser.add_argument("--window", type=window_option, default=None, metavar="K",
                        help="draft tokens per target call (default: the judge's window in mode autojudge, else 8); "
                        "'auto': measure the pair on the first prompts (step cost of each model, acceptance per "
                        "position under --mode, batch 1) and take the window with the highest expected tokens/s")
    parser.add_argument("--max-new-tokens", type=int, default=256, metavar="L", help="generation budget (default 256)")
    add_task_arguments(parser, default="gsm8k", seed=None)
    parser.add_argument("--input", required=True, metavar="FILE", help="prompts JSONL (id + question or prompt)")
    parser.add_argument("--output", required=True, metavar="FILE", help="output JSONL")
    parser.add_argument("--limit", type=int, help="decode only the first N records")
    parser.add_argument("--batch-size", type=int, default=8, help="most prompts decoded together; more wait for a free row (continuous batching; default 8)")
    parser.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the models' lean forwards (CUDA: with CUDA graphs); on a CPU the eager lean step is faster")
    parser.set_defaults(func=run)


AUTO_WINDOW_PROMPTS = 2
"""Prompts `--window auto` decodes (under --mode, batch 1) to measure the pair."""
AUTO_WINDOW_MAX = 8
"""Longest window `--window auto` measures and may choose."""


def window_option(text: str) -> int | str:
    """--window: an integer or 'auto'."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None


def auto_window(engine: Any, prompts: list[list[int]], max_new_tokens: int, rule: Any) -> int:
    """The window with the highest expected tokens/s for the engine's pair (`decode.engine.window`), printed with its table."""
    from autojudge.decode.engine.window import measure_pair

    profile = measure_pair(
        engine.target, engine.draft, prompts[:AUTO_WINDOW_PROMPTS], window=AUTO_WINDOW_MAX,
        max_new_tokens=min(max_new_tokens, 64), eos_token_ids=sorted(engine.eos), pad_token_id=engine.pad_token_id, rule=rule,
    )  # fmt: skip
    chosen = profile.best(AUTO_WINDOW_MAX)
    table = ", ".join(f"{row.window}: {row.tokens_per_s:.1f}" for row in profile.table(range(AUTO_WINDOW_MAX + 1)))
    print(
        f"window auto: draft/target step cost {profile.costs.draft_ratio:.2f}, acceptance per position "
        f"{[round(a, 2) for a in profile.acceptance]}; expected tokens/s by window (batch 1) {table}; chose {chosen}",
        file=sys.stderr,
    )
    return chosen


def load_rule(args: argparse.Namespace, pair: Any) -> tuple[Any, Any]:
    """(acceptance rule of --mode, judge or None); loads and checks the judge for mode autojudge."""
    from autojudge.decode.engine import build_rule
    from autojudge.tasks import InputError

    if args.mode != "autojudge":
        if args.judge:
            print(f"autojudge decode: note: --judge is ignored in mode {args.mode}", file=sys.stderr)
        return build_rule(args.mode, top_k=args.top_k, epsilon=args.epsilon, min_prob=args.min_prob,
                          fly_entropy=args.fly_entropy, fly_window=args.fly_window), None
    if not args.judge:
        raise InputError("mode autojudge needs --judge JUDGE_DIR (from `autojudge train`)")
    from autojudge.judge import Judge  # lazy: only this mode needs it

    judge = Judge.load(args.judge)
    judge.check_model_pair(pair, args.same_pair)
    return build_rule("autojudge", judge=judge, threshold=args.threshold), judge


def check_args(args: argparse.Namespace) -> None:
    """Everything that can be refused before the models load (autojudge.checks)."""
    from autojudge import checks

    checks.check_options(args, at_least_1=["max_new_tokens", "batch_size", "limit", "top_k"],
                         thresholds=["threshold"], threads=["threads"])
    checks.check_stop_strings("--stop", args.stop)
    if args.window != "auto":
        checks.check_options(args, at_least_1=["window"])
    check_rule_arguments(args)
    checks.check_input_file("--input", args.input)
    checks.check_output_file("--output", args.output)
    checks.check_not_inside("--output", args.output, "--input", args.input)
    if args.mode == "autojudge":
        if not args.judge:
            raise checks.InputError("mode autojudge needs --judge JUDGE_DIR (from `autojudge train`)")
        from autojudge.judge_format import check_judge_folder

        check_judge_folder(args.judge)  # a broken judge is refused before torch or the models load


def run(args: argparse.Namespace) -> int:
    check_args(args)  # before the heavy imports: a bad option fails in a blink
    from autojudge.tasks import InputError, build_task, write_jsonl

    task = build_task(args.task, instruction=args.instruction, shots=args.shots, shots_file=args.shots_file)
    problems = task.load(args.input, limit=args.limit, strict=True)  # InputError names file:line
    if not problems:
        raise InputError(f"--input {args.input}: no records")
    from autojudge import checks

    # the pair, the judge and the prompts' lengths from tokenizers and configs, before any weights load
    tokenizer = checks.check_pair_tokenizers(args.target, args.draft)
    prompts = [task.prompt_ids(p, tokenizer) for p in problems]
    context = checks.context_of_specs(args.target, args.draft)
    checks.check_prompt_lengths(((f"record {p.id!r}", len(ids)) for p, ids in zip(problems, prompts)), context, args.input)
    checks.check_decode_lengths(context, args.window, args.max_new_tokens, args.judge if args.mode == "autojudge" else None)
    if args.mode == "autojudge":
        from autojudge.judge import Judge, check_judge_for_specs

        check_judge_for_specs(Judge.load(args.judge), args.target, args.draft, args.same_pair)
    import torch

    from autojudge.decode.engine import EngineCore, RequestSettings, aggregate
    from autojudge.models import ModelPairError, load_pair

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        pair = load_pair(args.target, args.draft, device=args.device)
        rule, judge = load_rule(args, pair)
    except ModelPairError as err:
        raise InputError(str(err)) from None
    from autojudge.judge import default_window

    auto = args.window == "auto"
    args.window = default_window(judge) if auto or args.window is None else args.window
    tokenizer = pair.tokenizer
    engine = EngineCore.for_pair(pair, judge=judge, default_window=args.window, max_batch=args.batch_size, compile=args.compile,
                                 shared_prefix=task.shared_prefix_ids(pair.tokenizer))
    if auto:
        args.window = engine.default_window = auto_window(engine, prompts, args.max_new_tokens, rule)
    settings = RequestSettings(max_new_tokens=args.max_new_tokens, stop_strings=tuple(args.stop), rule=rule)
    start = time.perf_counter()
    results = engine.generate(prompts, settings)
    total_wall = time.perf_counter() - start
    records, metrics = [], []
    for problem, prompt_ids, result in zip(problems, prompts, results):
        m = result.metrics
        metrics.append(m)
        records.append({
            "id": problem.id,
            "text": tokenizer.decode(result.token_ids, skip_special_tokens=True),
            "prompt_token_ids": list(prompt_ids),
            "token_ids": result.token_ids,
            "stop_reason": result.stop_reason,
            "stats": {
                "target_calls": m.target_calls, "draft_calls": m.draft_calls, "new_tokens": m.new_tokens,
                "wall_s": round(m.wall_s, 4), "accepted_lengths": m.accepted_lengths,
                "tokens_per_target_call": round(m.tokens_per_target_call, 4),
            },
        })
    write_jsonl(args.output, records)
    total = aggregate(metrics, wall_s=total_wall)
    print(
        f"mode {args.mode} window {args.window}: {len(records)} prompts, {total.new_tokens} tokens, "
        f"{total.target_calls} target calls ({total.tokens_per_target_call:.2f} tokens/call), "
        f"accepted-length histogram {total.accepted_lengths}, {total.wall_s:.1f} s ({total.tokens_per_s:.1f} tokens/s); "
        f"wrote {args.output}"
    )
    return 0
