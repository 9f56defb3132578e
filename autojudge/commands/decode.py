"""`autojudge decode`: speculative decoding of a JSONL file of prompts (exact, top-k or judge acceptance)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from autojudge.commands import add_budget_argument, add_pair_arguments, add_rule_arguments, add_window_argument, load_pair
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
    add_pair_arguments(parser, judge=True)
    add_rule_arguments(parser)
    add_window_argument(parser, type=window_option, extra_help=(
        "; 'auto': measure the pair on the first prompts (step cost of each model, acceptance per position under "
        "--mode, batch 1) and take the window with the highest expected tokens/s"))
    add_budget_argument(parser)
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


def check_args(args: argparse.Namespace) -> Any:
    """Everything that can be refused before the weights load (autojudge.checks); returns the checked
    decoding setup (`setup.resolve_setup`: the judge folder and the tokenizers read once)."""
    from autojudge import checks
    from autojudge.setup import resolve_setup

    checks.check_options(args, at_least_1=["batch_size", "limit"], threads=["threads"])
    checks.check_stop_strings("--stop", args.stop)
    checks.check_input_file("--input", args.input)
    checks.check_output_file("--output", args.output)
    checks.check_not_inside("--output", args.output, "--input", args.input)
    if args.judge and args.mode != "autojudge":
        print(f"autojudge decode: note: --judge is ignored in mode {args.mode}", file=sys.stderr)
    return resolve_setup(args, device=args.device)


def run(args: argparse.Namespace) -> int:
    setup = check_args(args)  # before the weights load: a bad option fails in a blink
    from autojudge import checks
    from autojudge.errors import InputError
    from autojudge.tasks import build_task, write_jsonl

    task = build_task(args.task, instruction=args.instruction, shots=args.shots, shots_file=args.shots_file)
    problems = task.load(args.input, limit=args.limit, strict=True)  # InputError names file:line
    if not problems:
        raise InputError(f"--input {args.input}: no records")
    prompts = [task.prompt_ids(p, setup.tokenizer) for p in problems]
    checks.check_prompt_lengths(((f"record {p.id!r}", len(ids)) for p, ids in zip(problems, prompts)), setup.context, args.input)
    from autojudge.decode.engine import EngineCore, RequestSettings, aggregate

    pair = load_pair(setup, args.device, args.threads)
    tokenizer = pair.tokenizer
    engine = EngineCore.for_pair(pair, judge=setup.judge, default_window=setup.window, max_batch=args.batch_size,
                                 compile=args.compile, shared_prefix=task.shared_prefix_ids(tokenizer))
    settings = RequestSettings(**setup.config.request_fields(), stop_strings=tuple(args.stop))
    if args.window == "auto":
        engine.default_window = auto_window(engine, prompts, setup.config.max_new_tokens, engine.rule_for(settings))
    window = engine.default_window
    settings = RequestSettings(**dict(setup.config.request_fields(), window=window), stop_strings=tuple(args.stop))
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
        f"mode {args.mode} window {window}: {len(records)} prompts, {total.new_tokens} tokens, "
        f"{total.target_calls} target calls ({total.tokens_per_target_call:.2f} tokens/call), "
        f"accepted-length histogram {total.accepted_lengths}, {total.wall_s:.1f} s ({total.tokens_per_s:.1f} tokens/s); "
        f"wrote {args.output}"
    )
    return 0
