"""Checks of user input done before any expensive work (model loading, Ray start, decoding).

Every check raises `autojudge.errors.InputError` with a one-line message naming the
option or file and what is wrong; the CLI prints it and exits with status 2. The
commands (`autojudge/commands/*.py`) call these first, so a bad option, an unusable
input file or an output that cannot be written is refused before anything runs and
before anything is written.

This module is at the bottom of the layers (like `errors`): it imports nothing heavy
and nothing from `pipeline/`.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable

from autojudge.errors import InputError


def option_name(dest: str) -> str:
    """argparse dest -> the option as typed: max_new_tokens -> --max-new-tokens."""
    return "--" + dest.replace("_", "-")


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:
    """`value` is a finite number within [low, high] (bounds open where said); None passes."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise InputError(f"{name} must be {'>' if low_open else '>='} {_show(low)}, got {_show(value)}")
    if high is not None and (value >= high if high_open else value > high):
        raise InputError(f"{name} must be {'<' if high_open else '<='} {_show(high)}, got {_show(value)}")


def _show(number: float) -> str:
    """An integer in full (a seed or a count), a float short."""
    return str(number) if isinstance(number, int) else f"{number:g}"


def check_threshold(name: str, value: float | None) -> None:
    """A judge threshold tau: p(important) < tau accepts, so only [0, 1] makes sense."""
    check_number(name, value, 0.0, 1.0)


def check_thresholds(name: str, values: Iterable[float] | None) -> None:
    """Every threshold of a list in [0, 1], and at least one when the list is given."""
    if values is None:
        return
    values = list(values)
    if not values:
        raise InputError(f"{name} needs at least one threshold")
    for value in values:
        check_threshold(name, value)


SEED_MAX = 2**32 - 1
"""Largest seed (numpy's and scikit-learn's seeds are 32-bit)."""
PORT_MAX = 65535


def local_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def check_options(args: Any, at_least_1: Iterable[str] = (), at_least_0: Iterable[str] = (),
                  unit_interval: Iterable[str] = (), thresholds: Iterable[str] = (),
                  threads: Iterable[str] = (), seeds: Iterable[str] = (), ports: Iterable[str] = ()) -> None:
    """Range checks of parsed options by argparse dest name (None = not given = passes).
    List values (e.g. `--top-k 2,3`) are checked element by element. `threads` are in
    1..local_cores() (more torch threads than cores only slows down, and a huge count crashes
    torch), `seeds` in 0..SEED_MAX, `ports` in 1..65535."""
    def values(dest: str) -> list[Any]:
        value = getattr(args, dest, None)
        return list(value) if isinstance(value, (list, tuple)) else [value]

    for dest in at_least_1:
        for value in values(dest):
            check_number(option_name(dest), value, 1)
    for dest in at_least_0:
        for value in values(dest):
            check_number(option_name(dest), value, 0)
    for dest in unit_interval:
        for value in values(dest):
            check_number(option_name(dest), value, 0.0, 1.0)
    for dest in threads:
        for value in values(dest):
            check_number(option_name(dest), value, 1)
            if value is not None and value > local_cores():
                raise InputError(f"{option_name(dest)} must be <= {local_cores()} (the CPU cores here), got {_show(value)}")
    for dest in seeds:
        for value in values(dest):
            check_number(option_name(dest), value, 0, SEED_MAX)
    for dest in ports:
        for value in values(dest):
            check_number(option_name(dest), value, 1, PORT_MAX)
    for dest in thresholds:
        value = getattr(args, dest, None)
        if isinstance(value, (list, tuple)):
            check_thresholds(option_name(dest), value)
        else:
            check_threshold(option_name(dest), value)


def is_uri(path: str | os.PathLike[str]) -> bool:
    """A pyarrow filesystem URI (s3://, gs://, ...) rather than a local path."""
    return "://" in str(path)


def check_input_file(name: str, path: str | os.PathLike[str] | None) -> None:
    """A local input file exists and is a readable file (None passes: the command has a default)."""
    if path is None or is_uri(path):
        return
    path = Path(path)
    if not path.exists():
        raise InputError(f"{name} {path}: file not found")
    if path.is_dir():
        raise InputError(f"{name} {path}: is a folder, expected a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{name} {path}: not readable")


