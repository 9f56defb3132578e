"""Acceptance rules: which draft tokens a verification pass keeps (docs/design.md §1.4, step 3).

A rule is called as `rule(draft_tokens, target_logits, h_target, h_draft)` (rows shorter
than k padded with draft token -1) and returns a boolean mask `[batch, k]`: True where draft token c_i may stay. The engine keeps the
accepted *prefix* (`accepted_lengths`): everything from the first False on is dropped and
the target's own token replaces the first rejected one. So a rule only ever decides from
the first unaccepted position on; an exact match is always accepted.

- `ExactRule`: c_i == argmax T (output identical to the target's greedy decoding).
- `TopKRule(top_k)`: c_i among T's top-K tokens (the simple lossy baseline).
- `JudgeRule(judge, threshold)`: exact match, or a mismatch the judge calls unimportant
  (`p_important < threshold`). `judge(h_target [n, Ht], h_draft [n, Hd]) -> prob [n]` is any
  callable (a trained `autojudge.judge.Judge`, or a function in a test); it is only
  evaluated on mismatching positions.
- `TypicalRule(epsilon, delta)`: training-free typical acceptance (Medusa, vLLM): exact match,
  or target probability of c_i > min(epsilon, delta * exp(-H)), H the entropy of the target
  distribution at that position. Defaults: epsilon 0.09, delta sqrt(epsilon) = 0.3.
- `ProbRule(min_prob)`: training-free: exact match, or target probability of c_i >= min_prob.
- `FlyRule(entropy, window)`: training-free FLy (arXiv 2511.22972): a mismatch is accepted when
  the target is uncertain there (top-3 entropy >= `entropy`) and the next `window - 1` draft
  tokens, verified in the same pass, all equal the target's argmax (the draft re-synchronised).
"""

from __future__ import annotations

from typing import Any, Callable, Container, Sequence

import torch

Judge = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MODES = ("exact", "topk", "autojudge", "typical", "prob", "fly")


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
    """Whether the rule reads `h_draft`. Such a rule must decide each position from that position's
    features alone: the engine gives the draft's hidden state at the last proposal c_k only where
    the rule decides there (it runs one extra draft step for those rows)."""

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
        # a judge on target features only ("DT") does not read the draft's hidden states
        self.needs_draft_hidden = getattr(judge, "feature_setup", "DD-DT") != "DT"

    def __call__(self, draft_tokens, target_logits, h_target=None, h_draft=None):
        if h_target is None or (h_draft is None and self.needs_draft_hidden):
            raise ValueError("JudgeRule needs h_target (and h_draft unless the judge's feature_setup is 'DT')")
        accept = exact_matches(draft_tokens, target_logits)  # [batch, k]
        mismatch = ~accept & (draft_tokens >= 0)  # [batch, k]; negative = padding of a shorter row
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


