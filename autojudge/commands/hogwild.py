"""`autojudge hogwild`: Hogwild! inference - N workers of one model generating over one shared KV cache."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from autojudge.commands import add_budget_argument
from autojudge.tasks import add_task_arguments


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "hogwild",
        help="Hogwild! inference: several workers of one model generating in parallel over a shared KV cache",
        description=(
            "Generate for every record of --input with --workers instances of --model that run in parallel, "
            "one token each per step, each seeing the others' text as it is written (one shared KV cache, "
            "block offsets applied by rotating RoPE, nothing recomputed; arXiv 2504.06261). Records with "
            "'question' get the collaboration system prompt and the chat template; records with 'prompt' are "
            "used as raw text. Writes one JSON line per record to --output: id, workers (name, text, token_ids, "
            "new_tokens, stop_reason), transcript (all worker blocks in order), answer (the first worker to write "
            "'The final answer is N' or '#### N') and stats (steps, forwards, new_tokens, tokens_per_forward, "
            "wall_s, answer_step, answer_wall_s). Greedy decoding; Llama/Qwen2-style RoPE models only."
        ),
    )
    parser.add_argument("--model", default="toy:target", help="model spec (default toy:target; e.g. smollm2:target)")
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="parallel workers (default 2)")
    add_budget_argument(parser, what="generation budget per worker")
    parser.add_argument("--no-collaborate", dest="collaborate", action="store_false",
                        help="no collaboration system prompt and no worker headers (1 worker = plain greedy)")
    parser.add_argument("--header", default="**{name}:** ",
                        help="header that opens each worker's block, {name} = the worker's name (default '**{name}:** ')")
    parser.add_argument("--check-every", type=int, default=None, metavar="T",
                        help="every T generated tokens (at a line break) ask the worker whether another one "
                             "is already doing this (default: never)")
    parser.add_argument("--stop-on-answer", action="store_true",
                        help="stop all workers as soon as one has written a final answer")
    add_task_arguments(parser, default="gsm8k", seed=None, shots=False)
    parser.add_argument("--input", required=True, metavar="FILE", help="prompts JSONL (id + question or prompt)")
    parser.add_argument("--output", required=True, metavar="FILE", help="output JSONL")
    parser.add_argument("--limit", type=int, help="only the first N records")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.set_defaults(func=run)


def result_record(problem_id: str, prompt_ids: list[int], result: Any) -> dict[str, Any]:
    """One output line for a Hogwild! result."""
    return {
        "id": problem_id,
        "num_prompt_tokens": len(prompt_ids),
        "workers": [
            {"name": w.name, "text": w.text, "token_ids": w.token_ids, "new_tokens": w.new_tokens,
             "stop_reason": w.stop_reason}
            for w in result.workers
        ],
        "transcript": result.transcript,
        "answer": result.answer,
        "answer_worker": result.answer_worker,
        "stats": {
            "workers": len(result.workers), "steps": result.steps, "forwards": result.forwards,
            "new_tokens": result.new_tokens, "tokens_per_forward": round(result.tokens_per_forward, 4),
            "wall_s": round(result.wall_s, 4), "answer_step": result.answer_step,
            "answer_wall_s": None if result.answer_wall_s is None else round(result.answer_wall_s, 4),
        },
    }


def check_args(args: argparse.Namespace) -> Any:
    """Everything that can be refused before a model loads (autojudge.checks), as the other commands
    do; returns the checked HogwildConfig."""
    from autojudge import checks
    from autojudge.decode.hogwild.generator import HogwildConfig

    checks.check_options(args, at_least_1=["limit", "check_every"], threads=["threads"])  # workers, budget: validate()
    config = HogwildConfig(
        workers=args.workers, max_new_tokens=args.max_new_tokens, collaborate=args.collaborate, header=args.header,
        check_every=args.check_every, stop_on_answer=args.stop_on_answer,
    )
    config.validate()
    checks.check_input_file("--input", args.input)
    checks.check_output_file("--output", args.output)
    checks.check_not_inside("--output", args.output, "--input", args.input)  # the output never replaces the input
    return config


def run(args: argparse.Namespace) -> int:
    config = check_args(args)  # before the heavy imports and any work
    from autojudge import checks
    from autojudge.decode.hogwild.generator import render_prompt
    from autojudge.models import load_tokenizer
    from autojudge.errors import InputError
    from autojudge.tasks import build_task, write_jsonl

    task = build_task(args.task, instruction=args.instruction)
    problems = task.load(args.input, limit=args.limit, strict=True)  # InputError names file:line
    if not problems:
        raise InputError(f"--input {args.input}: no records")
    # every prompt from the tokenizer and the config before the weights load
    tokenizer = load_tokenizer(args.model)
    prompts = []
    for problem in problems:
        if problem.prompt is not None:
            text = problem.prompt
        else:
            message = problem.question if not args.instruction else f"{problem.question}\n{args.instruction}"
            text = render_prompt(tokenizer, message, config)
        prompt_ids = list(tokenizer(text, add_special_tokens=False).input_ids)
        if not prompt_ids:
            raise InputError(f"{args.input}: record {problem.id}: the prompt has no tokens")
        prompts.append(prompt_ids)
    context = checks.context_of_specs(args.model)
    checks.check_prompt_lengths(((f"record {p.id!r}", len(ids)) for p, ids in zip(problems, prompts)), context, args.input)
    checks.check_within_context([("--max-new-tokens", args.max_new_tokens)], context)
    import torch

    from autojudge.decode.hogwild.generator import HogwildGenerator, marked_final_answer
    from autojudge.models import eos_token_ids, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device)
    hook = marked_final_answer if args.task in ("gsm8k", "toy") else None
    generator = HogwildGenerator(model, tokenizer, config, eos_token_ids(tokenizer, model), answer_hook=hook)
    records, steps, tokens, wall = [], 0, 0, 0.0
    for problem, prompt_ids in zip(problems, prompts):
        result = generator.generate(prompt_ids)
        records.append(result_record(problem.id, prompt_ids, result))
        steps, tokens, wall = steps + result.steps, tokens + result.new_tokens, wall + result.wall_s
        print(f"generated {len(records)}/{len(problems)}", file=sys.stderr)
    write_jsonl(args.output, records)
    print(
        f"hogwild {args.model} x {args.workers} workers: {len(records)} prompts, {tokens} tokens in {steps} steps "
        f"({tokens / max(steps, 1):.2f} tokens per forward), {wall:.1f} s ({tokens / max(wall, 1e-9):.1f} tokens/s); "
        f"wrote {args.output}"
    )
    return 0