def check_input_dir(name: str, path: str | os.PathLike[str]) -> None:
    """A local input folder exists and is a folder."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{name} {path}: folder not found")
    if not path.is_dir():
        raise InputError(f"{name} {path}: is a file, expected a folder")


def _nearest_existing(path: Path) -> Path:
    """`path` itself or its closest ancestor that exists."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_creatable(name: str, path: Path) -> None:
    """Everything on the way to `path` that exists is a writable folder (so it can be created)."""
    ancestor = _nearest_existing(path.parent)
    if not ancestor.is_dir():
        raise InputError(f"{name} {path}: cannot be created, {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{name} {path}: cannot be created, {ancestor} is not writable")


def check_output_file(name: str, path: str | os.PathLike[str]) -> None:
    """An output file can be written: not a folder, its folder exists or can be created, writable.
    Creates nothing."""
    if is_uri(path):
        return
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{name} {path}: is a folder, expected a file path")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise InputError(f"{name} {path}: not writable")
        return
    _check_creatable(name, path)


def check_output_dir(name: str, path: str | os.PathLike[str]) -> None:
    """An output folder can be written: not a file, exists and is writable or can be created.
    Creates nothing."""
    if is_uri(path):
        return
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{name} {path}: is a file, expected a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(f"{name} {path}: not writable")
        return
    _check_creatable(name, path)


def check_not_inside(out_name: str, out: str | os.PathLike[str], in_name: str, data: str | os.PathLike[str]) -> None:
    """Refuse an output that is, contains, or is inside an input (writing it would destroy the input)."""
    if is_uri(out) or is_uri(data):
        return
    out_path, data_path = Path(out).resolve(), Path(data).resolve()
    if out_path == data_path:
        raise InputError(f"{out_name} {out} is the same folder as {in_name} {data}; choose another output")
    if data_path.is_relative_to(out_path):
        raise InputError(f"{out_name} {out} contains {in_name} {data}; writing it would destroy the input")
    if out_path.is_relative_to(data_path):
        raise InputError(f"{out_name} {out} is inside {in_name} {data}; choose an output outside it")


PROTECTED_MARKERS = ("manifest.json", "labels", "responses", "judge.json")
"""Files whose presence marks a mining folder or a judge folder (never emptied by --overwrite)."""


def check_not_protected(name: str, path: str | os.PathLike[str]) -> None:
    """Refuse to replace (--overwrite) a folder that holds mined data or a judge."""
    if is_uri(path):
        return
    path = Path(path)
    if not path.is_dir():
        return
    found = [marker for marker in PROTECTED_MARKERS if (path / marker).exists()]
    if found:
        raise InputError(
            f"{name} {path} holds mined data or a judge ({', '.join(found)}); --overwrite never replaces those, "
            "choose another output"
        )


def warn(command: str, message: str) -> None:
    """A one-line warning on stderr in the CLI's format."""
    print(f"autojudge {command}: warning: {message}", file=sys.stderr)


def warn_if_mining_running(command: str, manifest: dict[str, Any], data: str | os.PathLike[str]) -> None:
    """Say so when a mining folder's manifest says the mining has not finished (readers use its
    committed shards only: `pipeline/shards.py`)."""
    if manifest.get("status") == "running":
        warn(command, f"{data}/manifest.json says the mining is still running (or was interrupted); "
                      "using its committed shards only")


def check_prompt_lengths(prompts: Iterable[tuple[str, int]], context: int, where: str) -> None:
    """Every (record label, token count) fits the models' context (an InputError names the first that does not)."""
    for label, length in prompts:
        if length >= context:
            raise InputError(
                f"{where}: {label}: prompt has {length} tokens, the models' context is {context} tokens"
            )