def draft_token_probs(draft_tokens: torch.Tensor, target_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(target probability of each draft token `[batch, k]`, entropy of the target distribution
    `[batch, k]`, in nats), at temperature 1, computed in float32."""
    log_probs = torch.log_softmax(target_logits.float(), dim=-1)  # [batch, k, vocab]
    token_log_probs = log_probs.gather(-1, draft_tokens.clamp(min=0)[..., None].long()).squeeze(-1)  # [batch, k] (padding -1)
    entropy = -(log_probs.exp() * log_probs).sum(dim=-1)  # [batch, k]
    return token_log_probs.exp(), entropy


TYPICAL_EPSILON = 0.09
"""Default posterior threshold epsilon of typical acceptance (Medusa's and vLLM's 0.09)."""


class TypicalRule(AcceptanceRule):
    """Typical acceptance (Medusa; vLLM's TypicalAcceptanceSampler): accept c_i when it is the
    target's argmax or p_T(c_i) > min(epsilon, delta * exp(-H(p_T))).

    delta defaults to sqrt(epsilon) (vLLM's convention: 0.3 at its default epsilon 0.09, which
    is also Medusa's pair), so one number sweeps the rule. Training-free: no mined labels."""

    def __init__(self, epsilon: float = TYPICAL_EPSILON, delta: float | None = None):
        if not 0.0 < epsilon <= 1.0:
            raise ValueError(f"typical acceptance epsilon must be in (0, 1], got {epsilon}")
        self.epsilon = float(epsilon)
        self.delta = float(delta) if delta is not None else self.epsilon ** 0.5
        if self.delta <= 0.0:
            raise ValueError(f"typical acceptance delta must be > 0, got {self.delta}")

    def __call__(self, draft_tokens, target_logits, h_target=None, h_draft=None):
        probs, entropy = draft_token_probs(draft_tokens, target_logits)  # [batch, k] each
        threshold = torch.minimum(torch.full_like(entropy, self.epsilon), self.delta * torch.exp(-entropy))
        return (probs > threshold) | exact_matches(draft_tokens, target_logits)

    def describe(self) -> dict[str, Any]:
        return {"mode": "typical", "epsilon": self.epsilon, "delta": self.delta}


class ProbRule(AcceptanceRule):
    """Accept c_i when it is the target's argmax or the target gives it probability >= min_prob
    (temperature 1). Training-free."""

    def __init__(self, min_prob: float = 0.3):
        if not 0.0 < min_prob <= 1.0:
            raise ValueError(f"min_prob must be in (0, 1], got {min_prob}")
        self.min_prob = float(min_prob)

    def __call__(self, draft_tokens, target_logits, h_target=None, h_draft=None):
        probs, _ = draft_token_probs(draft_tokens, target_logits)  # [batch, k]
        return (probs >= self.min_prob) | exact_matches(draft_tokens, target_logits)

    def describe(self) -> dict[str, Any]:
        return {"mode": "prob", "min_prob": self.min_prob}


FLY_ENTROPY = 0.3
"""Default entropy threshold of FLy (nats, top-3 entropy; their shipped Llama-3.1-70B config)."""
FLY_WINDOW = 6
"""Default FLy window: a mismatch plus the draft tokens after it that must all match (their config)."""


def top3_entropy(target_logits: torch.Tensor) -> torch.Tensor:
    """`[batch, k]` FLy's uncertainty: -sum p log p over the target's 3 most likely tokens (full-vocabulary
    softmax, float32, nats)."""
    top = torch.log_softmax(target_logits.float(), dim=-1).topk(min(3, target_logits.shape[-1]), dim=-1).values
    return -(top.exp() * top).sum(dim=-1)


class FlyRule(AcceptanceRule):
    """FLy (Li et al., ICLR 2026): accept c_i when it is the target's argmax, or when the target is
    uncertain at i (top-3 entropy >= `entropy`) and c_{i+1}..c_{i+window-1} all equal the target's
    argmax: a paraphrase after which the draft is back on the target's path.

    The decision on a mismatch is deferred until the tokens after it are verified: in one pass
    that means i + window < k (the authors' rule also leaves the last `window` positions of a
    proposal to exact matching), so a window of w needs at least w + 1 draft tokens per cycle to
    accept anything. Rows shorter than k are marked by negative draft tokens (padding)."""

    def __init__(self, entropy: float = FLY_ENTROPY, window: int = FLY_WINDOW):
        if not entropy >= 0.0 or entropy > 10.0:
            raise ValueError(f"FLy entropy threshold must be in [0, 10] nats, got {entropy}")
        if not 2 <= window <= 64:
            raise ValueError(f"FLy window must be in 2..64, got {window}")
        self.entropy, self.window = float(entropy), int(window)

    def __call__(self, draft_tokens, target_logits, h_target=None, h_draft=None):
        exact = exact_matches(draft_tokens, target_logits) & (draft_tokens >= 0)  # [batch, k]
        batch, k = exact.shape
        if k < self.window + 1:
            return exact
        lengths = (draft_tokens >= 0).sum(dim=-1)  # [batch]
        # followers[:, i]: c_{i+1} .. c_{i+window-1} all exact (for i <= k - window)
        followers = exact[:, 1:].unfold(1, self.window - 1, 1).all(dim=-1)  # [batch, k - window + 1]
        resync = torch.zeros_like(exact)
        resync[:, : followers.shape[1]] = followers
        position = torch.arange(k, device=exact.device)[None, :]
        decided = position + self.window < lengths[:, None]  # the authors' last-window exclusion, per row
        uncertain = top3_entropy(target_logits) >= self.entropy
        return exact | (~exact & resync & uncertain & decided & (draft_tokens >= 0))

    def describe(self) -> dict[str, Any]:
        return {"mode": "fly", "entropy": self.entropy, "window": self.window}


def build_rule(
    mode: str, judge: Judge | None = None, threshold: float | None = None, top_k: int = 4,
    epsilon: float = TYPICAL_EPSILON, min_prob: float = 0.3, fly_entropy: float = FLY_ENTROPY,
    fly_window: int = FLY_WINDOW,
) -> AcceptanceRule:
    """The rule for a decode mode: "exact" | "topk" | "autojudge" (needs `judge`; threshold
    defaults to `judge.default_threshold`) | "typical" (epsilon) | "prob" (min_prob) | "fly"
    (fly_entropy, fly_window)."""
    if mode == "fly":
        return FlyRule(fly_entropy, fly_window)
    if mode == "exact":
        return ExactRule()
    if mode == "topk":
        return TopKRule(top_k)
    if mode == "typical":
        return TypicalRule(epsilon)
    if mode == "prob":
        return ProbRule(min_prob)
    if mode == "autojudge":
        if judge is None:
            raise ValueError("mode 'autojudge' needs a judge")
        if threshold is None:
            threshold = getattr(judge, "default_threshold", None)
        if threshold is None:
            raise ValueError("mode 'autojudge' needs a threshold (the judge has no default_threshold)")
        return JudgeRule(judge, threshold)
    raise ValueError(f"unknown decode mode {mode!r}; choose from {', '.join(MODES)}")
