"""Decode benchmark: target-only greedy vs HF assisted generation vs this engine (exact, top-k).

All methods run on the same held-out prompts (toy world seed 2, or with `--task gsm8k`
the first GSM8K test problems in the chat template with the real-model instruction;
the default for `smollm2:*` pairs), greedy, at the same window k (HF assisted:
`num_assistant_tokens=k`, constant schedule, no confidence early-exit). A second HF
row runs assisted generation at its *default* settings (what a user gets: 20 assistant
tokens, constant schedule, and the dynamic lookahead - the draft stops early when its
confidence is under an adaptive threshold starting at 0.4). HF assisted generation only supports batch size 1, so the side-by-side
comparison is per prompt, batch 1; the engine is also timed batched. Target calls are
counted with a forward hook on `target.base_model` (one per forward pass, any method). With `--batch-size`
B > 1 the batched rows have their own baselines at the same width: HF greedy `generate` on B left-padded
prompts at a time and the engine's greedy step (window 0) with B rows; `--rules` rows run at batch 1 and B.

    PYTHONPATH=. python bench/decode.py          # toy pair (autojudge/toy/weights); or pip install -e .
    PYTHONPATH=. python bench/decode.py --tiny   # random tiny Llama pair, no weights needed (tests/helpers.py: from the root)
    PYTHONPATH=. python bench/decode.py --target toy:target --draft toy:draft --window 4 --num-prompts 16 --json out.json
    PYTHONPATH=. python bench/decode.py --target smollm2:target --draft smollm2:draft --window 4 --num-prompts 8
    PYTHONPATH=. python bench/decode.py --target smollm2:target --draft smollm2:draft --shots 3 --window 8 \
        --max-new-tokens 160 --judge RUN/judge --rules fly:0.3 --no-hf-forward-row --no-unpacked-row   # the real run's format
    PYTHONPATH=. python bench/decode.py --target smollm2:target --draft smollm2:draft --draft-vocab 8k \
        --window-table 0,1,2,3,4,6,8 --windows-only --num-prompts 4 --max-new-tokens 96 --threads 2

`--draft-vocab V` decodes with the draft's reduced-vocabulary variant (`smollm2:...-v{V}`, the head
scores only the V most frequent tokens of the target's outputs; `autojudge/draft_vocab.py`).
`--window-table` measures the pair (`autojudge/decode/engine/window.py`: step cost of each model on the
engine's cache path and exact-mode acceptance per position, on `--profile-prompts` prompts after the
benchmark's own) and prints, per window, the expected tokens/s of the goodput model next to the
engine's measured tokens/s (exact, batch 1, prefill included), and the window the model chooses.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from autojudge.commands import DEFAULT_DRAFT, DEFAULT_TARGET, DEFAULT_TOP_K, add_pair_arguments


@dataclass
class BenchConfig:
    """What to benchmark."""

    target: str = DEFAULT_TARGET  # target model spec
    draft: str = DEFAULT_DRAFT  # draft model spec
    tiny: bool = False  # use a random tiny Llama pair (draft = noisy copy) instead of the specs
    num_prompts: int = 16  # held-out toy prompts (world seed 2)
    window: int = 4  # draft tokens per target call, all methods (the bench's own setting, as measured in docs/results)
    top_k: int = DEFAULT_TOP_K  # K of the engine's topk mode
    max_new_tokens: int = 128  # budget per prompt (the bench's own: toy answers end within ~92 tokens)
    batch_size: int = 8  # engine batch size for the batched line
    threads: int = 1  # torch CPU threads
    seed: int = 2  # toy world seed of the prompts (2 = held-out evaluation stream)
    task: str = ""  # "toy" or "gsm8k" (GSM8K test file, chat template + instruction); "" = gsm8k for smollm2:*, else toy
    shots: int = 0  # gsm8k: few-shot examples from the train file as chat turns, no instruction (the smollm2-gsm8k preset: 3)
    judge: str = ""  # judge folder (from `autojudge run`/`train`): adds autojudge rows at its window and threshold
    taus: tuple[float, ...] = ()  # thresholds of the autojudge rows (default: the judge's default threshold)
    compile: bool = False  # torch.compile the lean forwards (compilation happens in the warm-up, reported apart)
    hf_forward_row: bool = True  # also time engine exact with the models' own HF forward (the lean step off)
    unpacked_row: bool = True  # also time engine exact with the lean step's weights on F.linear (no oneDNN prepacking)
    rules: tuple[str, ...] = ()  # extra training-free lossy rows, MODE:PARAMETER (typical:EPSILON, prob:MIN_PROB, topk:K, fly:ENTROPY)
    fly_window: int = 3  # FLy's window in fly:ENTROPY rows (the smollm2-gsm8k preset's)
    window_table: tuple[int, ...] = ()  # windows of the expected-vs-measured table (empty: no table)
    profile_prompts: int = 2  # prompts (after the benchmark's) that the window model is measured on


@dataclass
class MethodResult:
    """One method's totals over all prompts."""

    method: str
    new_tokens: int
    target_calls: int
    draft_calls: int
    wall_s: float
    outputs: list[list[int]]
    correct: int = -1
    """Responses whose answer is right (-1: no answers, random prompts)."""
    agree: int = -1
    """Responses whose final answer equals the target greedy response's (-1: no answers)."""

    @property
    def tokens_per_target_call(self) -> float:
        return self.new_tokens / max(self.target_calls, 1)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.wall_s if self.wall_s else 0.0


