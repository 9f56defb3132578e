"""`autojudge mine`: mine AutoJudge labels (semi-greedy search) into Parquet shards."""

from __future__ import annotations

import argparse

from autojudge.commands import add_budget_argument, add_pair_arguments, options_for
from autojudge.ray_utils import add_ray_arguments
from autojudge.tasks import add_task_arguments


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "mine",
        help="mine important/unimportant mismatch labels with features (resumable)",
        description=(
            "Run the semi-greedy label search (docs/design.md 1.1) of a target/draft pair over a task's prompts "
            "on Ray actors. Writes DIR/labels/*.parquet, DIR/responses/*.parquet and DIR/manifest.json; "
            "running the same command again on DIR skips finished prompts."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_task_arguments(parser)
    parser.add_argument("--input", default=None, help="prompt JSONL (id + question or prompt); toy generates problems if absent")
    parser.add_argument("--limit", type=int, default=None, help="mine at most N prompts (toy default without --input: 200)")
    add_pair_arguments(parser, required=True)
    parser.add_argument("--out", required=True, help="output folder (resumed if it exists)")
    parser.add_argument("--workers", type=int, default=1, help="Ray actors, one model replica each (0: no Ray, this process)")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per actor (0 on CPU machines)")
    parser.add_argument("--cpus-per-worker", type=int, default=1, help="CPUs (and torch threads) per actor")
    parser.add_argument("--finished-only", action="store_true",
                        help="mine only problems whose target answer ends (EOS) within the budget; the others get a "
                        "'not mined' response row (a cut or looping answer has no final answer to keep)")
    parser.add_argument("--batch-size", type=int, default=64, help="searches in flight per replica (default 64: wide forwards are where mining gets cheap)")
    add_budget_argument(parser, what="response budget per prompt")
    parser.add_argument("--method", default="fast", choices=["fast", "plain"], help="fast miner or the plain reference algorithm")
    parser.add_argument("--chunk-size", type=int, default=0, help="prompts per actor task and per shard (0: 2 x batch size)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_ray_arguments(parser)
    parser.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> "DecodingConfig":  # noqa: F821 - lazy import
    """Everything that can be refused before a model or a cluster starts (autojudge.checks); returns the
    checked pair and budget (`setup.resolve_setup`)."""
    from autojudge import checks
    from autojudge.ray_utils import check_cluster_address

    checks.check_options(args, at_least_1=["limit", "cpus_per_worker", "batch_size"],
                         at_least_0=["workers", "gpus_per_worker", "chunk_size"], seeds=["seed"])
    if args.workers == 0:  # mining in this process: --cpus-per-worker is its torch threads
        checks.check_options(args, threads=["cpus_per_worker"])
    checks.check_input_file("--input", args.input)
    checks.check_output_dir("--out", args.out)
    from pathlib import Path

    from autojudge.pipeline.mine import resume_settings
    from autojudge.pipeline.shards import check_no_writer

    check_no_writer(args.out)  # another `mine` on this folder (mine() holds the lock itself while it writes)
    resume_settings(Path(args.out))  # a corrupt manifest is refused before anything loads
    if args.workers > 0:
        from autojudge.pipeline.mine import RESOURCE_ADVICE
        from autojudge.ray_utils import check_actor_resources

        check_cluster_address(args.address)
        check_actor_resources("mining workers", args.workers, args.cpus_per_worker, args.gpus_per_worker, args.address,
                              advice=RESOURCE_ADVICE)
    from autojudge.setup import resolve_setup

    return resolve_setup(args).config  # the pair's tokenizers, the budget within the models' context


def run(args: argparse.Namespace) -> int:
    decoding = check_args(args)  # before the heavy imports and any work
    from autojudge.pipeline.mine import MineConfig, mine

    config = MineConfig(**options_for(MineConfig, args), decoding=decoding, progress=not args.no_progress)
    out = mine(config)
    from autojudge.pipeline.shards import read_manifest

    counts = read_manifest(out)["counts"]
    print(
        f"mined {counts['prompts']} prompts in {out}: {counts['labels']} labels, "
        f"{counts['important']} important, {counts['errors']} errors"
    )
    return 0
