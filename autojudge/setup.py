"""One decoding setup from a command's options: the pair, the acceptance rule and its parameter,
the window and the budget, resolved and checked in one place.

Every command that decodes (`decode`, `eval`, `infer`, `serve`, `run`) and the benches turn
their options into a `DecodeSetup` with `resolve_setup(args)` (or `resolve(config)` from a
`DecodingConfig`). It checks the options, reads the judge folder once (when the command uses a
judge), the two tokenizers once and the two model configs once, and refuses a pair whose
tokenizers differ, a judge that does not fit the pair and a window or budget beyond the
models' context, all before any weights load. The setup keeps what it read:
`DecodeSetup.load_pair` loads the weights without reading a tokenizer again, and the judge is
the one object built from the files read. Its `config` is the `DecodingConfig` that decode
replicas, servers and pipelines are configured with (`actors/decoder.py`, `actors/server.py`,
`actors/engine_process.py`, `pipeline/mine.py`, `pipeline/run.py`), with the pair and the window filled in.

One default per concept, here: `DEFAULT_TARGET` / `DEFAULT_DRAFT`, `DEFAULT_WINDOW`,
`DEFAULT_MAX_NEW_TOKENS` and the rules' parameters. A preset may set other values explicitly
(`autojudge run`'s `toy` and `smollm2-gsm8k` presets, a bench's own settings).

Below the layers (like `checks`): torch-free at import; it loads tokenizers and configs through
`models` and the judge through `judge_format` / `judge` when called.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from autojudge.errors import InputError, ModelPairError

DEFAULT_TARGET = "toy:target"
"""Target model spec when none is given (and no judge names one): the shipped toy target."""
DEFAULT_DRAFT = "toy:draft"
"""Draft model spec when none is given (and no judge names one): the shipped toy draft."""

DEFAULT_WINDOW = 8
"""Draft tokens per target call when neither the options nor the judge name one. 8: on the toy
pair exact decoding reaches 5.6 tokens per target call at 8 (a longer window adds little once
most cycles end at a mismatch), and on SmolLM2 with its fitted draft acceptance is ~2.0 tokens
per call at 8 vs ~1.9 at 4 (docs/results). A judge carries the window its threshold was chosen
at, which wins over this default."""

DEFAULT_MAX_NEW_TOKENS = 256
"""Generation budget per prompt when none is given (decoding, mining, serving a request without
max_tokens). 256: long enough that a worked answer in the GSM8K format ends (toy answers take at
most ~92 tokens, most SmolLM2 GSM8K answers end within 160-256); a cut answer has no final answer
to score or to label (docs/design.md 1.4)."""

RULE_MODES = ("exact", "topk", "autojudge", "typical", "prob", "fly")
"""The acceptance rules (`decode.engine.acceptance.MODES`; repeated here so that `--help` needs no torch)."""
DEFAULT_TOP_K = 4
"""K of mode topk (`decode.engine.acceptance.build_rule`)."""
TYPICAL_EPSILON = 0.09
"""Epsilon of mode typical: Medusa's and vLLM's (`decode.engine.acceptance.TYPICAL_EPSILON`)."""
MIN_PROB = 0.3
"""Least target probability of a draft token in mode prob (`decode.engine.acceptance.build_rule`)."""
FLY_ENTROPY, FLY_WINDOW = 0.3, 6
"""FLy's defaults (`decode.engine.acceptance.FLY_ENTROPY`, `FLY_WINDOW`): the authors' shipped config."""


@dataclass(frozen=True)
class DecodingConfig:
    """The model pair and how a request decodes unless it says otherwise: what every decode
    replica, server and pipeline is configured with (`resolve` checks it and fills in the window)."""

    target: str = DEFAULT_TARGET
    """Target model spec: hub id, folder, .gguf, toy:target, smollm2:target; a suffix `@bf16` (or
    @fp16, @fp32) loads it in that dtype (`models.SPEC_DTYPES`), else float32 on a CPU, bfloat16 on a GPU."""
    draft: str = DEFAULT_DRAFT
    """Draft model spec (dtype suffix as the target's); must share the target's tokenizer."""
    same_pair: bool = False
    """The specs name the judge's models under other names (`--same-pair`): names are not compared."""
    judge: str | None = None
    """Judge folder from `autojudge train`: needed for mode autojudge; it must fit the pair."""
    mode: str = "exact"
    """Acceptance rule: exact | topk | autojudge | typical | prob | fly (`RULE_MODES`)."""
    threshold: float | None = None
    """The lossy rule's one number: autojudge tau (None: the judge's default), typical epsilon,
    prob least probability, fly entropy (None: the rule's default)."""
    top_k: int = DEFAULT_TOP_K
    """K of mode topk."""
    fly_window: int = FLY_WINDOW
    """Mode fly: the mismatch plus the draft tokens after it that must match."""
    window: int | None = None
    """Draft tokens per target call; None: the judge's window, else `DEFAULT_WINDOW`; 0: no speculation."""
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    """Generation budget per request."""

    def window_for(self, judge: Any = None) -> int:
        """The window this config decodes with: its own, else the one `judge` was chosen at, else `DEFAULT_WINDOW`."""
        return self.window if self.window is not None else default_window(judge)

    def request_fields(self) -> dict[str, Any]:
        """The fields of `decode.RequestSettings` this config sets (mode, threshold, top_k, fly_window,
        window, max_new_tokens): `RequestSettings(**config.request_fields(), stop_strings=...)`."""
        return {"mode": self.mode, "threshold": self.threshold, "top_k": self.top_k, "fly_window": self.fly_window,
                "window": self.window, "max_new_tokens": self.max_new_tokens}


@dataclass
class DecodeSetup:
    """A checked `DecodingConfig` (pair and window filled in) and what was read to check it, each once."""

    config: DecodingConfig
    """The config, checked; `window` is filled in (the options', else the judge's, else the default)."""
    tokenizer: Any
    """The target's tokenizer (the draft's is the same: checked)."""
    context: int
    """The shortest context length of the two models (from their configs)."""
    judge: Any = None
    """The judge (`autojudge.judge.Judge`) when the command uses one, built from the files read once."""

    @property
    def window(self) -> int:
        assert self.config.window is not None
        return self.config.window

    def load_pair(self, device: str = "cpu", dtype: Any = None) -> Any:
        """The loaded `models.ModelPair` (weights only: the tokenizer is the one read already); the
        judge, if any, is checked against the loaded models (`--same-pair` honoured)."""
        from autojudge.models import load_pair

        pair = load_pair(self.config.target, self.config.draft, device=device, dtype=dtype, tokenizer=self.tokenizer)
        if self.judge is not None:
            self.judge.check_model_pair(pair, self.config.same_pair)
        return pair


# --------------------------------------------------------------------------- options


def rule_parameter(args: Any) -> float | None:
    """The lossy rule's one number of a command's options (`DecodingConfig.threshold`): tau,
    epsilon, least probability or FLy entropy, by --mode."""
    mode = getattr(args, "mode", "exact")
    named = {"typical": "epsilon", "prob": "min_prob", "fly": "fly_entropy"}
    if mode in named and hasattr(args, named[mode]):
        return getattr(args, named[mode])
    return getattr(args, "threshold", None)


def check_rule_arguments(args: Any) -> None:
    """One-line errors for the rule options of a command that declares them all (`commands.add_rule_arguments`),
    named by the option: --threshold is a judge threshold in [0, 1] in any mode, --epsilon and --min-prob
    lie in (0, 1] in their modes (FLy's options: `check_config`)."""
    from autojudge.checks import check_threshold

    check_threshold("--threshold", getattr(args, "threshold", None))
    if args.mode == "typical" and not 0.0 < args.epsilon <= 1.0:
        raise InputError(f"--epsilon must be in (0, 1], got {args.epsilon}")
    if args.mode == "prob" and not 0.0 < args.min_prob <= 1.0:
        raise InputError(f"--min-prob must be in (0, 1], got {args.min_prob}")


def check_config(config: DecodingConfig, least_window: int = 1, budget_option: str = "--max-new-tokens") -> None:
    """The config's own ranges (no file read): a known mode with a judge for autojudge, tau in
    [0, 1], K and the budget >= 1, the window >= `least_window` (0 where no speculation is allowed)."""
    from autojudge import checks

    if config.mode not in RULE_MODES:
        raise InputError(f"unknown --mode {config.mode!r}; choose from {', '.join(RULE_MODES)}")
    if config.mode == "autojudge" and not config.judge:
        raise InputError("mode autojudge needs --judge JUDGE_DIR (from `autojudge train`)")
    if config.mode == "autojudge":
        checks.check_threshold("--threshold", config.threshold)
    elif config.threshold is not None:
        checks.check_number("--threshold", config.threshold)
    checks.check_number("--top-k", config.top_k, 1)
    checks.check_number(budget_option, config.max_new_tokens, 1)
    checks.check_number("--window", config.window, least_window)
    if config.mode == "fly":
        checks.check_fly_parameters([] if config.threshold is None else [config.threshold], config.fly_window, config.window)


def config_from_args(args: Any, judge_pair: dict[str, Any] | None = None, budget: str = "max_new_tokens") -> DecodingConfig:
    """The `DecodingConfig` of a command's options (argparse dests: target, draft, same_pair, judge,
    mode with threshold or the rule's own option, top_k and fly_window, window, `budget`). An option
    the command lacks or was not given takes its default; the rule options count only for a command
    with --mode (eval's are sweeps); a pair not given is the judge's (`judge_pair`, judge.json's
    "pair"), else the default pair; a window of 'auto' counts as not given."""
    def given(name: str, default: Any) -> Any:
        value = getattr(args, name, None)
        return default if value is None else value

    pair = judge_pair or {}
    window = getattr(args, "window", None)
    rule: dict[str, Any] = {}
    if hasattr(args, "mode"):
        rule = {"mode": given("mode", "exact"), "threshold": rule_parameter(args), "top_k": given("top_k", DEFAULT_TOP_K),
                "fly_window": given("fly_window", FLY_WINDOW)}
    return DecodingConfig(
        target=getattr(args, "target", None) or pair.get("target_id") or DEFAULT_TARGET,
        draft=getattr(args, "draft", None) or pair.get("draft_id") or DEFAULT_DRAFT,
        same_pair=bool(getattr(args, "same_pair", False)), judge=getattr(args, "judge", None) or None,
        window=window if isinstance(window, int) else None, max_new_tokens=given(budget, DEFAULT_MAX_NEW_TOKENS), **rule,
    )


# --------------------------------------------------------------------------- resolving


def resolve_setup(args: Any, *, judge_any_mode: bool = False, least_window: int = 1, budget: str = "max_new_tokens",
                  device: str = "cpu") -> DecodeSetup:
    """The checked setup of a command's options (see `config_from_args`), each file read once.

    `judge_any_mode`: the command uses `--judge` whatever the mode (eval's sweep, serve's per-request
    modes); else only in mode autojudge (the judge is dropped otherwise). `least_window`: the
    smallest window the command accepts. `budget`: the argparse dest of the budget option
    (serve's is `max_tokens`). `device`: where the models will run (a `@bf16` spec on a CPU
    without bfloat16 instructions is refused)."""
    budget_option = "--" + budget.replace("_", "-")
    if hasattr(args, "epsilon"):  # the options of `commands.add_rule_arguments`
        check_rule_arguments(args)
    config = config_from_args(args, budget=budget)
    uses_judge = bool(config.judge) and (judge_any_mode or config.mode == "autojudge")
    if not uses_judge:
        config = replace(config, judge=None)
    check_config(config, least_window, budget_option)
    files = None
    if uses_judge:
        from autojudge.judge_format import read_judge_folder

        files = read_judge_folder(config.judge)  # the one read of the judge folder
        if not (getattr(args, "target", None) and getattr(args, "draft", None)):
            config = config_from_args(args, files.meta["pair"], budget=budget)
    return _resolve(config, files, budget_option, device)


def resolve(config: DecodingConfig, *, least_window: int = 1, budget_option: str = "--max-new-tokens",
            device: str = "cpu") -> DecodeSetup:
    """The checked setup of a `DecodingConfig` (a library caller's `resolve_setup`): the judge,
    when the config names one, is read and checked against the pair whatever the mode."""
    check_config(config, least_window, budget_option)
    files = None
    if config.judge:
        from autojudge.judge_format import read_judge_folder

        files = read_judge_folder(config.judge)
    return _resolve(config, files, budget_option, device)


def _resolve(config: DecodingConfig, files: Any, budget_option: str, device: str) -> DecodeSetup:
    """Tokenizers and configs read once; the pair, the judge against it, the window and the budget checked."""
    from autojudge import checks
    from autojudge.models import check_same_tokenizer, context_length, load_text_config, load_tokenizer, tokenizer_fingerprint

    for name, spec in (("--target", config.target), ("--draft", config.draft)):
        checks.check_spec_precision(name, spec, device)
    try:
        tokenizer = load_tokenizer(config.target)
        check_same_tokenizer(tokenizer, load_tokenizer(config.draft), config.target, config.draft)
    except ModelPairError as err:
        raise InputError(f"cannot use --target {config.target} / --draft {config.draft}: {err}") from None
    model_configs = [load_text_config(spec) for spec in (config.target, config.draft)]
    context = min(context_length(model_config) for model_config in model_configs)
    judge = None
    if files is not None:
        from autojudge.judge import Judge

        judge = Judge.from_files(files)
        try:  # from the tokenizer and the configs: no weights yet
            judge.check_pair(config.target, config.draft, tokenizer_fingerprint(tokenizer),
                             int(model_configs[0].hidden_size), int(model_configs[1].hidden_size), config.same_pair)
        except ModelPairError as err:
            raise InputError(str(err)) from None
    window = config.window_for(judge)
    from_judge = config.window is None and judge is not None and bool(judge.default_window)
    window_name = f"the default_window of --judge {config.judge} (used when --window is not given)" if from_judge else "--window"
    checks.check_within_context([(budget_option, config.max_new_tokens), (window_name, window)], context)
    return DecodeSetup(replace(config, window=window), tokenizer, context, judge)


def default_window(judge: Any = None) -> int:
    """The window to decode with when none is given: the one the judge's default threshold was
    chosen at (`autojudge run`, `autojudge eval --set-default`), else `DEFAULT_WINDOW`."""
    return judge.default_window if judge is not None and judge.default_window else DEFAULT_WINDOW

