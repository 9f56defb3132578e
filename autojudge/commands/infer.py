"""`autojudge infer`: batch speculative decoding of a corpus with Ray Data (one row in, one row out)."""

from __future__ import annotations

import argparse

from autojudge.commands import add_budget_argument, add_pair_arguments, add_rule_arguments, add_window_argument


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from autojudge.ray_utils import add_ray_arguments

    parser = subparsers.add_parser(
        "infer",
        help="batch inference over a corpus with Ray Data (JSONL/Parquet in, Parquet out)",
        description=(
            "Read a corpus (JSONL or Parquet, a file or folder, local or any pyarrow filesystem URI such as "
            "s3://bucket/corpus/) with Ray Data, decode every row on a pool of decode actors (each loads the "
            "target/draft pair once; GPUs per actor is a setting) and write Parquet to --output: id, source, "
            "text, token_ids, per-row stats (new_tokens, target_calls, draft_calls, tokens_per_target_call, "
            "accepted_lengths, wall_s, replica) and error. Rows are 'question' (formatted by --task) or "
            "'prompt' (raw text). A bad row (not JSON, no question/prompt, empty, too long, decode failure) "
            "is written with its error instead of failing the job. OUTPUT/_summary.json holds the totals."
        ),
    )
    parser.add_argument("--input", required=True, metavar="CORPUS", help="corpus file/folder/URI (.jsonl[.gz] or .parquet)")
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder/URI for Parquet shards")
    parser.add_argument("--input-format", choices=["auto", "jsonl", "parquet"], default="auto", help="default: by extension")
    add_pair_arguments(parser, judge=True)
    add_rule_arguments(parser)
    add_window_argument(parser)
    add_budget_argument(parser)
    parser.add_argument("--max-prompt-tokens", type=int, default=None, help="longer prompts become error rows")
    parser.add_argument("--task", default="gsm8k", help="task that formats 'question' rows (default gsm8k)")
    parser.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per actor call / engine batch (default 16)")
    parser.add_argument("--num-replicas", type=int, default=1, help="decode actors (default 1; e.g. one per GPU)")
    parser.add_argument("--num-gpus-per-replica", type=float, default=0.0, help="GPUs per actor (default 0 = CPU)")
    parser.add_argument("--num-cpus-per-replica", type=float, default=1.0, help="CPUs per actor (default 1)")
    parser.add_argument("--device", default="auto", help="torch device per actor (auto: cuda if it has a GPU)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster, when one is started")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    add_ray_arguments(parser)
    parser.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> "DecodeSetup":  # noqa: F821 - lazy import
    """Everything that can be refused before Ray or a model starts (autojudge.checks): options, the
    corpus, the output, the cluster address, then the decoding setup (`setup.resolve_setup`: the
    pair's tokenizers and the judge, read once, and the judge against the pair)."""
    from autojudge import checks
    from autojudge.pipeline.infer import check_corpus, check_output_overwrite
    from autojudge.ray_utils import check_cluster_address
    from autojudge.setup import resolve_setup

    checks.check_options(args, at_least_1=["max_prompt_tokens", "batch_size", "num_replicas", "num_cpus"],
                         at_least_0=["num_gpus_per_replica", "num_cpus_per_replica"])
    checks.check_stop_strings("--stop", args.stop)
    check_corpus(args.input, args.input_format)
    checks.check_output_dir("--output", args.output)
    checks.check_not_inside("--output", args.output, "--input", args.input)
    if args.overwrite:
        check_output_overwrite(args.output)
    check_cluster_address(args.address)
    return resolve_setup(args)


def run(args: argparse.Namespace) -> int:
    setup = check_args(args)  # before the heavy imports and any work
    from autojudge.pipeline.infer import DecodeStageConfig, InferConfig, run_infer

    stage = DecodeStageConfig(
        decoding=setup.config, task=args.task, stop=tuple(args.stop), max_prompt_tokens=args.max_prompt_tokens,
        device=args.device,
    )
    config = InferConfig(
        input=args.input, output=args.output, stage=stage, input_format=args.input_format,
        batch_size=args.batch_size, num_replicas=args.num_replicas, num_gpus_per_replica=args.num_gpus_per_replica,
        num_cpus_per_replica=args.num_cpus_per_replica, overwrite=args.overwrite, address=args.address,
        local_cpus=args.num_cpus,
    )
    summary = run_infer(config, setup)
    print(
        f"infer: {summary['rows']} rows ({summary['errors']} with errors, {summary['unique_ids']} unique ids) in "
        f"{summary['wall_s']:.1f} s = {summary['rows_per_s']:.2f} rows/s, {summary['tokens_per_s']:.1f} tokens/s, "
        f"{summary['tokens_per_target_call']:.2f} tokens/target call; replicas {summary['rows_per_replica']}; "
        f"wrote {args.output}"
    )
    return 0
