"""`autojudge train`: fit a judge on a mining folder and save the artifact."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a judge on mined labels and features",
        description=(
            "Train the AutoJudge classifier on a mining folder (labels/*.parquet + manifest.json). "
            "Splits by prompt, picks hyper-parameters by validation ROC AUC, prints ROC AUC, PR AUC and "
            "a threshold table, and writes JUDGE_DIR/judge.json + weights (no pickle) + train_report.md."
        ),
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="mining output folder (from `autojudge mine`)")
    parser.add_argument("--out", required=True, metavar="JUDGE_DIR", help="folder to write the judge into")
    parser.add_argument("--model", choices=["logreg", "lightgbm"], default="logreg", help="classifier (default logreg)")
    parser.add_argument(
        "--features", choices=["DT", "DD-DT"], default="DD-DT",
        help="feature setup: DT = target hidden state, DD-DT = [draft ; target] hidden states (default)",
    )
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of prompts held out for validation")
    parser.add_argument(
        "--recall-target", type=float, default=0.95,
        help="default threshold = largest tau whose validation recall of important mismatches is >= this",
    )
    parser.add_argument(
        "--no-balance", action="store_true", help="do not re-weight classes (default: balanced class weights)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the classifier")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for the classifier")
    parser.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> None:
    """Everything that can be refused before reading the data (autojudge.checks)."""
    from autojudge import checks
    from autojudge.pipeline.dataset import read_manifest
    from autojudge.pipeline.shards import require_manifest

    checks.check_options(args, unit_interval=["recall_target"], threads=["threads"], seeds=["seed"])
    checks.check_number("--val-fraction", args.val_fraction, 0.0, 1.0, low_open=True, high_open=True)
    checks.check_input_dir("--data", args.data)
    checks.check_not_inside("--out", args.out, "--data", args.data)  # links resolved: never into the mined data
    checks.check_output_dir("--out", args.out)
    require_manifest(args.data)
    checks.warn_if_mining_running("train", read_manifest(args.data), args.data)


def run(args: argparse.Namespace) -> int:
    check_args(args)  # before the heavy imports and any work
    from pathlib import Path

    from autojudge.files import write_text_atomic
    from autojudge.pipeline.dataset import read_mined
    from autojudge.pipeline.train import TrainConfig, format_report, train_judge

    config = TrainConfig(
        model=args.model, feature_setup=args.features, val_fraction=args.val_fraction, seed=args.seed,
        class_weight=None if args.no_balance else "balanced", recall_target=args.recall_target,
        num_threads=args.threads,
    )
    data = read_mined(args.data)
    print(f"read {len(data)} mismatches ({int(data.important.sum())} important) from {args.data}")
    judge = train_judge(data, config)
    out = judge.save(args.out)
    report = format_report(judge)
    write_text_atomic(Path(out) / "train_report.md", report)
    print(report)
    print(f"judge written to {out}/ (judge.json, {judge.to_json()['weights_file']}, train_report.md)")
    return 0