@contextmanager
def count_forwards(model: Any) -> Iterator[list[int]]:
    """Count forward passes of `model` while the block runs (counter[0]): calls of its `base_model`
    (Hugging Face paths) plus calls of its lean forward (the engine's default path)."""
    from autojudge.decode.engine.lean import lean_decoder

    counter = [0]
    handle = model.base_model.register_forward_pre_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
    lean = lean_decoder(model)
    lean_before = lean.calls if lean is not None else 0
    try:
        yield counter
    finally:
        handle.remove()
        if lean is not None and model.__dict__.get("_autojudge_lean") is lean:
            counter[0] += lean.calls - lean_before


@dataclass
class BenchInputs:
    """The pair and the prompts."""

    target: Any
    draft: Any
    prompts: list[list[int]]
    eos: list[int]
    tokenizer: Any = None
    task: Any = None
    problems: list[Any] = field(default_factory=list)
    judge: Any = None  # the judge of --judge, loaded once by `setup.resolve`


def load_models(config: BenchConfig) -> BenchInputs:
    """The pair, the prompts (token ids), EOS ids and, for a task, its problems."""
    if config.tiny:
        from tests.helpers import noisy_copy, tiny_model

        # toy-target-sized random model; the draft is a noisy copy (same cost, agrees often)
        target = tiny_model("llama", seed=0, vocab_size=128, hidden_size=192, layers=4)
        draft = noisy_copy(target, 0.1, seed=1)
        generator = torch.Generator().manual_seed(config.seed)
        prompts = [[1] + torch.randint(3, 128, (int(n),), generator=generator).tolist()
                   for n in torch.randint(8, 40, (config.num_prompts,), generator=generator)]
        return BenchInputs(target, draft, prompts, [2])
    from autojudge.models import resolve_spec
    from autojudge.tasks import get_task
    from autojudge.tasks.base import Problem
    from autojudge.toy.world import generate_problems

    for spec in (config.target, config.draft):
        folder = Path(resolve_spec(spec)[0])
        if spec.startswith("toy:") and not (folder / "config.json").exists():
            raise SystemExit(f"{spec}: no weights in {folder} yet (python -m autojudge.toy.train --out "
                             f"autojudge/toy/weights); use --tiny for a random stand-in pair")
    from autojudge.setup import DecodingConfig, resolve

    # the project's one resolver: tokenizers and configs read once, the judge read and checked against the pair
    setup = resolve(DecodingConfig(config.target, config.draft, judge=config.judge or None, window=config.window,
                                   max_new_tokens=config.max_new_tokens))
    pair = setup.load_pair(device="cpu", dtype=torch.float32)
    if bench_task(config) == "gsm8k":
        from autojudge.tasks.gsm8k import GSM8K_INSTRUCTION
        from autojudge.tasks.gsm8k import shared_gsm8k_file
        from autojudge.tasks.gsm8k import load_problems

        task = (get_task("gsm8k", instruction=GSM8K_INSTRUCTION) if not config.shots
                else get_task("gsm8k", instruction=None, shots=config.shots, shots_file=shared_gsm8k_file("train")))
        problems = load_problems(shared_gsm8k_file("test"), limit=config.num_prompts)
    else:
        task = get_task("toy")
        records = generate_problems(config.num_prompts, seed=config.seed)
        problems = [Problem(id=r["id"], question=r["question"], answer=r["answer"]) for r in records]
    prompts = [task.prompt_ids(p, pair.tokenizer) for p in problems]
    return BenchInputs(pair.target, pair.draft, prompts, [pair.tokenizer.eos_token_id], pair.tokenizer, task, list(problems),
                       setup.judge)


