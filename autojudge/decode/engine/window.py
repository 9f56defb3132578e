"""The window that fits a pair: expected tokens per second of each speculation window (SmartSpec goodput).

A batch-1 cycle with window k costs k draft steps, one target call over k + 1 tokens and the
engine's own bookkeeping:

    seconds(k) = k * draft_s + verify_s(k) + cycle_overhead_s          (k >= 1)
    seconds(0) = target_s + greedy_overhead_s                         (plain greedy)

and emits the accepted prefix plus the target's token. With `acceptance[i]` the probability
that the (i+1)-th proposal is accepted given that the ones before it were,

    tokens(k) = 1 + sum_{i=1..k} prod_{j=1..i} acceptance[j]

so the expected goodput is tokens(k) / seconds(k) and the best window maximises it. A cheap
draft that agrees often wants a long window; an expensive or unreliable one wants a short
window or none. `window_table` / `best_window` are pure; `measure_pair` times each model's
step on the engine's cache path and counts acceptance per position on a few prompts, and
`choose_window` puts the two together.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from autojudge.decode.engine.cache import RowKVCache, forward_rows


@dataclass(frozen=True)
class PairCosts:
    """Seconds of one batch-1 step of each model (measured, or made up in tests)."""

    target_s: float
    """One target call over 1 new token (a plain greedy step)."""
    draft_s: float
    """One draft call over 1 new token (one proposal)."""
    verify_s: tuple[float, ...] = ()
    """`verify_s[k]`: one target call over k + 1 new tokens (verifying k proposals); beyond its end the
    cost grows linearly along its last step; empty: every verify costs `target_s` (memory-bound)."""
    cycle_overhead_s: float = 0.0
    """Engine bookkeeping per speculative cycle outside the two models' forwards (proposal loop,
    acceptance, emit, stop checks)."""
    greedy_overhead_s: float | None = None
    """The same for a plain greedy cycle (window 0: no proposal loop, no acceptance), which does much
    less; None: `cycle_overhead_s`."""

    def __post_init__(self) -> None:
        if min(self.target_s, self.draft_s, self.cycle_overhead_s, self.greedy_overhead_s or 0.0, *self.verify_s) < 0:
            raise ValueError("costs must be >= 0")

    def seconds(self, window: int) -> float:
        """Expected seconds of one cycle at `window`."""
        if window == 0:
            overhead = self.cycle_overhead_s if self.greedy_overhead_s is None else self.greedy_overhead_s
            return self.verify(0) + overhead
        return window * self.draft_s + self.verify(window) + self.cycle_overhead_s

    @property
    def draft_ratio(self) -> float:
        """Draft step / target step."""
        return self.draft_s / self.target_s if self.target_s > 0 else float("inf")

    def verify(self, window: int) -> float:
        """Seconds of the target call that verifies `window` proposals."""
        known = self.verify_s or (self.target_s,)
        if window < len(known):
            return known[window]
        slope = known[-1] - known[-2] if len(known) > 1 else 0.0
        return known[-1] + max(slope, 0.0) * (window - len(known) + 1)


@dataclass(frozen=True)
class WindowEstimate:
    """What the model expects of one window."""

    window: int
    """Draft tokens proposed per cycle."""
    tokens_per_cycle: float
    """Expected emitted tokens per cycle (= per target call)."""
    seconds_per_cycle: float
    """Expected seconds per cycle."""

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_cycle / self.seconds_per_cycle if self.seconds_per_cycle > 0 else float("inf")


def expected_tokens(acceptance: Sequence[float], window: int) -> float:
    """Expected tokens per cycle at `window`: 1 + sum over i <= window of P(the first i proposals are
    accepted). Positions beyond the profile repeat its last entry (none: nothing is accepted)."""
    if any(not 0.0 <= a <= 1.0 for a in acceptance):
        raise ValueError(f"acceptance probabilities must be in [0, 1], got {list(acceptance)}")
    tokens, survive = 1.0, 1.0
    for position in range(window):
        if not acceptance:
            break
        survive *= acceptance[min(position, len(acceptance) - 1)]
        tokens += survive
    return tokens


def window_table(costs: PairCosts, acceptance: Sequence[float], windows: Sequence[int]) -> list[WindowEstimate]:
    """The expected tokens per cycle, seconds per cycle and tokens/s of each window."""
    if any(window < 0 for window in windows):
        raise ValueError(f"windows must be >= 0, got {list(windows)}")
    return [
        WindowEstimate(window, expected_tokens(acceptance, window), costs.seconds(window))
        for window in windows
    ]


def best_window(costs: PairCosts, acceptance: Sequence[float], max_window: int = 16) -> int:
    """The window in 0..max_window with the highest expected tokens/s (the smaller one on a tie)."""
    table = window_table(costs, acceptance, range(max_window + 1))
    return max(table, key=lambda row: (row.tokens_per_s, -row.window)).window


@dataclass
class PairProfile:
    """A pair measured at batch 1: step costs and the per-position acceptance of exact decoding."""

    costs: PairCosts
    """Seconds per step of each model, and the engine's per-cycle overheads (speculative and greedy)."""
    acceptance: tuple[float, ...]
    """`acceptance[i]`: share of cycles that reached proposal i + 1 in which it was accepted."""
    reached: tuple[int, ...]
    """`reached[i]`: cycles in which proposal i + 1 was verified (the sample size behind `acceptance[i]`)."""
    window: int
    """The window the acceptance run used (the longest window the profile covers)."""
    new_tokens: int = 0
    """Tokens the acceptance run emitted."""
    cycles: int = 0
    """Cycles of the acceptance run."""
    decode_s: float = 0.0
    """Seconds of the acceptance run's cycles, the first (prefill) cycle of each prompt excluded."""
    decode_tokens: int = 0
    """Tokens those cycles emitted."""
    step_seconds: list[float] = field(default_factory=list)
    """Timing samples behind `costs` (target 1-token steps), to report their spread."""

    def table(self, windows: Sequence[int]) -> list[WindowEstimate]:
        return window_table(self.costs, self.acceptance, windows)

    def best(self, max_window: int = 16) -> int:
        return best_window(self.costs, self.acceptance, max_window)