def check_fly_parameters(entropies: Any, window: int, draft_window: Any = None) -> None:
    """FLy's entropy thresholds in [0, ln 3] (the top-3 entropy never exceeds ln 3) and its window in
    2..64 and below the draft window (else it can accept nothing)."""
    for entropy in entropies:
        if not 0.0 <= entropy <= math.log(3):
            raise InputError(f"--fly-entropy must be in [0, {math.log(3):.3f}] nats (ln 3, the most a top-3 entropy can be), got {entropy}")
    if not 2 <= window <= 64:
        raise InputError(f"--fly-window must be in 2..64, got {window}")
    if isinstance(draft_window, int) and 0 < draft_window <= window:
        raise InputError(f"--fly-window {window} needs --window larger than it (got {draft_window}): FLy decides a "
                         "mismatch only once the window of draft tokens after it is verified in the same pass")


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags (/proc/cpuinfo) of bfloat16 matrix instructions; without them torch runs bfloat16 emulated, slower than float32."""


def cpu_runs_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has bfloat16 matrix instructions (`BF16_CPU_FLAGS`); True where /proc/cpuinfo is absent
    (not Linux: no way to tell, torch decides)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return True
    flags = set(cpuinfo.split())
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def check_spec_precision(name: str, spec: str, device: str = "cpu", cpuinfo: str | None = None) -> None:
    """A spec's `@dtype` suffix must be one this hardware runs: `@bf16` on a CPU needs its bfloat16 instructions."""
    base, _, suffix = spec.rpartition("@")
    if not base or suffix.lower() not in ("bf16", "bfloat16") or device.startswith("cuda"):
        return
    if not cpu_runs_bf16(cpuinfo):
        raise InputError(f"{name} {spec}: this CPU has no bfloat16 matrix instructions ({' or '.join(BF16_CPU_FLAGS)} in "
                         f"/proc/cpuinfo), so bfloat16 would run emulated and slower than float32; drop the @{suffix} suffix")


def check_within_context(numbers: Iterable[tuple[str, int | None]], context: int) -> None:
    """Windows and budgets (name, value) of at most the models' context length: a KV cache of
    prompt + budget + window positions is allocated, and no model reads past its context."""
    for name, value in numbers:
        if value is not None and value > context:
            raise InputError(f"{name} must be <= {context} (the models' context length), got {value}")


def check_decode_lengths(context: int, window: int | str | None, max_new_tokens: int | None,
                         judge: str | os.PathLike[str] | None = None, budget: str = "--max-new-tokens") -> None:
    """The budget and the window within the models' context: `--window` when given as a number,
    else (None) the default_window of the judge folder `judge` (the window it decodes with)."""
    numbers = [(budget, max_new_tokens)]
    if isinstance(window, int):
        numbers.append(("--window", window))
    elif window is None and judge:
        from autojudge.judge_format import read_judge_meta

        numbers.append((f"the default_window of --judge {judge} (used when --window is not given)",
                        read_judge_meta(judge).get("default_window")))
    check_within_context(numbers, context)


def check_stop_strings(name: str, values: Iterable[str] | None) -> None:
    """Stop strings are not empty (an empty string would stop every row after its first token)."""
    if any(value == "" for value in values or ()):
        raise InputError(f"{name} must not be empty (it would stop every row after one token)")


SAME_PAIR_HELP = (
    "the --target/--draft given are the judge's models under other names (identical copies at other paths): "
    "do not compare the names; the tokenizer and the hidden sizes are still checked"
)


def add_same_pair_argument(parser: Any) -> None:
    """`--same-pair`: the explicit override of the judge's model-name check (commands that load a judge)."""
    parser.add_argument("--same-pair", action="store_true", help=SAME_PAIR_HELP)


def check_pair_tokenizers(target: str, draft: str) -> Any:
    """Load only the two tokenizers (no weights) and refuse a pair that does not share one;
    returns the target's tokenizer. Done on the driver before any cluster or model starts."""
    from autojudge.errors import ModelPairError
    from autojudge.models import check_same_tokenizer, load_tokenizer

    for name, spec in (("--target", target), ("--draft", draft)):
        check_spec_precision(name, spec)
    try:
        target_tokenizer = load_tokenizer(target)
        check_same_tokenizer(target_tokenizer, load_tokenizer(draft), target, draft)
    except ModelPairError as err:
        raise InputError(f"cannot use --target {target} / --draft {draft}: {err}") from None
    return target_tokenizer


CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")
"""Config fields that state a model's context length (the first one set counts)."""


def context_of_specs(*specs: str) -> int:
    """The shortest context length of the models named by `specs`, read from their configs
    (no weights); a very large number when no config states one."""
    from autojudge.models import load_text_config

    contexts = []
    for spec in specs:
        config = load_text_config(spec)
        values = [getattr(config, key, None) for key in CONTEXT_KEYS]
        contexts.append(next((v for v in values if isinstance(v, int) and v > 0), 1 << 30))
    return min(contexts)