def bench_task(config: BenchConfig) -> str:
    return config.task or ("gsm8k" if config.target.startswith("smollm2:") else "toy")


def cut_at_eos(tokens: list[int], eos: list[int]) -> list[int]:
    for index, token in enumerate(tokens):
        if token in eos:
            return tokens[: index + 1]
    return tokens


def run_hf(name: str, target: Any, prompts: list[list[int]], config: BenchConfig, eos: list[int], **generate_kwargs: Any) -> MethodResult:
    """HF `generate` per prompt (batch 1): plain greedy, or assisted with `assistant_model=`."""
    outputs, wall = [], 0.0
    assistant = generate_kwargs.get("assistant_model")
    with count_forwards(target) as calls, count_forwards(assistant or target) as assistant_calls:
        for prompt in prompts:
            ids = torch.tensor([prompt])
            start = time.perf_counter()
            with torch.no_grad():
                out = target.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                    max_new_tokens=config.max_new_tokens, eos_token_id=eos, pad_token_id=0, **generate_kwargs,
                )
            wall += time.perf_counter() - start
            outputs.append(cut_at_eos(out[0, len(prompt):].tolist(), eos))
    draft_calls = assistant_calls[0] if assistant is not None else 0
    return MethodResult(name, sum(map(len, outputs)), calls[0], draft_calls, wall, outputs)


def run_hf_batched(name: str, target: Any, prompts: list[list[int]], config: BenchConfig, eos: list[int], batch_size: int) -> MethodResult:
    """HF greedy `generate` on `batch_size` prompts at a time, left-padded (what a user batches with): a
    batch runs until its longest answer ends."""
    outputs, wall = [], 0.0
    with count_forwards(target) as calls:
        for first in range(0, len(prompts), batch_size):
            group = prompts[first:first + batch_size]
            width = max(map(len, group))
            ids = torch.tensor([[0] * (width - len(p)) + p for p in group])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in group])
            start = time.perf_counter()
            with torch.no_grad():
                out = target.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                      max_new_tokens=config.max_new_tokens, eos_token_id=eos, pad_token_id=0)
            wall += time.perf_counter() - start
            outputs += [cut_at_eos(row[width:].tolist(), eos) for row in out]
    return MethodResult(name, sum(map(len, outputs)), calls[0], 0, wall, outputs)


def run_engine(name: str, target: Any, draft: Any, rule: Any, prompts: list[list[int]], config: BenchConfig, eos: list[int], batch_size: int, window: int | None = None, lean: bool = True, pack: bool = True) -> MethodResult:
    """The engine core with at most `batch_size` rows at once (continuous batching; 1 = one prompt at a time)
    at `window` (None: --window; 0: plain greedy decoding on the engine's step, the draft unused).
    `lean=False` runs the models' own Hugging Face forward instead of the lean step; `pack=False` the lean
    step with every weight on `F.linear` (no oneDNN prepacked copies)."""
    from autojudge.decode.engine import EngineCore, RequestSettings
    from autojudge.decode.engine.lean import NO_PACKING, PACK_MIN_ELEMENTS, set_lean

    for model in (target, draft):
        set_lean(model, lean, None if pack else NO_PACKING)
    try:
        k = config.window if window is None else window
        engine = EngineCore(target, draft, eos_token_ids=eos, pad_token_id=0, default_window=k, max_batch=batch_size)
        with count_forwards(target) as calls:
            start = time.perf_counter()
            results = engine.generate(prompts, RequestSettings(max_new_tokens=config.max_new_tokens, rule=rule))
            wall = time.perf_counter() - start
    finally:
        for model in (target, draft):
            set_lean(model, True, None if pack else PACK_MIN_ELEMENTS)
    outputs = [r.token_ids for r in results]
    draft_calls = sum(r.metrics.draft_calls for r in results)
    return MethodResult(name, sum(map(len, outputs)), calls[0], draft_calls, wall, outputs)