def time_steps(model: Any, prompt: Sequence[int], chunk_sizes: Sequence[int], repeats: int = 7, pad_token_id: int = 0, with_logits: bool = False) -> list[list[float]]:
    """Seconds of `forward_rows` feeding a chunk of each size to one row that already holds `prompt`
    (batch 1, the engine's cache path); one list of `repeats` samples per size, after one warm-up call."""
    prompt = [int(token) for token in prompt]
    cache = RowKVCache(model, 1, len(prompt) + max(chunk_sizes) + 1)
    forward_rows(model, cache, [0], [prompt], pad_token_id, last=[1])
    base = cache.lengths[0]
    samples: list[list[float]] = []
    for size in chunk_sizes:
        chunk = (prompt * (size // len(prompt) + 1))[:size]
        times = []
        for index in range(repeats + 1):
            cache.truncate(0, base)
            start = time.perf_counter()
            forward_rows(model, cache, [0], [chunk], pad_token_id, last=[size], with_logits=with_logits)
            if index:  # the first call is a warm-up
                times.append(time.perf_counter() - start)
        samples.append(times)
    return samples


def measure_pair(
    target: Any,
    draft: Any,
    prompts: Sequence[Sequence[int]],
    *,
    window: int = 8,
    max_new_tokens: int = 64,
    eos_token_ids: Sequence[int] = (),
    pad_token_id: int = 0,
    repeats: int = 7,
    rule: Any = None,
    min_samples: int = 10,
) -> PairProfile:
    """Measure a pair at batch 1: median step seconds of the draft (1 token) and of the target (1..window+1
    tokens) on the cache path, then decoding of `prompts` at `window` under `rule` (default exact), one
    prompt at a time, for the acceptance per position and the engine's overhead per cycle (the median cycle time the
    forwards do not explain), and plain greedy decoding (window 0) of the first prompt for the overhead of a
    greedy cycle. Positions verified in fewer than `min_samples` cycles are left out of the profile (its last
    entry stands for them), except the first."""
    from autojudge.decode.engine.acceptance import ExactRule
    from autojudge.decode.engine.core import EngineCore, RequestSettings

    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    probe = list(prompts[0])
    target_samples = time_steps(target, probe, list(range(1, window + 2)), repeats, pad_token_id, with_logits=True)
    draft_samples = time_steps(draft, probe, [1], repeats, pad_token_id)
    verify_s = tuple(statistics.median(times) for times in target_samples)
    draft_s = statistics.median(draft_samples[0])

    engine = EngineCore(target, draft, eos_token_ids=eos_token_ids, pad_token_id=pad_token_id, default_window=window, max_batch=1)
    settings = RequestSettings(max_new_tokens=max_new_tokens, rule=rule or ExactRule())
    reached = [0] * window
    accepted = [0] * window
    new_tokens = cycles = decode_tokens = 0
    decode_s = 0.0
    residuals: list[float] = []  # per decode cycle: seconds the forwards do not explain
    for prompt in prompts:
        engine.add_request(prompt, settings)
        first, done = True, False
        proposed_before, histogram_before = 0, []  # the request's counters before this cycle
        while not done:
            start = time.perf_counter()
            update = engine.step().updates[0]
            seconds = time.perf_counter() - start
            metrics, done = update.metrics, update.finished
            k, n = cycle_of(metrics.draft_tokens - proposed_before, histogram_before, metrics.accepted_lengths)
            proposed_before, histogram_before = metrics.draft_tokens, list(metrics.accepted_lengths)
            cycles += 1
            new_tokens += len(update.new_token_ids)
            for position in range(k):
                reached[position] += position <= n
                accepted[position] += position < n
            if not first:
                decode_s += seconds
                decode_tokens += len(update.new_token_ids)
                residuals.append(seconds - k * draft_s - verify_s[min(k, len(verify_s) - 1)])
            first = False
    overhead = max(0.0, statistics.median(residuals)) if residuals else 0.0  # the median: robust to a stall on a shared machine
    greedy_residuals: list[float] = []
    engine.add_request(prompts[0], RequestSettings(max_new_tokens=max_new_tokens, window=0))
    first, done = True, False
    while not done:
        start = time.perf_counter()
        done = engine.step().updates[0].finished
        if not first:
            greedy_residuals.append(time.perf_counter() - start - verify_s[0])
        first = False
    greedy_overhead = max(0.0, statistics.median(greedy_residuals)) if greedy_residuals else overhead
    costs = PairCosts(target_s=verify_s[0], draft_s=draft_s, verify_s=verify_s, cycle_overhead_s=overhead, greedy_overhead_s=greedy_overhead)
    profile = [accepted[i] / reached[i] if reached[i] else 0.0 for i in range(window)]
    while len(profile) > 1 and reached[len(profile) - 1] < min_samples:
        profile.pop()
    return PairProfile(
        costs=costs, acceptance=tuple(profile), reached=tuple(reached), window=window, new_tokens=new_tokens,
        cycles=cycles, decode_s=decode_s, decode_tokens=decode_tokens, step_seconds=target_samples[0],
    )  # fmt: skip


def cycle_of(proposed: int, histogram_before: Sequence[int], histogram_after: Sequence[int]) -> tuple[int, int]:
    """(window k, accepted n) of one cycle of a request, from the proposals it verified and its
    accepted-length histogram before and after the cycle."""
    for n, count in enumerate(histogram_after):
        if count > (histogram_before[n] if n < len(histogram_before) else 0):
            return proposed, n
    raise ValueError("the histogram did not change: no cycle ran")


__all__ = ["PairCosts", "PairProfile", "WindowEstimate", "best_window", "cycle_of", "expected_tokens", "measure_pair", "time_steps", "window_table"]
