"""`autojudge run`: the main job (mine, train, choose threshold, evaluate) on the toy world or GSM8K.

`--preset smollm2-gsm8k` fills in the real-model run (SmolLM2 pair, GSM8K files, agreement
as quality measure, the training-free baselines and the extra judges); any flag given
explicitly overrides the preset. Flags default to None here so that a preset can tell
"not given" from "given the default value".
"""

from __future__ import annotations

import argparse

from autojudge.commands import add_budget_argument, add_fly_window_argument, add_pair_arguments, add_window_argument
from autojudge.pipeline.run import TOY_RUN

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="main job: mine, train and evaluate (toy world, or GSM8K with a real pair)",
        description=(
            "End to end on the built-in toy world with the shipped toy:target / toy:draft pair: mine labels and "
            "features (seed 1), train the judge, choose its threshold on unseen seed-1 problems, and evaluate "
            "exact / topk / autojudge on held-out seed-2 problems. Writes a run folder with the labels, the "
            "judge, report.md, metrics.json and pareto.png. Defaults take a few minutes on 2 CPU cores. "
            "With --task gsm8k (or --preset smollm2-gsm8k) the same on GSM8K train/test files; rerunning "
            "the same command on the same --out resumes."
        ),
    )
    from autojudge.pipeline.run import RunConfig

    defaults = RunConfig()
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help=f"named settings; explicit flags override them (default {DEFAULT_PRESET}). "
                        + "; ".join(f"{name}: " + ", ".join(f"{k}={v}" for k, v in preset.items() if k not in ("train_input", "test_input"))
                                    for name, preset in sorted(PRESETS.items())))
    parser.add_argument("--task", choices=["toy", "gsm8k"], default=None, help="toy (default) or gsm8k")
    parser.add_argument("--train-input", metavar="FILE", default=None,
                        help="task gsm8k: train JSONL (mined problems, then selection problems)")
    parser.add_argument("--train-offset", type=int, default=None,
                        help="task gsm8k: train problems skipped first (default 0; the preset skips those the draft was fitted on)")
    parser.add_argument("--test-input", metavar="FILE", default=None, help="task gsm8k: held-out test JSONL")
    parser.add_argument("--instruction", default=None, help="task gsm8k: text appended to every question")
    parser.add_argument("--shots", type=int, default=None,
                        help="task gsm8k: the train file's first N solved problems as earlier chat turns (few-shot; default 0)")
    parser.add_argument("--quality", choices=["accuracy", "agreement"], default=None,
                        help="what the chosen tau may lose --max-drop points of: accuracy (ground truth, default) or "
                        "agreement (same final answer as the target's own greedy decoding)")
    parser.add_argument("--typical-epsilons", type=_float_list, default=None, metavar="E,E",
                        help="epsilons of the training-free typical-acceptance baseline on the test curve ('' for none)")
    parser.add_argument("--min-probs", type=_float_list, default=None, metavar="P,P",
                        help="thresholds of the training-free prob baseline on the test curve ('' for none)")
    parser.add_argument("--fly-entropies", type=_float_list, default=None, metavar="H,H",
                        help="entropy thresholds (nats) of the training-free FLy baseline on the test curve ('' for none)")
    add_fly_window_argument(parser, default=None)
    parser.add_argument("--extra-judges", type=_str_list, default=None, metavar="MODEL:FEATURES,...",
                        help="other judges on the test curve, e.g. lightgbm:DD-DT,logreg:DT ('' for none)")
    parser.add_argument("--out", metavar="DIR", help="run folder (default runs/<timestamp>)")
    parser.add_argument("--mine-problems", type=int, default=None,
                        help=f"seed-1 problems to mine (default {defaults.mine_problems})")
    parser.add_argument("--select-problems", type=int, default=None,
                        help=f"seed-1 problems after the mined ones to choose tau on (default {defaults.select_problems})")
    parser.add_argument("--test-problems", type=int, default=None,
                        help=f"held-out seed-2 problems (default {defaults.test_problems})")
    add_window_argument(parser, default_help=f"the preset's; {DEFAULT_PRESET}: {PRESETS[DEFAULT_PRESET]['window']}",
                        extra_help="; in selection and evaluation, every mode")
    parser.add_argument("--compare-windows", type=_int_list, default=None, metavar="K,K",
                        help="other windows at which exact and the chosen tau also run on the test problems "
                        f"(default {','.join(map(str, defaults.compare_windows))}; '' for none)")
    add_budget_argument(parser, what="generation budget per problem, mining and decoding", default=None,
                        default_help=f"the preset's; {DEFAULT_PRESET}: {PRESETS[DEFAULT_PRESET]['max_new_tokens']}")
    parser.add_argument("--judge-model", choices=["logreg", "lightgbm"], default=None,
                        help="judge classifier")
    parser.add_argument("--features", choices=["DT", "DD-DT"], default=None, help="judge feature setup")
    parser.add_argument("--max-drop", type=float, default=None,
                        help=f"accuracy points the chosen tau may lose (default {100 * defaults.max_accuracy_drop:g})")
    parser.add_argument("--mine-workers", type=int, default=None,
                        help=f"Ray mining actors (default {defaults.mine_workers}; 0 = mine in this process, no Ray)")
    parser.add_argument("--eval-workers", type=int, default=None,
                        help=f"Ray actors that evaluate settings side by side, --threads CPUs each (default "
                        f"{defaults.eval_workers}; 0 = one after another in this process)")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"torch CPU threads (default {defaults.threads})")
    parser.add_argument("--device", default=None, help="torch device")
    add_pair_arguments(parser, default=f"the preset's; {DEFAULT_PRESET}: {{fallback}}")
    parser.set_defaults(func=run)