def score(results: list[MethodResult], inputs: BenchInputs) -> None:
    """Fill `correct` and `agree` (final answer equal to the greedy response's) from the task's answers."""
    if inputs.task is None:
        return
    texts = {id(r): [inputs.tokenizer.decode(o, skip_special_tokens=True) for o in r.outputs] for r in results}
    greedy = texts[id(results[0])]
    for r in results:
        pairs = list(zip(inputs.problems, texts[id(r)], greedy))
        r.correct = sum(inputs.task.is_correct(problem, text) for problem, text, _ in pairs)
        r.agree = sum(inputs.task.answer(problem, text) == inputs.task.answer(problem, reference) for problem, text, reference in pairs)


def assisted_kwargs(draft: Any, window: int) -> dict[str, Any]:
    """HF assisted generation at a fixed window: k tokens per round, no heuristic, no confidence exit."""
    draft.generation_config.num_assistant_tokens = window
    draft.generation_config.num_assistant_tokens_schedule = "constant"
    draft.generation_config.assistant_confidence_threshold = 0.0
    return {"assistant_model": draft}


def assisted_default_kwargs(draft: Any) -> dict[str, Any]:
    """HF assisted generation as a user gets it: the assistant's generation config left unset, so
    transformers applies its defaults (20 tokens, constant schedule, adaptive confidence threshold 0.4)."""
    draft.generation_config.num_assistant_tokens = None
    draft.generation_config.num_assistant_tokens_schedule = None
    draft.generation_config.assistant_confidence_threshold = None
    return {"assistant_model": draft}


