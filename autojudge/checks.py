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
from typing import Any, Callable, Iterable

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


def _check_no_dangling_link(name: str, path: Path) -> None:
    """Neither `path` nor a missing folder on the way to it is a symbolic link to nothing (creating it
    would fail late, after the models load, or create the link's target somewhere else)."""
    candidate = path.absolute()
    while not candidate.exists() and candidate != candidate.parent:
        if candidate.is_symlink():
            raise InputError(f"{name} {path}: {candidate} is a symbolic link to {os.readlink(candidate)}, which does not "
                             f"exist; remove the link or choose another {name.split()[0]}")
        candidate = candidate.parent


def _check_creatable(name: str, path: Path) -> None:
    """Everything on the way to `path` that exists is a writable folder (so it can be created)."""
    _check_no_dangling_link(name, path)
    ancestor = _nearest_existing(path.parent)
    if not ancestor.is_dir():
        raise InputError(f"{name} {path}: cannot be created, {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{name} {path}: cannot be created, {ancestor} is not writable")


RUN_ENTRIES = ("mined", "judge", "judges", "select", "eval", "inputs", "summary.json", "report.md")
"""What `autojudge run` writes at the top of a run folder (`pipeline/run.py`)."""


def artifact_kind(folder: Path) -> str | None:
    """What `folder` is by its own marker files: a mining folder (manifest.json beside labels/ or
    responses/), a judge folder (judge.json), else None."""
    if (folder / "manifest.json").is_file() and ((folder / "labels").is_dir() or (folder / "responses").is_dir()):
        return "a mining folder"
    if (folder / "judge.json").is_file():
        return "a judge folder"
    return None


def check_not_in_artifact(name: str, path: str | os.PathLike[str]) -> None:
    """Refuse an output file inside a mining or judge folder (at any depth, links resolved), or on one
    of a run folder's own entries (a folder whose mined/ is a mining folder: RUN/report.md, RUN/eval/...):
    writing there would replace or mix with what another command made (`RUN/mined/manifest.json`)."""
    if is_uri(path):
        return
    resolved = Path(path).resolve()
    for folder in resolved.parents:
        kind = artifact_kind(folder)
        if kind:
            raise InputError(f"{name} {path} is inside {kind} ({folder}); write outputs outside it")
        if resolved.relative_to(folder).parts[0] in RUN_ENTRIES and artifact_kind(folder / "mined") == "a mining folder":
            raise InputError(f"{name} {path} would write into the run folder {folder} "
                             f"({', '.join(RUN_ENTRIES)} are its own); write outputs outside them")


def check_output_file(name: str, path: str | os.PathLike[str]) -> None:
    """An output file can be written: not a folder, not a link to nothing, not inside a mining, judge
    or run folder, its folder exists or can be created, writable. Creates nothing."""
    if is_uri(path):
        return
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{name} {path}: is a folder, expected a file path")
    if path.exists():
        check_not_in_artifact(name, path)
        if not os.access(path, os.W_OK):
            raise InputError(f"{name} {path}: not writable")
        return
    _check_creatable(name, path)
    check_not_in_artifact(name, path)


def check_output_dir(name: str, path: str | os.PathLike[str]) -> None:
    """An output folder can be written: not a file, not a link to nothing, exists and is writable or
    can be created. Creates nothing."""
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
    """Refuse an output that is, contains, or is inside an input (writing it would destroy the input).
    Links are resolved, and a hard link to the input is the input."""
    if is_uri(out) or is_uri(data):
        return
    out_path, data_path = Path(out).resolve(), Path(data).resolve()
    if out_path == data_path or (out_path.exists() and data_path.exists() and os.path.samefile(out_path, data_path)):
        what = "folder" if data_path.is_dir() else "file"
        raise InputError(f"{out_name} {out} is the same {what} as {in_name} {data}; choose another output")
    if data_path.is_relative_to(out_path):
        raise InputError(f"{out_name} {out} contains {in_name} {data}; writing it would destroy the input")
    if out_path.is_relative_to(data_path):
        raise InputError(f"{out_name} {out} is inside {in_name} {data}; choose an output outside it")


def tree_entries(folder: str | os.PathLike[str]) -> list[str]:
    """Everything under a local `folder`, at any depth, as relative POSIX paths: folders end in '/', a
    symbolic link (never followed) or another non-regular file ends in '@' (so that no pattern of a
    writer's own files matches it)."""
    entries = []
    pending = [Path(folder)]
    while pending:
        with os.scandir(pending.pop()) as scan:
            for entry in scan:
                relative = Path(entry.path).relative_to(folder).as_posix()
                if entry.is_dir(follow_symlinks=False):
                    entries.append(relative + "/")
                    pending.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    entries.append(relative)
                else:
                    entries.append(relative + "@")
    return sorted(entries)


MARKER_KINDS = {"manifest.json": "mined data", "judge.json": "a judge", "_summary.json": "an infer output",
                "README.md": "a dataset card"}
"""Files whose name tells what a folder holds (named first in a refusal)."""


def describe_entries(entries: list[str], most: int = 3) -> str:
    """'a judge (RUN/judge/judge.json), mined data (RUN/mined/manifest.json), notes.txt and 7 more':
    marker files first; a folder is named only when nothing under it is."""
    shown = [e for e in entries if not (e.endswith("/") and any(o != e and o.startswith(e) for o in entries))]
    shown.sort(key=lambda e: (e.rstrip("/@").rsplit("/", 1)[-1] not in MARKER_KINDS, e.count("/"), e))
    parts = []
    for entry in shown[:most]:
        base = entry.rstrip("/@").rsplit("/", 1)[-1]
        text = entry[:-1] + " (a symbolic link or special file)" if entry.endswith("@") else entry
        parts.append(f"{MARKER_KINDS[base]} ({text})" if base in MARKER_KINDS else text)
    more = len(shown) - most
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def refuse_foreign(name: str, path: str | os.PathLike[str], entries: Iterable[str], is_own: Callable[[str], bool],
                   writer: str, advice: str) -> None:
    """InputError naming what lies in `path` that `writer` did not write (entries as `tree_entries` lists them)."""
    foreign = [entry for entry in entries if not is_own(entry)]
    if foreign:
        raise InputError(f"{name} {path} holds what {writer} did not write: {describe_entries(foreign)}; {advice}")


def check_overwrite(name: str, path: str | os.PathLike[str], is_own: Callable[[str], bool], writer: str) -> None:
    """--overwrite may remove only what the same command wrote: refuse a local folder that holds anything
    else at any depth (mined data, a judge, another command's output, user files), naming it."""
    if is_uri(path) or not Path(path).is_dir():
        return
    refuse_foreign(name, path, tree_entries(path), is_own, writer,
                   f"--overwrite only replaces an earlier {writer} output; choose another {name}")


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


def context_of_specs(*specs: str) -> int:
    """The shortest context length of the models named by `specs`, read from their configs
    (no weights); a very large number when no config states one."""
    from autojudge.models import context_length, load_text_config

    return min(context_length(load_text_config(spec)) for spec in specs)