def _float_list(text: str) -> tuple[float, ...]:
    """'0.1,0.3' -> (0.1, 0.3); '' -> ()."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _str_list(text: str) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'); '' -> ()."""
    return tuple(part.strip() for part in text.split(",") if part.strip())



PRESETS: dict[str, dict[str, object]] = {
    "toy": dict(TOY_RUN),
    "smollm2-gsm8k": {
        "target": "smollm2:target", "draft": "smollm2:draft", "task": "gsm8k",
        "train_input": "gsm8k:train", "test_input": "gsm8k:test", "train_offset": 400,
        "instruction": None, "shots": 3, "quality": "agreement",
        "mine_problems": 1000, "select_problems": 100, "test_problems": 300, "max_new_tokens": 160,
        "window": 8, "compare_windows": (), "top_ks": (2,), "typical_epsilons": (0.3, 0.09),
        "min_probs": (0.3, 0.1), "fly_entropies": (0.6, 0.3, 0.1), "fly_window": 3,
        "mine_workers": 0, "mine_batch_size": 64, "eval_batch_size": 64, "finished_only": True,
        "extra_judges": ("lightgbm:DD-DT",), "extra_judge_taus": 3,
        "recall_levels": (1.0, 0.99, 0.98, 0.95, 0.9, 0.8), "low_taus": (),
    },
}
"""Named settings of `autojudge run` (`DEFAULT_PRESET` when none is named). toy: the toy world's
window and budget (`pipeline.run.TOY_RUN`: `make run`'s headline). smollm2-gsm8k: the real pair on
GSM8K at full size (1,000 mined train problems, 100 selection, 300 test; float32, 3-shot prompts,
budget 160, window 8, FLy at window 3; CPU-hours, resumable - docs/results/smollm2-gsm8k.md gives
the measured costs). The train slice starts at 400, after the problems the default draft was
fitted on (0..347)."""


DECODING_FIELDS = ("target", "draft", "window", "max_new_tokens", "fly_window")
"""The settings of a preset or the flags that go into `RunConfig.decoding` (the rest are `RunConfig`'s own)."""

DEFAULT_PRESET = "toy"
"""The preset `autojudge run` applies when --preset names none."""


