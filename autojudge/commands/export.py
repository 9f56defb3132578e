"""`autojudge export`: a mining folder as a Hugging Face dataset (Parquet + card), optionally pushed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export mined labels as a Hugging Face dataset (and push it to the Hub)",
        description=(
            "Build a Hugging Face `datasets` dataset from a mining folder: config `labels` (one row per "
            "mismatch: token ids, ClassLabel `important`, hidden-state features) and config `responses` "
            "(one row per prompt), split train/validation by prompt, typed Features, and a dataset card "
            "(README.md with license, models, counts, label balance, mining settings). Written as Parquet in "
            "the Hub layout, so `datasets.load_dataset(OUT)` loads it. --push uploads it with $HF_TOKEN; a "
            "failed push leaves the local export intact."
        ),
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="mining output folder (from `autojudge mine`)")
    parser.add_argument("--out", required=True, metavar="OUT", help="folder to write the dataset into")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of prompts in the validation split")
    parser.add_argument("--license", default="mit", help="license id for the card (match your prompts' and models' terms)")
    parser.add_argument("--name", default=None, help="human title of the dataset (card's pretty_name)")
    parser.add_argument("--max-shard-rows", type=int, default=100_000, help="rows per Parquet file")
    parser.add_argument("--save-to-disk", action="store_true", help="also write Dataset.save_to_disk copies")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--no-text", action="store_true",
                        help="no decoded text columns (by default the target's tokenizer decodes the tokens and a context)")
    parser.add_argument("--context-tokens", type=int, default=24, help="tokens of decoded context before each position")
    parser.add_argument("--push", action="store_true", help="upload to the Hugging Face Hub (needs --repo-id, HF_TOKEN)")
    parser.add_argument("--repo-id", default=None, metavar="ORG/NAME", help="Hub dataset repository for --push")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    parser.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> None:
    """Everything that can be refused before reading the data (autojudge.checks)."""
    from autojudge import checks
    from autojudge.pipeline.dataset import read_manifest
    from autojudge.pipeline.export import is_export_entry
    from autojudge.pipeline.shards import require_manifest

    checks.check_options(args, at_least_1=["max_shard_rows"])
    checks.check_number("--val-fraction", args.val_fraction, 0.0, 1.0, high_open=True)
    checks.check_input_dir("--data", args.data)
    checks.check_not_inside("--out", args.out, "--data", args.data)
    checks.check_output_dir("--out", args.out)
    if args.overwrite:
        checks.check_overwrite("--out", args.out, is_export_entry, "`autojudge export`")
    require_manifest(args.data)
    checks.warn_if_mining_running("export", read_manifest(args.data), args.data)
    if args.push:  # the repository id and the token before the (long) export
        from autojudge.pipeline.export import check_push

        check_push(args.repo_id)


def run(args: argparse.Namespace) -> int:
    check_args(args)  # before the heavy imports and any work
    from autojudge.pipeline.export import ExportConfig, export_dataset, is_export
    from autojudge.errors import InputError

    if args.push and not args.overwrite and is_export(Path(args.out)):
        print(f"{args.out} already holds an export: pushing it as it is (--overwrite exports again first)")
        return push(Path(args.out), args.repo_id, args.private)
    config = ExportConfig(
        data=Path(args.data), out=Path(args.out), val_fraction=args.val_fraction, license=args.license,
        pretty_name=args.name, max_shard_rows=args.max_shard_rows, save_to_disk=args.save_to_disk,
        overwrite=args.overwrite, readable=not args.no_text, context_tokens=args.context_tokens,
    )
    if args.context_tokens < 1:
        raise InputError(f"--context-tokens must be >= 1, got {args.context_tokens}")
    result = export_dataset(config)
    counts = result.counts
    print(
        f"exported {counts['labels']['total']} labels ({counts['important']} important) from "
        f"{counts['prompts']} prompts to {result.out}/ "
        + ", ".join(f"{name}: {splits}" for name, splits in counts["splits"].items())
        + f"; decoded text columns: {counts['readable']}"
    )
    return push(result.out, args.repo_id, args.private) if args.push else 0


def push(out: Path, repo_id: str, private: bool) -> int:
    """Push an export folder; a failed push is one line and exit status 1 (the export stays)."""
    from autojudge.pipeline.export import ExportError, push_export

    try:
        url = push_export(out, repo_id, private=private)
    except ExportError as err:
        print(f"autojudge export: error: {err}", file=sys.stderr)
        return 1
    print(f"pushed to {url}")
    return 0
