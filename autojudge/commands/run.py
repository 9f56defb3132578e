"""`autojudge run`: the main job on the built-in toy world (mine, train, choose threshold, evaluate)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="main job: mine, train and evaluate on the built-in toy world",
        description=(
            "End to end on the built-in toy world with the shipped toy:target / toy:draft pair: mine labels and "
            "features (seed 1), train the judge, choose its threshold on unseen seed-1 problems, and evaluate "
            "exact / topk / autojudge on held-out seed-2 problems. Writes a run folder with the labels, the "
            "judge, report.md, metrics.json and pareto.png. Defaults take a few minutes on 2 CPU cores."
        ),
    )
    from autojudge.pipeline.run import RunConfig

    defaults = RunConfig()
    parser.add_argument("--out", metavar="DIR", help="run folder (default runs/<timestamp>)")
    parser.add_argument("--mine-problems", type=int, default=defaults.mine_problems,
                        help=f"seed-1 problems to mine (default {defaults.mine_problems})")
    parser.add_argument("--select-problems", type=int, default=defaults.select_problems,
                        help=f"seed-1 problems after the mined ones to choose tau on (default {defaults.select_problems})")
    parser.add_argument("--test-problems", type=int, default=defaults.test_problems,
                        help=f"held-out seed-2 problems (default {defaults.test_problems})")
    parser.add_argument("--window", type=int, default=defaults.window,
                        help=f"draft tokens per cycle in evaluation, every mode (default {defaults.window})")
    parser.add_argument("--compare-windows", type=_int_list, default=defaults.compare_windows, metavar="K,K",
                        help="other windows at which exact and the chosen tau also run on the test problems "
                        f"(default {','.join(map(str, defaults.compare_windows))}; '' for none)")
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens,
                        help=f"generation budget per problem (default {defaults.max_new_tokens}; toy answers need <= ~92)")
    parser.add_argument("--judge-model", choices=["logreg", "lightgbm"], default=defaults.judge_model,
                        help="judge classifier")
    parser.add_argument("--features", choices=["DT", "DD-DT"], default=defaults.feature_setup, help="judge feature setup")
    parser.add_argument("--max-drop", type=float, default=100 * defaults.max_accuracy_drop,
                        help=f"accuracy points the chosen tau may lose (default {100 * defaults.max_accuracy_drop:g})")
    parser.add_argument("--mine-workers", type=int, default=defaults.mine_workers,
                        help=f"Ray mining actors (default {defaults.mine_workers}; 0 = mine in this process, no Ray)")
    parser.add_argument("--threads", type=int, default=defaults.threads,
                        help=f"torch CPU threads (default {defaults.threads})")
    parser.add_argument("--device", default=defaults.device, help="torch device")
    parser.add_argument("--target", default=defaults.target, help=f"target model spec (default {defaults.target})")
    parser.add_argument("--draft", default=defaults.draft, help=f"draft model spec (default {defaults.draft})")
    parser.set_defaults(func=run)


def _int_list(text: str) -> tuple[int, ...]:
    """'8,16' -> (8, 16); '' -> ()."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def check_args(args: argparse.Namespace) -> None:
    """Everything that can be refused before mining starts (autojudge.checks)."""
    from autojudge import checks
    from autojudge.ray_utils import check_cluster_address

    checks.check_options(args, at_least_1=["mine_problems", "select_problems", "test_problems", "window",
                                           "compare_windows", "max_new_tokens", "threads"],
                         at_least_0=["mine_workers"])
    checks.check_number("--max-drop", args.max_drop, 0.0, 100.0)
    if args.out:
        checks.check_output_dir("--out", args.out)
    if args.mine_workers > 0:
        check_cluster_address(None)
    checks.check_pair_tokenizers(args.target, args.draft)


def run(args: argparse.Namespace) -> int:
    check_args(args)  # before the heavy imports and any work
    import sys

    from autojudge.models import ModelPairError
    from autojudge.pipeline.run import RunConfig, format_summary, run_main

    config = RunConfig(
        out=args.out, target=args.target, draft=args.draft, mine_problems=args.mine_problems,
        select_problems=args.select_problems, test_problems=args.test_problems, window=args.window,
        compare_windows=args.compare_windows,
        max_new_tokens=args.max_new_tokens, judge_model=args.judge_model, feature_setup=args.features,
        mine_workers=args.mine_workers, max_accuracy_drop=args.max_drop / 100.0, threads=args.threads, device=args.device,
    )
    try:
        summary = run_main(config)
    except ModelPairError as err:
        print(f"autojudge run: error: {err}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0
