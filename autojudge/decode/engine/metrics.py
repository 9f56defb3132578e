"""Decode metrics per request and aggregated (docs/design.md §1.4).

A "cycle" is one verification pass of the target: draft proposes k tokens, the target
checks them, n are accepted and one target token follows (so a cycle emits n + 1 tokens,
fewer only when a stop cuts it). `accepted_lengths[n]` counts cycles that accepted n
draft tokens (the bonus/replacement token is not counted there, but is counted in
`tokens_per_target_call`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence


@dataclass
class RequestMetrics:
    """Counters for one request (one prompt) of a decode call."""

    new_tokens: int = 0
    """Generated tokens returned (after stops), EOS included when emitted."""
    target_calls: int = 0
    """Target forward passes this request took part in (prefill + one per cycle)."""
    draft_calls: int = 0
    """Draft forward passes this request took part in."""
    draft_tokens: int = 0
    """Draft tokens proposed to the target for verification (the sum of the cycles' windows)."""
    accepted_lengths: list[int] = field(default_factory=list)
    """Histogram: `accepted_lengths[n]` = cycles in which n draft tokens were accepted (n = 0..window)."""
    wall_s: float = 0.0
    """Seconds from the start of the decode call until this request finished."""

    @property
    def cycles(self) -> int:
        """Verification passes (equals target_calls)."""
        return sum(self.accepted_lengths)

    @property
    def tokens_per_target_call(self) -> float:
        """Emitted tokens per target forward pass (1.0 for plain greedy decoding)."""
        return self.new_tokens / self.target_calls if self.target_calls else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Emitted tokens per second of wall time."""
        return self.new_tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def mean_accepted(self) -> float:
        """Mean number of draft tokens accepted per cycle (without the bonus token)."""
        cycles = self.cycles
        return sum(n * count for n, count in enumerate(self.accepted_lengths)) / cycles if cycles else 0.0

    def record_cycle(self, accepted: int, draft_calls: int, draft_tokens: int = 0) -> None:
        """Count one verification cycle that verified `draft_tokens` proposals and accepted `accepted` of them."""
        if len(self.accepted_lengths) <= accepted:
            self.accepted_lengths.extend([0] * (accepted + 1 - len(self.accepted_lengths)))
        self.accepted_lengths[accepted] += 1
        self.target_calls += 1
        self.draft_calls += draft_calls
        self.draft_tokens += draft_tokens

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, derived rates included."""
        record = asdict(self)
        record.update(
            tokens_per_target_call=self.tokens_per_target_call,
            tokens_per_s=self.tokens_per_s,
            mean_accepted=self.mean_accepted,
        )
        return record


def aggregate(metrics: Sequence[RequestMetrics], wall_s: float | None = None) -> RequestMetrics:
    """Sum counters and histograms over requests. `wall_s` defaults to the longest request's
    (right for requests decoded together in one call); pass the total for sequential calls."""
    total = RequestMetrics()
    for item in metrics:
        total.new_tokens += item.new_tokens
        total.target_calls += item.target_calls
        total.draft_calls += item.draft_calls
        total.draft_tokens += item.draft_tokens
        for n, count in enumerate(item.accepted_lengths):
            if len(total.accepted_lengths) <= n:
                total.accepted_lengths.append(0)
            total.accepted_lengths[n] += count
    total.wall_s = wall_s if wall_s is not None else max((item.wall_s for item in metrics), default=0.0)
    return total
