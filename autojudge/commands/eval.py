"""`autojudge eval`: accuracy vs tokens per target call for exact, topk and autojudge decoding."""

from __future__ import annotations

import argparse

from autojudge.checks import check_fly_parameters
from autojudge.commands import FLY_WINDOW
from autojudge.checks import add_same_pair_argument
from autojudge.tasks import add_task_arguments


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate exact / topk / autojudge decoding on held-out problems",
        description=(
            "Decode held-out problems with exact speculative decoding, the top-K baseline and the judge over a "
            "sweep of thresholds (same window); measure accuracy against the ground truth, tokens per target "
            "call and wall time; write OUT/report.md, OUT/metrics.json and OUT/pareto.png."
        ),
    )
    parser.add_argument("--judge", metavar="JUDGE_DIR", help="judge folder (from `autojudge train`); without it only exact/topk")
    add_same_pair_argument(parser)
    parser.add_argument("--target", help="target model spec (default: the judge's target, else toy:target)")
    parser.add_argument("--draft", help="draft model spec (default: the judge's draft, else toy:draft)")
    add_task_arguments(parser, default="toy", seed=2)
    parser.add_argument("--input", metavar="FILE", help="problems JSONL (default for toy: generated from --seed)")
    parser.add_argument("--limit", type=int, default=100, help="number of problems")
    parser.add_argument("--window", type=int, default=None,
                        help="draft tokens per cycle (k), same for every mode (default: the judge's window, else 8)")
    parser.add_argument("--max-new-tokens", type=int, default=160, help="generation budget per problem")
    parser.add_argument("--batch-size", type=int, default=16, help="problems decoded together")
    parser.add_argument("--top-k", type=_floats, default=(2.0, 3.0), help="K values of the topk baseline, e.g. 2,3")
    parser.add_argument(
        "--thresholds", type=_floats, default=None,
        help="autojudge thresholds, e.g. 0.1,0.3,0.5 (default: read off the judge's validation table: taus keeping "
        "recall of important at 1.0..0.8, reaching acceptance 0.5, and 1.0)",
    )
    parser.add_argument("--max-drop", type=float, default=1.0, help="points of --quality a recommended threshold may lose")
    parser.add_argument("--quality", choices=["accuracy", "agreement"], default="accuracy",
                        help="what --max-drop is measured on: accuracy (ground truth) or agreement with the target's own answer")
    parser.add_argument("--typical-epsilons", type=_floats, default=(), metavar="E,E",
                        help="epsilons of the training-free typical-acceptance baseline, e.g. 0.03,0.09,0.3 (default none)")
    parser.add_argument("--min-probs", type=_floats, default=(), metavar="P,P",
                        help="thresholds of the training-free prob baseline, e.g. 0.5,0.3,0.1 (default none)")
    parser.add_argument("--fly-entropies", type=_floats, default=(), metavar="H,H",
                        help="entropy thresholds (nats) of the training-free FLy baseline, e.g. 0.3,0.6 (default none)")
    parser.add_argument("--fly-window", type=int, default=FLY_WINDOW,
                        help=f"FLy's window: the mismatch plus the draft tokens after it that must match (default {FLY_WINDOW}; "
                        "needs --window larger than it)")
    parser.add_argument(
        "--set-default", action="store_true",
        help="write the recommended threshold into the judge as its default (use on validation problems, not test)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for report.md, metrics.json, pareto.png")
    parser.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> None:
    """Everything that can be refused before the models load (autojudge.checks)."""
    from autojudge import checks

    checks.check_options(args, at_least_1=["limit", "window", "max_new_tokens", "batch_size", "top_k"],
                         thresholds=["thresholds"], threads=["threads"], seeds=["seed"])
    checks.check_number("--max-drop", args.max_drop, 0.0, 100.0)
    if any(k != int(k) for k in args.top_k):
        raise checks.InputError(f"--top-k takes whole numbers, got {','.join(f'{k:g}' for k in args.top_k)}")
    if any(not 0.0 < x <= 1.0 for x in (*args.typical_epsilons, *args.min_probs)):
        raise checks.InputError("--typical-epsilons and --min-probs must lie in (0, 1]")
    if args.fly_entropies:
        check_fly_parameters(args.fly_entropies, args.fly_window, args.window)
    checks.check_input_file("--input", args.input)
    checks.check_output_dir("--out", args.out)
    if args.judge:
        from autojudge.judge_format import check_judge_folder

        check_judge_folder(args.judge)  # a broken judge is refused before torch or the models load
        if args.set_default:
            checks.check_output_dir("--judge (written by --set-default)", args.judge)


