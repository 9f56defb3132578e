"""`autojudge toy`: write toy-world problems as JSONL, or print a shipped model's folder.

    autojudge toy --num 100 --seed 2 --out problems.jsonl
    autojudge toy --model-path target
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def write_problems(num: int, seed: int, out: Path) -> int:
    """Write `num` seeded problems to `out` (JSONL, through a temporary file); returns the count."""
    from autojudge.files import atomic_path
    from autojudge.toy.world import generate_problems

    with atomic_path(out) as temporary, temporary.open("w", encoding="utf-8") as handle:
        for record in generate_problems(num, seed):
            handle.write(json.dumps(record) + "\n")
    return num


def run(args: argparse.Namespace) -> int:
    """Dispatch on the parsed arguments."""
    from autojudge.errors import InputError
    from autojudge.toy import model_path

    if args.model_path:
        print(model_path(args.model_path))
        return 0
    if args.out is None:
        raise InputError("give --out FILE.jsonl (or --model-path target|draft)")
    from autojudge.checks import SEED_MAX, check_number, check_output_file
    from autojudge.toy.world import MAX_PROBLEMS

    check_number("--num", args.num, 0, MAX_PROBLEMS)
    check_number("--seed", args.seed, 0, SEED_MAX)
    check_output_file("--out", args.out)
    count = write_problems(args.num, args.seed, args.out)
    print(f"wrote {count} problems (seed {args.seed}) to {args.out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `toy` subcommand."""
    parser = subparsers.add_parser(
        "toy",
        help="built-in toy world: write problems, locate the shipped models",
        description="Write seeded toy-world problems (GSM8K format) as JSONL, or print the folder "
        "of the shipped toy target/draft model. Seeds: 0 = model training, 1 = mining, "
        "2 = held-out evaluation, 3 = quality bench.",
    )
    parser.add_argument("--num", type=int, default=100, help="number of problems to write (default 100)")
    parser.add_argument("--seed", type=int, default=1, help="world seed (default 1, the mining stream)")
    parser.add_argument("--out", type=Path, help="output JSONL file (records: id, question, answer)")
    parser.add_argument(
        "--model-path", choices=["target", "draft"], help="print the absolute folder of a shipped toy model and exit"
    )
    parser.set_defaults(func=run)
    return parser