def benchmark(config: BenchConfig) -> tuple[list[MethodResult], BenchInputs]:
    from autojudge.decode.engine import ExactRule, TopKRule, build_rule

    torch.set_num_threads(config.threads)
    inputs = load_models(config)
    target, draft, eos = inputs.target, inputs.draft, inputs.eos
    warm = inputs.prompts[:1]
    batch = config.batch_size
    methods: list[tuple[str, Callable[[list[list[int]]], MethodResult]]] = [
        ("target greedy (HF generate)", lambda p: run_hf("target greedy (HF generate)", target, p, config, eos)),
        ("HF assisted generation", lambda p: run_hf("HF assisted generation", target, p, config, eos, **assisted_kwargs(draft, config.window))),
        ("HF assisted, defaults", lambda p: run_hf("HF assisted, defaults", target, p, config, eos, **assisted_default_kwargs(draft))),
    ]
    if config.hf_forward_row:  # the engine before the lean step, batch 1 and batched
        hf1, hfb = "engine exact, HF forward (batch 1)", f"engine exact, HF forward (batch {batch})"
        methods.append((hf1, lambda p: run_engine(hf1, target, draft, ExactRule(), p, config, eos, 1, lean=False)))
        methods.append((hfb, lambda p: run_engine(hfb, target, draft, ExactRule(), p, config, eos, batch, lean=False)))
    if config.unpacked_row:  # the lean step before oneDNN prepacking
        up = "engine exact, lean unpacked (batch 1)"
        methods.append((up, lambda p: run_engine(up, target, draft, ExactRule(), p, config, eos, 1, pack=False)))
    methods += [
        ("engine greedy, window 0 (batch 1)", lambda p: run_engine("engine greedy, window 0 (batch 1)", target, draft, ExactRule(), p, config, eos, 1, window=0)),
        ("engine exact (batch 1)", lambda p: run_engine("engine exact (batch 1)", target, draft, ExactRule(), p, config, eos, 1)),
        (f"engine topk K={config.top_k} (batch 1)", lambda p: run_engine(f"engine topk K={config.top_k} (batch 1)", target, draft, TopKRule(config.top_k), p, config, eos, 1)),
        (f"engine exact (batch {batch})", lambda p: run_engine(f"engine exact (batch {batch})", target, draft, ExactRule(), p, config, eos, batch)),
    ]
    if batch > 1:  # greedy at the same width: the baseline of the batched rows
        hfg, eng = f"target greedy (HF generate, batch {batch})", f"engine greedy, window 0 (batch {batch})"
        methods.insert(3, (hfg, lambda p: run_hf_batched(hfg, target, p, config, eos, batch)))
        methods.append((eng, lambda p: run_engine(eng, target, draft, ExactRule(), p, config, eos, batch, window=0)))
    for spec in config.rules:
        mode, _, value = spec.partition(":")
        parameter = {"typical": {"epsilon": value}, "prob": {"min_prob": value}, "topk": {"top_k": value},
                     "fly": {"fly_entropy": value}}.get(mode)
        try:
            parameter = {key: (int if mode == "topk" else float)(text) for key, text in parameter.items()} if parameter else None
        except ValueError:
            parameter = None
        if parameter is None:
            raise SystemExit(f"--rules {spec!r}: expected typical:EPSILON, prob:MIN_PROB, topk:K or fly:ENTROPY")
        if mode == "fly":
            parameter["fly_window"] = config.fly_window
        extra = build_rule(mode, **parameter)
        for size in sorted({1, batch}):
            label = f"engine {mode} {value}{f' w={config.fly_window}' if mode == 'fly' else ''} (batch {size})"
            methods.append((label, lambda p, extra=extra, label=label, size=size: run_engine(label, target, draft, extra, p, config, eos, size)))
    if inputs.judge is not None:
        judge = inputs.judge
        k = judge.default_window or config.window
        for tau in config.taus or (judge.default_threshold,):
            rule = build_rule("autojudge", judge=judge, threshold=tau)
            label = f"engine autojudge k={k} tau={tau:.3g}"
            methods += [
                (f"{label} (batch {size})", lambda p, rule=rule, label=label, size=size: run_engine(
                    f"{label} (batch {size})", target, draft, rule, p, config, eos, size, window=k))
                for size in sorted({1, batch})
            ]
    if config.compile:
        from autojudge.decode.engine.lean import compile_lean, compiled_graphs

        start = time.perf_counter()
        for model in (target, draft):
            compile_lean(model)
        for name, method in methods:
            if name.startswith("engine") and "HF forward" not in name:
                method(warm)
        print(f"compiled the lean forwards: {time.perf_counter() - start:.1f} s, {compiled_graphs()} graphs (not in the timings below)")
    results = []
    for _, method in methods:
        method(warm)  # warm-up (allocator, first-call overheads)
        results.append(method(inputs.prompts))
    score(results, inputs)
    return results, inputs


def with_draft_vocab(draft: str, vocab: str) -> str:
    """The spec of `draft`'s reduced-vocabulary variant (`smollm2:` drafts: `-v{vocab}`)."""
    if not vocab:
        return draft
    if not draft.startswith("smollm2:draft"):
        raise SystemExit(f"--draft-vocab needs a smollm2:draft* spec (got {draft!r}); for another draft, write "
                         "draft_vocab.json into its folder (autojudge.draft_vocab.write_draft_vocab)")
    base, sep, dtype = draft.partition("@")
    return f"{base}-v{vocab}{sep}{dtype}"


@dataclass
class WindowRow:
    """One window: what the goodput model expects and what the engine measured."""

    window: int
    expected_tokens_per_call: float
    expected_tokens_per_s: float
    measured: MethodResult


def window_benchmark(config: BenchConfig) -> tuple[Any, list[WindowRow]]:
    """(pair profile, one row per window of `config.window_table`): the model measured on the profile
    prompts, the engine (exact, batch 1) timed at each window on the benchmark prompts."""
    from dataclasses import replace

    from autojudge.decode.engine import ExactRule
    from autojudge.decode.engine.window import measure_pair

    torch.set_num_threads(config.threads)
    inputs = load_models(replace(config, num_prompts=config.num_prompts + config.profile_prompts))
    target, draft, eos = inputs.target, inputs.draft, inputs.eos
    prompts, profile_prompts = inputs.prompts[: config.num_prompts], inputs.prompts[config.num_prompts :]
    windows = sorted(set(config.window_table))
    profile = measure_pair(target, draft, profile_prompts or prompts[:1], window=max(max(windows), 1),
                           max_new_tokens=config.max_new_tokens, eos_token_ids=eos, pad_token_id=0)
    rows = []
    for estimate in profile.table(windows):
        name = f"engine exact k={estimate.window}"
        run = lambda p: run_engine(name, target, draft, ExactRule(), p, config, eos, 1, window=estimate.window)  # noqa: E731
        run(prompts[:1])  # warm-up
        rows.append(WindowRow(estimate.window, estimate.tokens_per_cycle, estimate.tokens_per_s, run(prompts)))
    return profile, rows