def run(args: argparse.Namespace) -> int:
    import sys

    from autojudge.errors import ModelPairError

    try:
        return _run(args)
    except ModelPairError as err:
        print(f"autojudge eval: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    check_args(args)  # before the heavy imports: a bad option fails in a blink
    from autojudge.tasks import InputError, build_task

    task = build_task(args.task, seed=args.seed, instruction=args.instruction, shots=args.shots, shots_file=args.shots_file)
    problems = [p for p in task.load(args.input, limit=args.limit) if p.error is None]
    if not problems:
        raise InputError(f"no problems to evaluate in {args.input or f'{args.task} seed {args.seed}'}")
    import torch

    from autojudge.models import load_pair
    from autojudge.pipeline.evaluate import EvalConfig, evaluate_modes, recommend_threshold, write_eval_outputs
    from autojudge.judge import Judge, default_window

    if args.threads:
        torch.set_num_threads(args.threads)
    judge = Judge.load(args.judge) if args.judge else None
    target = args.target or (judge.pair.target_id if judge else "toy:target")
    draft = args.draft or (judge.pair.draft_id if judge else "toy:draft")
    from autojudge import checks

    # the pair, the judge and the prompts' lengths from tokenizers and configs, before any weights load
    tokenizer = checks.check_pair_tokenizers(target, draft)
    context = checks.context_of_specs(target, draft)
    checks.check_prompt_lengths(
        ((f"problem {p.id!r}", len(task.prompt_ids(p, tokenizer)))
         for p in problems),
        context, args.input or args.task,
    )
    checks.check_decode_lengths(context, args.window, args.max_new_tokens, args.judge)
    if judge is not None:
        from autojudge.judge import check_judge_for_specs

        check_judge_for_specs(judge, target, draft, args.same_pair)
    pair = load_pair(target, draft, device=args.device)
    if judge is not None:
        judge.check_model_pair(pair, args.same_pair)
    config = EvalConfig(
        window=default_window(judge) if args.window is None else args.window, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
        top_ks=tuple(int(k) for k in args.top_k), thresholds=args.thresholds,
        max_accuracy_drop=args.max_drop / 100.0, device=args.device, quality=args.quality,
        typical_epsilons=args.typical_epsilons, min_probs=args.min_probs,
        fly_entropies=args.fly_entropies, fly_window=args.fly_window,
    )
    results = evaluate_modes(pair, task, problems, judge, config)
    chosen = recommend_threshold(results, config.max_accuracy_drop, config.quality) if judge else None
    source = args.input or f"{args.task} seed {args.seed}"
    context = {
        "problems": f"{len(problems)} from {source}",
        "target / draft": f"`{target}` / `{draft}`",
        "judge": f"`{args.judge}`" if args.judge else "none",
        "window": config.window,
        "max new tokens": config.max_new_tokens,
        "device": args.device,
    }
    paths = write_eval_outputs(results, args.out, "AutoJudge evaluation", context, config.max_accuracy_drop, chosen,
                               config.quality)
    if args.set_default and judge is not None and chosen is not None:
        judge.set_default_threshold(
            float(chosen.param), f"autojudge eval on {source}: max tokens/target call within {args.max_drop:g} point",
            window=config.window,
        )
        judge.save(args.judge)
        print(f"default threshold of {args.judge} set to {chosen.param:g}")
    print(paths["report"].read_text())
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0
