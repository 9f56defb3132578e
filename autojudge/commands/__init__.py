"""CLI subcommands, one module per stage (see autojudge/cli.py), and the options and steps they share.

The pair (`--target`, `--draft`, `--same-pair`), the acceptance rule (`--mode` and its
parameters), the window and the budget are declared here once; their defaults and how they
resolve into a checked decoding setup live in `autojudge.setup` (`resolve_setup`). The task
options are `autojudge.tasks.add_task_arguments`, the cluster's `ray_utils.add_ray_arguments`.
`load_pair` loads a checked setup's pair for the commands that decode in their own process (decode, eval).
"""

from typing import Any

from autojudge.checks import add_same_pair_argument
from autojudge.setup import (  # noqa: F401 - FLY_ENTROPY, RULE_MODES: the torch-free copies, re-exported
    DEFAULT_DRAFT, DEFAULT_MAX_NEW_TOKENS, DEFAULT_TARGET, DEFAULT_TOP_K, DEFAULT_WINDOW, FLY_ENTROPY, FLY_WINDOW, MIN_PROB,
    RULE_MODES, TYPICAL_EPSILON,
)

SPEC_HELP = "a model folder, a Hugging Face id, a .gguf file, toy:{which} or smollm2:{which}; @bf16 picks the dtype"


def add_pair_arguments(parser: Any, judge: bool = False, required: bool = False, default: str | None = None) -> None:
    """`--target` and `--draft` (and with `judge`, `--same-pair`). Not given, they are None and
    `setup.resolve_setup` takes the judge's pair, else the toy pair; `default` words the help
    (`{which}`: target or draft, `{fallback}`: the default spec)."""
    for which, fallback in (("target", DEFAULT_TARGET), ("draft", DEFAULT_DRAFT)):
        shown = (default or ("the judge's {which}, else {fallback}" if judge else "{fallback}")).format(which=which, fallback=fallback)
        parser.add_argument(f"--{which}", default=None, required=required, metavar="SPEC",
                            help=f"{which} model spec: {SPEC_HELP.format(which=which)}"
                                 + ("" if required else f" (default: {shown})"))
    if judge:
        add_same_pair_argument(parser)


def add_rule_arguments(parser: Any) -> None:
    """--mode, --judge and every rule's parameter, declared once for the commands that decode with one rule (decode, infer)."""
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
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help=f"K of mode topk (default {DEFAULT_TOP_K})")
    parser.add_argument("--epsilon", type=float, default=TYPICAL_EPSILON,
                        help=f"mode typical: posterior threshold epsilon (default {TYPICAL_EPSILON}, Medusa's and vLLM's; "
                        "delta = sqrt(epsilon))")
    parser.add_argument("--min-prob", type=float, default=MIN_PROB,
                        help=f"mode prob: least target probability of a draft token (default {MIN_PROB})")
    parser.add_argument("--fly-entropy", type=float, default=FLY_ENTROPY,
                        help=f"mode fly: least top-3 entropy (nats) of the target at a mismatch it may accept (default {FLY_ENTROPY})")
    add_fly_window_argument(parser)


def add_fly_window_argument(parser: Any, default: int | None = FLY_WINDOW) -> None:
    """`--fly-window`: FLy's window (the mismatch plus the draft tokens after it that must match)."""
    parser.add_argument("--fly-window", type=int, default=default,
                        help=f"mode fly: the mismatch plus the draft tokens after it that must match (default {FLY_WINDOW}; "
                        "needs a --window larger than it)")


def add_window_argument(parser: Any, default_help: str = f"the judge's window in mode autojudge, else {DEFAULT_WINDOW}",
                        type: Any = int, extra_help: str = "") -> None:
    """`--window K` (None when not given: `setup` takes the judge's window, else `DEFAULT_WINDOW`)."""
    parser.add_argument("--window", type=type, default=None, metavar="K",
                        help=f"draft tokens per target call (default: {default_help}){extra_help}")


def add_budget_argument(parser: Any, option: str = "--max-new-tokens", what: str = "generation budget",
                        default: int | None = DEFAULT_MAX_NEW_TOKENS, default_help: str | None = None) -> None:
    """The budget option (`setup.DEFAULT_MAX_NEW_TOKENS` unless a command with presets defaults it to None)."""
    parser.add_argument(option, type=int, default=default, metavar="L",
                        help=f"{what} (default {default_help or default})")


def options_for(config_class: Any, args: Any) -> dict[str, Any]:
    """The options of `args` named like fields of the dataclass `config_class` (argparse dest = field name)."""
    import dataclasses

    return {field.name: getattr(args, field.name) for field in dataclasses.fields(config_class) if hasattr(args, field.name)}


def load_pair(setup: Any, device: str, threads: int | None = None) -> Any:
    """The checked setup's loaded pair (`setup.DecodeSetup.load_pair`), torch's CPU threads set first
    when `threads` is given; a pair that cannot load is the user's input error (`InputError`)."""
    import torch

    from autojudge.errors import InputError, ModelPairError

    if threads:
        torch.set_num_threads(threads)
    try:
        return setup.load_pair(device=device)
    except ModelPairError as err:
        raise InputError(str(err)) from None