def _int_list(text: str) -> tuple[int, ...]:
    """'8,16' -> (8, 16); '' -> ()."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def check_args(args: argparse.Namespace, config: "RunConfig") -> "DecodeSetup":  # noqa: F821 - lazy import
    """Everything that can be refused before mining starts (autojudge.checks), on the flags and on
    the settings the run will use (defaults, then the preset, then the flags); returns the decoding
    setup (`pipeline.run.resolve_run_setup`: the pair's tokenizers read once)."""
    from autojudge import checks
    from autojudge.pipeline.run import resolve_run_setup
    from autojudge.ray_utils import check_cluster_address

    checks.check_options(args, at_least_1=["mine_problems", "select_problems", "test_problems", "window",
                                           "compare_windows", "max_new_tokens"],
                         at_least_0=["mine_workers", "eval_workers"], threads=["threads"])
    checks.check_number("--max-drop", args.max_drop, 0.0, 100.0)
    if args.out:
        from pathlib import Path

        from autojudge.pipeline.shards import check_no_writer

        checks.check_output_dir("--out", args.out)
        check_no_writer(Path(args.out) / "mined")  # its mining stage holds that lock while it mines
    from autojudge.pipeline.mine import RESOURCE_ADVICE
    from autojudge.ray_utils import check_actor_resources

    for what, workers, advice in (("mining workers", config.mine_workers, RESOURCE_ADVICE),
                                  ("evaluation workers", config.eval_workers, "use fewer --eval-workers or --threads")):
        if workers > 0:
            check_cluster_address(None)
            check_actor_resources(what, workers, config.threads,
                                  1.0 if config.device.startswith("cuda") else 0.0, None, advice=advice)
    return resolve_run_setup(config)


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    setup = check_args(args, config)  # before the heavy imports and any work

    from autojudge.pipeline.run import format_summary, run_main

    print(format_summary(run_main(config, setup=setup)))
    return 0


def build_config(args: argparse.Namespace) -> "RunConfig":  # noqa: F821 - lazy import below
    """RunConfig from the defaults, then the preset, then the flags given explicitly."""
    from autojudge.errors import InputError
    from autojudge.pipeline.run import RunConfig
    from autojudge.setup import DecodingConfig
    from autojudge.tasks.gsm8k import shared_gsm8k_file

    preset = args.preset or DEFAULT_PRESET
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose from {', '.join(sorted(PRESETS))}")
    values: dict[str, object] = dict(PRESETS[preset])
    flags = {
        "out": args.out, "target": args.target, "draft": args.draft, "task": args.task,
        "train_input": args.train_input, "train_offset": args.train_offset, "test_input": args.test_input,
        "instruction": args.instruction, "shots": args.shots, "quality": args.quality, "mine_problems": args.mine_problems,
        "select_problems": args.select_problems, "test_problems": args.test_problems, "window": args.window,
        "compare_windows": args.compare_windows, "max_new_tokens": args.max_new_tokens,
        "judge_model": args.judge_model, "feature_setup": args.features, "mine_workers": args.mine_workers,
        "eval_workers": args.eval_workers,
        "threads": args.threads, "device": args.device, "typical_epsilons": args.typical_epsilons,
        "min_probs": args.min_probs, "extra_judges": args.extra_judges,
        "fly_entropies": args.fly_entropies, "fly_window": args.fly_window,
        "max_accuracy_drop": None if args.max_drop is None else args.max_drop / 100.0,
    }
    values.update({key: value for key, value in flags.items() if value is not None})
    for key in ("train_input", "test_input"):  # preset shorthands for the shared GSM8K files
        if isinstance(values.get(key), str) and str(values[key]).startswith("gsm8k:"):
            values[key] = shared_gsm8k_file(str(values[key]).split(":", 1)[1])
    if values.get("task", "toy") == "gsm8k":
        for key in ("train_input", "test_input"):
            if not values.get(key):
                raise InputError(f"--task gsm8k needs --{key.replace('_', '-')} FILE (or --preset smollm2-gsm8k)")
    decoding = DecodingConfig(**{key: values.pop(key) for key in DECODING_FIELDS if key in values})  # type: ignore[arg-type]
    return RunConfig(decoding=decoding, **values)  # type: ignore[arg-type]
