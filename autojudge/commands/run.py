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
            "judge, report.md, metrics.json and pareto.png. Defaults fit about 30 minutes on 2 CPU cores."
        ),
    )
    parser.add_argument("--out", metavar="DIR", help="run folder (default runs/<timestamp>)")
    parser.add_argument("--mine-problems", type=int, default=600, help="seed-1 problems to mine (default 600)")
    parser.add_argument("--select-problems", type=int, default=100, help="seed-1 problems to choose tau on (default 100)")
    parser.add_argument("--test-problems", type=int, default=150, help="held-out seed-2 problems (default 150)")
    parser.add_argument("--window", type=int, default=8, help="draft tokens per cycle in evaluation (default 8)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=112, help="generation budget per problem (toy answers need <= ~81)"
    )
    parser.add_argument("--judge-model", choices=["logreg", "lightgbm"], default="logreg", help="judge classifier")
    parser.add_argument("--features", choices=["DT", "DD-DT"], default="DD-DT", help="judge feature setup")
    parser.add_argument("--max-drop", type=float, default=1.0, help="accuracy points the chosen tau may lose (default 1)")
    parser.add_argument(
        "--mine-workers", type=int, default=1, help="Ray mining actors (default 1; 0 = mine in this process, no Ray)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--target", default="toy:target", help="target model spec (default toy:target)")
    parser.add_argument("--draft", default="toy:draft", help="draft model spec (default toy:draft)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from autojudge.models import ModelPairError
    from autojudge.pipeline.run import RunConfig, format_summary, run_main

    config = RunConfig(
        out=args.out, target=args.target, draft=args.draft, mine_problems=args.mine_problems,
        select_problems=args.select_problems, test_problems=args.test_problems, window=args.window,
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
