"""Acceptance rules: which draft tokens a verification pass keeps (DESIGN.md §1.4, step 3).

A rule is called as `rule(draft_tokens, target_logits, h_target, h_draft)` and returns a
boolean mask `[batch, k]`: True where draft token c_i may stay. The engine keeps the
accepted *prefix* (`accepted_lengths`): everything from the first False on is dropped and
the target's own token replaces the first rejected one. So a rule only ever decides from
the first unaccepted position on; an exact match is always accepted.

- `ExactRule`: c_i == argmax T (output identical to the target's greedy decoding).
- `TopKRule(top_k)`: c_i among T's top-K tokens (the simple lossy baseline).
- `JudgeRule(judge, threshold)`: exact match, or a mismatch the judge calls unimportant
  (`p_important < threshold`). `judge(h_target [n, Ht], h_draft [n, Hd]) -> prob [n]` is any
  callable (a trained `autojudge.judge.Judge`, or a function in a test); it is only
  evaluated on mismatching positions.
"""

from __future__ import annotations

from typing import Any, Callable, Container, Sequence

import torch

Judge = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MODES = ("exact", "topk", "autojudge")


def accepted_lengths(mask: torch.Tensor) -> torch.Tensor:
    """`[batch]` long: length of the all-True prefix of each row of `mask` `[batch, k]`."""
    return mask.long().cumprod(dim=-1).sum(dim=-1)


def greedy_prefix(proposed: Sequence[int], target_tokens: Sequence[int], stop_tokens: Container[int] = ()) -> int:
    """Greedy acceptance on token lists: how many of `proposed` a target whose greedy tokens at the
    same positions are `target_tokens` keeps (the run of equal tokens, ending after a stop token).

    The engine's exact rule is this on tensors (`exact_matches` + `accepted_lengths`); the miner's
    lookahead loops and the acceptance simulation (`real/measure.py`) call it directly."""
    accepted = 0
    for drafted, chosen in zip(proposed, target_tokens):
        if drafted != chosen:
            break
        accepted += 1
        if drafted in stop_tokens:
            break
    return accepted


def exact_matches(draft_tokens: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """`[batch, k]` bool: draft token equals the target's argmax."""
    return target_logits.argmax(dim=-1) == draft_tokens


class AcceptanceRule:
    """Base class: decides per draft token whether it may be kept."""

    needs_draft_hidden: bool = False
    """Whether the rule reads `h_draft` (the engine then runs one extra draft step per cycle to get it)."""

    def __call__(
        self,
        draft_tokens: torch.Tensor,  # [batch, k] long
        target_logits: torch.Tensor,  # [batch, k, vocab]: logits that predict positions 1..k
        h_target: torch.Tensor | None = None,  # [batch, k, Ht]: target hidden at the position holding c_i
        h_draft: torch.Tensor | None = None,  # [batch, k, Hd]: draft hidden at the position holding c_i
    ) -> torch.Tensor:  # [batch, k] bool
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Settings of the rule, for logs and output records."""
        return {"mode": "base"}


class ExactRule(AcceptanceRule):
    """Accept c_i iff it is the target's greedy token: lossless speculative decoding."""

    def __call__(self, draft_tokens, target_logits, h_target=None, h_draft=None):
        return exact_matches(draft_tokens, target_logits)

    def describe(self) -> dict[str, Any]:
        return {"mode": "exact"}


class TopKRule(AcceptanceRule):
    """Accept c_i iff it is among the target's `top_k` most likely tokens."""

    def __init__(self, top_k: int = 4):
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k = top_k

    def __call__(self, draft_tokens, target_logits, h_target=None, h_draft=None):
        top = target_logits.topk(min(self.top_k, target_logits.shape[-1]), dim=-1).indices  # [batch, k, K]
        in_top = (top == draft_tokens[..., None]).any(dim=-1)  # [batch, k]
        return in_top | exact_matches(draft_tokens, target_logits)

    def describe(self) -> dict[str, Any]:
        return {"mode": "topk", "top_k": self.top_k}


class JudgeRule(AcceptanceRule):
    """Accept exact matches, and mismatches whose judged probability of being important is below `threshold`."""

    def __init__(self, judge: Judge, threshold: float):
        self.judge = judge
        self.threshold = float(threshold)
        # a judge on target features only ("DT") does not need the extra draft step
        self.needs_draft_hidden = getattr(judge, "feature_setup", "DD-DT") != "DT"

    def __call__(self, draft_tokens, target_logits, h_target=None, h_draft=None):
        if h_target is None or (h_draft is None and self.needs_draft_hidden):
            raise ValueError("JudgeRule needs h_target (and h_draft unless the judge's feature_setup is 'DT')")
        accept = exact_matches(draft_tokens, target_logits)  # [batch, k]
        mismatch = ~accept  # [batch, k]
        if mismatch.any():
            h_t = h_target[mismatch]  # [n, Ht]
            h_d = h_draft[mismatch] if h_draft is not None else None  # [n, Hd]
            prob = torch.as_tensor(self.judge(h_t, h_d)).reshape(-1).to(accept.device)  # [n]
            if prob.shape[0] != h_t.shape[0]:
                raise ValueError(f"judge returned {prob.shape[0]} probabilities for {h_t.shape[0]} rows")
            accept = accept.clone()
            accept[mismatch] = prob < self.threshold
        return accept

    def describe(self) -> dict[str, Any]:
        return {"mode": "autojudge", "threshold": self.threshold}


def build_rule(mode: str, judge: Judge | None = None, threshold: float | None = None, top_k: int = 4) -> AcceptanceRule:
    """The rule for a decode mode: "exact" | "topk" | "autojudge" (needs `judge`; threshold
    defaults to `judge.default_threshold`)."""
    if mode == "exact":
        return ExactRule()
    if mode == "topk":
        return TopKRule(top_k)
    if mode == "autojudge":
        if judge is None:
            raise ValueError("mode 'autojudge' needs a judge")
        if threshold is None:
            threshold = getattr(judge, "default_threshold", None)
        if threshold is None:
            raise ValueError("mode 'autojudge' needs a threshold (the judge has no default_threshold)")
        return JudgeRule(judge, threshold)
    raise ValueError(f"unknown decode mode {mode!r}; choose from {', '.join(MODES)}")
