"""`autojudge infer`: batch speculative decoding of a corpus with Ray Data (one row in, one row out)."""

from __future__ import annotations

import argparse


from autojudge.commands import add_rule_arguments, check_rule_arguments


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from autojudge.checks import add_same_pair_argument
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
    parser.add_argument("--target", default="toy:target", help="target model spec (default toy:target)")
    parser.add_argument("--draft", default="toy:draft", help="draft model spec (default toy:draft)")
    add_rule_arguments(parser)
    add_same_pair_argument(parser)
    parser.add_argument("--window", type=int, default=None, metavar="K",
                        help="draft tokens per target call (default: the judge's window in mode autojudge, else 8)")
    parser.add_argument("--max-new-tokens", type=int, default=256, metavar="L", help="generation budget (default 256)")
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


def check_args(args: argparse.Namespace) -> None:
    """Everything that can be refused before Ray or a model starts (autojudge.checks): options, the
    corpus, the output, the cluster address, the pair's tokenizers and the judge against the pair."""
    from autojudge import checks
    from autojudge.pipeline.infer import check_corpus, check_output_overwrite
    from autojudge.ray_utils import check_cluster_address

    checks.check_options(args, at_least_1=["window", "max_new_tokens", "max_prompt_tokens", "batch_size",
                                           "num_replicas", "top_k", "num_cpus"],
                         at_least_0=["num_gpus_per_replica", "num_cpus_per_replica"], thresholds=["threshold"])
    check_rule_arguments(args)
    checks.check_stop_strings("--stop", args.stop)
    if args.mode == "autojudge" and not args.judge:
        raise checks.InputError("mode autojudge needs --judge JUDGE_DIR (from `autojudge train`)")
    if args.mode == "autojudge":
        from autojudge.judge_format import check_judge_folder

        check_judge_folder(args.judge)
    check_corpus(args.input, args.input_format)
    checks.check_output_dir("--output", args.output)
    checks.check_not_inside("--output", args.output, "--input", args.input)
    if args.overwrite:
        check_output_overwrite(args.output)
    check_cluster_address(args.address)
    checks.check_pair_tokenizers(args.target, args.draft)
    checks.check_decode_lengths(checks.context_of_specs(args.target, args.draft), args.window, args.max_new_tokens,
                                args.judge if args.mode == "autojudge" else None)
    if args.mode == "autojudge":
        from autojudge.judge import Judge, check_judge_for_specs

        check_judge_for_specs(Judge.load(args.judge), args.target, args.draft, args.same_pair)


def run(args: argparse.Namespace) -> int:
    check_args(args)  # before the heavy imports and any work
    from autojudge.pipeline.infer import DecodeStageConfig, InferConfig, run_infer
    from autojudge.judge import Judge, default_window

    if args.window is None:
        args.window = default_window(Judge.load(args.judge) if args.mode == "autojudge" and args.judge else None)

    stage = DecodeStageConfig(
        target=args.target, draft=args.draft, mode=args.mode, judge=args.judge, threshold=args.threshold,
        top_k=args.top_k, epsilon=args.epsilon, min_prob=args.min_prob, fly_entropy=args.fly_entropy,
        fly_window=args.fly_window, window=args.window, max_new_tokens=args.max_new_tokens, task=args.task,
        stop=tuple(args.stop), max_prompt_tokens=args.max_prompt_tokens, device=args.device, same_pair=args.same_pair,
    )
    config = InferConfig(
        input=args.input, output=args.output, stage=stage, input_format=args.input_format,
        batch_size=args.batch_size, num_replicas=args.num_replicas, num_gpus_per_replica=args.num_gpus_per_replica,
        num_cpus_per_replica=args.num_cpus_per_replica, overwrite=args.overwrite, address=args.address,
        local_cpus=args.num_cpus,
    )
    summary = run_infer(config)
    print(
        f"infer: {summary['rows']} rows ({summary['errors']} with errors, {summary['unique_ids']} unique ids) in "
        f"{summary['wall_s']:.1f} s = {summary['rows_per_s']:.2f} rows/s, {summary['tokens_per_s']:.1f} tokens/s, "
        f"{summary['tokens_per_target_call']:.2f} tokens/target call; replicas {summary['rows_per_replica']}; "
        f"wrote {args.output}"
    )
    return 0
