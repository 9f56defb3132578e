"""CLI subcommands, one module per stage (see autojudge/cli.py)."""

from typing import Any

RULE_MODES = ("exact", "topk", "autojudge", "typical", "prob", "fly")
"""The acceptance rules a command may name (`decode.engine.acceptance.MODES`; kept here so `--help` needs no torch)."""
FLY_ENTROPY, FLY_WINDOW = 0.3, 6
"""FLy's defaults (`decode.engine.acceptance.FLY_ENTROPY`, `FLY_WINDOW`): the authors' shipped config."""


def add_rule_arguments(parser: Any, default_window_help: str = "the judge's window in mode autojudge, else 8") -> None:
    """--mode, --judge and every rule's parameter, declared once for the commands that decode (decode, infer)."""
    parser.add_argument(
        "--mode", choices=RULE_MODES, default="exact",
        help="acceptance rule: exact (lossless), topk (draft token in target's top-K), autojudge (trained judge), "
        "typical (training-free typical acceptance: p_T(token) > min(epsilon, sqrt(epsilon) * exp(-entropy))), "
        "prob (training-free: p_T(token) >= --min-prob), fly (training-free FLy: a mismatch where the target's "
        "top-3 entropy >= --fly-entropy, followed by --fly-window - 1 matching draft tokens)",
    )
    parser.add_argument("--judge", metavar="JUDGE_DIR", help="judge folder from `autojudge train` (mode autojudge)")
    parser.add_argument("--threshold", type=float, metavar="TAU",
                        help="judge threshold: accept a mismatch when p(important) < TAU (default: the judge's default)")
    parser.add_argument("--top-k", type=int, default=4, help="K of mode topk (default 4)")
    parser.add_argument("--epsilon", type=float, default=0.09,
                        help="mode typical: posterior threshold epsilon (default 0.09, Medusa's and vLLM's; delta = sqrt(epsilon))")
    parser.add_argument("--min-prob", type=float, default=0.3, help="mode prob: least target probability of a draft token (default 0.3)")
    parser.add_argument("--fly-entropy", type=float, default=FLY_ENTROPY,
                        help=f"mode fly: least top-3 entropy (nats) of the target at a mismatch it may accept (default {FLY_ENTROPY})")
    parser.add_argument("--fly-window", type=int, default=FLY_WINDOW,
                        help=f"mode fly: the mismatch plus the draft tokens after it that must match (default {FLY_WINDOW}; "
                        "needs a --window larger than it)")


def check_rule_arguments(args: Any) -> None:
    """One-line errors for a rule parameter out of range (before any model loads)."""
    from autojudge.errors import InputError

    if args.mode == "typical" and not 0.0 < args.epsilon <= 1.0:
        raise InputError(f"--epsilon must be in (0, 1], got {args.epsilon}")
    if args.mode == "prob" and not 0.0 < args.min_prob <= 1.0:
        raise InputError(f"--min-prob must be in (0, 1], got {args.min_prob}")
    if args.mode == "fly":
        from autojudge.checks import check_fly_parameters

        check_fly_parameters([args.fly_entropy], args.fly_window, getattr(args, "window", None))


def rule_parameter(args: Any) -> float | None:
    """The lossy rule's one number for `RequestSettings.threshold`: tau, epsilon, least probability or FLy entropy."""
    return {"typical": args.epsilon, "prob": args.min_prob, "fly": args.fly_entropy}.get(args.mode, args.threshold)
