"""`autojudge eval`: accuracy vs tokens per target call for exact, topk and autojudge decoding."""

from __future__ import annotations

import argparse
from typing import Any

from autojudge.commands import (
    DEFAULT_WINDOW, add_budget_argument, add_fly_window_argument, add_pair_arguments, add_window_argument, load_pair,
)
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
    add_pair_arguments(parser, judge=True)
    add_task_arguments(parser, default="toy", seed=2)
    parser.add_argument("--input", metavar="FILE", help="problems JSONL (default for toy: generated from --seed)")
    parser.add_argument("--limit", type=int, default=100, help="number of problems")
    add_window_argument(parser, default_help=f"the judge's window, else {DEFAULT_WINDOW}", extra_help="; the same for every mode")
    add_budget_argument(parser, what="generation budget per problem")
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
    add_fly_window_argument(parser)
    parser.add_argument(
        "--set-default", action="store_true",
        help="write the recommended threshold into the judge as its default (use on validation problems, not test)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=0,
                        help="Ray actors that decode settings side by side, each with its own copy of the pair and "
                        "--threads CPUs (default 0: one setting after another in this process)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for report.md, metrics.json, pareto.png")
    parser.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> Any:
    """Everything that can be refused before the weights load (autojudge.checks); returns the checked
    decoding setup (`setup.resolve_setup`: the judge folder and the tokenizers read once)."""
    from autojudge import checks
    from autojudge.errors import InputError
    from autojudge.setup import resolve_setup

    checks.check_options(args, at_least_1=["limit", "batch_size", "top_k"],
                         at_least_0=["workers"], thresholds=["thresholds"], threads=["threads"], seeds=["seed"])
    checks.check_number("--max-drop", args.max_drop, 0.0, 100.0)
    if any(k != int(k) for k in args.top_k):
        raise InputError(f"--top-k takes whole numbers, got {','.join(f'{k:g}' for k in args.top_k)}")
    if any(not 0.0 < x <= 1.0 for x in (*args.typical_epsilons, *args.min_probs)):
        raise InputError("--typical-epsilons and --min-probs must lie in (0, 1]")
    if args.fly_entropies:
        checks.check_fly_parameters(args.fly_entropies, args.fly_window, args.window)
    checks.check_input_file("--input", args.input)
    checks.check_output_dir("--out", args.out)
    if args.workers > 0:
        from autojudge.ray_utils import check_actor_resources, check_cluster_address

        check_cluster_address(None)
        check_actor_resources("evaluation workers", args.workers, args.threads or 1,
                              1.0 if args.device.startswith("cuda") else 0.0, None, advice="use fewer --workers or --threads")
    if args.judge and args.set_default:
        checks.check_output_dir("--judge (written by --set-default)", args.judge)
    return resolve_setup(args, judge_any_mode=True, device=args.device)


def run(args: argparse.Namespace) -> int:
    setup = check_args(args)  # before the weights load: a bad option fails in a blink
    from autojudge import checks
    from autojudge.errors import InputError
    from autojudge.tasks import build_task

    task = build_task(args.task, seed=args.seed, instruction=args.instruction, shots=args.shots, shots_file=args.shots_file)
    problems = [p for p in task.load(args.input, limit=args.limit) if p.error is None]
    if not problems:
        raise InputError(f"no problems to evaluate in {args.input or f'{args.task} seed {args.seed}'}")
    checks.check_prompt_lengths(((f"problem {p.id!r}", len(task.prompt_ids(p, setup.tokenizer))) for p in problems),
                                setup.context, args.input or args.task)
    from autojudge.pipeline.evaluate import EvalConfig, evaluate_modes, recommend_threshold, write_eval_outputs

    pair = load_pair(setup, args.device, args.threads)
    judge, target, draft = setup.judge, setup.config.target, setup.config.draft
    config = EvalConfig(
        window=setup.window, max_new_tokens=setup.config.max_new_tokens, batch_size=args.batch_size,
        top_ks=tuple(int(k) for k in args.top_k), thresholds=args.thresholds,
        max_accuracy_drop=args.max_drop / 100.0, device=args.device, quality=args.quality,
        typical_epsilons=args.typical_epsilons, min_probs=args.min_probs,
        fly_entropies=args.fly_entropies, fly_window=args.fly_window, workers=args.workers, threads=args.threads or 1,
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