def window_report(profile: Any, rows: list[WindowRow]) -> str:
    costs = profile.costs
    lines = [
        f"window model: target step {costs.target_s * 1e3:.1f} ms (spread {min(profile.step_seconds) * 1e3:.1f}-"
        f"{max(profile.step_seconds) * 1e3:.1f}), draft step {costs.draft_s * 1e3:.1f} ms (ratio {costs.draft_ratio:.2f}), "
        f"verify k+1 tokens / 1: {', '.join(f'{v / costs.target_s:.2f}' for v in costs.verify_s)}, "
        f"overhead {costs.cycle_overhead_s * 1e3:.2f} ms per speculative cycle, {(costs.greedy_overhead_s or 0.0) * 1e3:.2f} ms per greedy cycle",
        f"acceptance per position {[round(a, 2) for a in profile.acceptance]} (cycles reaching it {list(profile.reached)})",
        f"{'window':>6} {'exp tok/call':>12} {'exp tok/s':>9} {'tok/call':>8} {'tok/s':>8}",
    ]
    for row in rows:
        lines.append(f"{row.window:>6} {row.expected_tokens_per_call:>12.2f} {row.expected_tokens_per_s:>9.1f} "
                     f"{row.measured.tokens_per_target_call:>8.2f} {row.measured.tokens_per_s:>8.1f}")
    best_measured = max(rows, key=lambda row: row.measured.tokens_per_s).window
    lines.append(f"chosen window (model, 0..16): {profile.best(16)}; best measured of those run: {best_measured}")
    return "\n".join(lines)


def report(results: list[MethodResult], config: BenchConfig) -> str:
    greedy = results[0]
    assisted = results[1]
    lines = [
        f"window k={config.window}, {config.num_prompts} prompts, max_new_tokens={config.max_new_tokens}, "
        f"threads={config.threads}, pair={'tiny random llama' if config.tiny else config.target + ' / ' + config.draft}, "
        f"prompts: {'random' if config.tiny else bench_task(config)}, compile={config.compile}; 'HF assisted generation' = fixed window k, "
        "'HF assisted, defaults' = transformers' defaults (20 tokens, adaptive confidence threshold from 0.4)",
        f"{'method':<40} {'tokens':>7} {'target calls':>12} {'tok/call':>8} {'draft calls':>11} {'wall s':>8} {'tok/s':>8} {'vs greedy':>9} {'vs assisted':>11} {'= greedy':>8} {'correct':>7} {'agree':>6}",
    ]
    for r in results:
        same = sum(a == b for a, b in zip(r.outputs, greedy.outputs))
        quality = f"{r.correct:>7} {r.agree:>6}" if r.correct >= 0 else f"{'-':>7} {'-':>6}"
        lines.append(
            f"{r.method:<40} {r.new_tokens:>7} {r.target_calls:>12} {r.tokens_per_target_call:>8.2f} {r.draft_calls:>11} "
            f"{r.wall_s:>8.2f} {r.tokens_per_s:>8.1f} {greedy.wall_s / r.wall_s:>8.2f}x {assisted.wall_s / r.wall_s:>10.2f}x "
            f"{same:>4}/{len(r.outputs)} {quality}"
        )
    lines.append(
        "(target calls = target forward passes; a batched pass counts once. tok/call = tokens / target calls. vs greedy = "
        "greedy wall s / this wall s, same prompts, same tokens up to EOS/budget; timings exclude model loading, which is "
        "the same for every row. '= greedy': responses token-identical to greedy; correct: right answers; agree: final "
        "answer equal to greedy's. 'HF forward': the engine with the models' own forward instead of the lean step.)"
    )
    return "\n".join(lines)


def parse_taus(text: str) -> tuple[float, ...]:
    """`--taus 0.05,0.3` -> (0.05, 0.3); a clear error for anything that is not a threshold in [0, 1]."""
    try:
        taus = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise SystemExit(f"--taus {text!r}: expected comma-separated thresholds in [0, 1], e.g. 0.05,0.3") from None
    if any(not 0.0 <= tau <= 1.0 for tau in taus):
        raise SystemExit(f"--taus {text!r}: every threshold must be in [0, 1]")
    return taus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = BenchConfig()
    add_pair_arguments(parser)
    parser.add_argument("--tiny", action="store_true", help="random tiny Llama pair instead of the specs")
    parser.add_argument("--num-prompts", type=int, default=defaults.num_prompts)
    parser.add_argument("--window", type=int, default=defaults.window)
    parser.add_argument("--top-k", type=int, default=defaults.top_k)
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--task", choices=["toy", "gsm8k"], default="", help="prompts (default: gsm8k for smollm2:* pairs, else toy)")
    parser.add_argument("--rules", default="", metavar="MODE:P,...", help="extra lossy rows, e.g. typical:0.3,prob:0.3,topk:2,fly:0.3")
    parser.add_argument("--fly-window", type=int, default=defaults.fly_window, help="FLy's window in fly:ENTROPY rows")
    parser.add_argument("--shots", type=int, default=defaults.shots,
                        help="gsm8k: few-shot examples from the train file as chat turns, no instruction (the run preset's format: 3)")
    parser.add_argument("--judge", default="", metavar="DIR", help="judge folder: adds autojudge rows at its window and threshold")
    parser.add_argument("--taus", default="", metavar="TAU,...", help="thresholds of the autojudge rows (default: the judge's default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the lean forwards (compile time reported apart)")
    parser.add_argument("--no-hf-forward-row", action="store_true", help="skip the engine row with the models' own forward")
    parser.add_argument("--no-unpacked-row", action="store_true", help="skip the engine row with the lean step's weights unpacked")
    parser.add_argument("--draft-vocab", default="", metavar="V", help="use the draft's reduced-vocabulary variant (e.g. 8k)")
    parser.add_argument("--window-table", default="", metavar="K,K,...", help="windows of the expected-vs-measured tokens/s table")
    parser.add_argument("--profile-prompts", type=int, default=defaults.profile_prompts, help="prompts the window model is measured on")
    parser.add_argument("--windows-only", action="store_true", help="only the window table, not the method rows")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    config = BenchConfig(
        target=args.target or defaults.target, draft=with_draft_vocab(args.draft or defaults.draft, args.draft_vocab), tiny=args.tiny, num_prompts=args.num_prompts, window=args.window,
        top_k=args.top_k, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, threads=args.threads,
        task=args.task, judge=args.judge, rules=tuple(r for r in args.rules.split(",") if r), fly_window=args.fly_window, shots=args.shots,
        taus=parse_taus(args.taus), compile=args.compile, hf_forward_row=not args.no_hf_forward_row, unpacked_row=not args.no_unpacked_row,
        window_table=tuple(int(k) for k in args.window_table.split(",") if k), profile_prompts=args.profile_prompts,
    )
    results = [] if args.windows_only else benchmark(config)[0]
    if results:
        print(report(results, config))
    record: dict[str, Any] = {"config": asdict(config)}
    if config.window_table:
        profile, window_rows = window_benchmark(config)
        print(window_report(profile, window_rows))
        record["windows"] = {
            "costs": asdict(profile.costs), "acceptance": profile.acceptance, "reached": profile.reached, "chosen": profile.best(16),
            "rows": [{"window": r.window, "expected_tokens_per_call": r.expected_tokens_per_call, "expected_tokens_per_s": r.expected_tokens_per_s,
                      "tokens_per_target_call": r.measured.tokens_per_target_call, "tokens_per_s": r.measured.tokens_per_s} for r in window_rows],
        }  # fmt: skip
    if args.json:
        rows = [{k: v for k, v in asdict(r).items() if k != "outputs"} | {"tokens_per_target_call": r.tokens_per_target_call, "tokens_per_s": r.tokens_per_s, "vs_greedy": results[0].wall_s / r.wall_s} for r in results]
        with open(args.json, "w") as handle:
            json.dump(record | {"results": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
