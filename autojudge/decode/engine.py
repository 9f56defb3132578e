"""Greedy speculative decoding with KV caches on both models (DESIGN.md §1.4).

One cycle, window k, for a batch of rows of different lengths:

1. `propose`: the draft feeds each row's pending tokens (those not in its cache yet: the
   whole prompt in the first cycle, then 1 or 2 tokens), then proposes c_1..c_k greedily,
   one cached step each; with a rule that reads draft features it also feeds c_k, so it
   has its hidden state at every proposed token.
2. `verify`: the target feeds its pending token(s) plus c_1..c_k in one cached forward and
   returns argmax t_1..t_{k+1} and its hidden states at the positions of c_1..c_k.
3. `accept`: the rule's mask `[batch, k]`, reduced to the accepted prefix length n.
4. Emit c_1..c_n then t_{n+1} (replacement for the first rejected token, or the bonus).
5. `roll_back`: both caches drop what is beyond the emitted text: the target keeps all
   emitted tokens but the last (it becomes pending), the draft keeps what it had up to the same.

There is no separate prefill: a model's pending tokens are whatever of its row it has
not cached yet, so the first cycle reads the prompts. Finished rows (EOS, max_new_tokens,
stop string) leave the batch and the caches at once. With `ExactRule` the output equals
`target.generate(do_sample=False)` token for token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from autojudge.decode.acceptance import AcceptanceRule, accepted_lengths
from autojudge.decode.forward import BatchCache, cached_forward, left_pad, truncate_logits
from autojudge.decode.metrics import RequestMetrics


@dataclass
class GenerationResult:
    """The output of one request."""

    token_ids: list[int]
    """Generated token ids (prompt excluded; EOS included when emitted; cut after a stop string)."""
    metrics: RequestMetrics
    """Counters for this request."""
    stop_reason: str = "length"
    """"eos", "stop_string" or "length" (max_new_tokens reached)."""


@dataclass
class Proposal:
    """The draft's k tokens for every row, with its hidden states at them."""

    tokens: torch.Tensor  # [batch, k] long
    hidden: torch.Tensor | None  # [batch, k, Hd], None when not asked for
    draft_calls: int  # draft forward passes used


@dataclass
class Verification:
    """The target's view of the proposal."""

    logits: torch.Tensor  # [batch, k + 1, V]: position i predicts token i + 1 of the proposal
    argmax: torch.Tensor  # [batch, k + 1] long: t_1..t_{k+1}
    hidden: torch.Tensor  # [batch, k, Ht]: target hidden at the positions of c_1..c_k


@dataclass
class _Row:
    """Bookkeeping for one request while it is active."""

    index: int  # position in the caller's list
    tokens: list[int]  # prompt + generated so far
    prompt_len: int
    stop_strings: Sequence[str]
    metrics: RequestMetrics = field(default_factory=RequestMetrics)
    stop_reason: str | None = None

    @property
    def generated(self) -> list[int]:
        return self.tokens[self.prompt_len :]


def pending_tokens(rows: Sequence[_Row], cache: BatchCache) -> list[list[int]]:
    """Per row, the tokens the model has not cached yet."""
    return [row.tokens[cached:] for row, cached in zip(rows, cache.lengths().tolist())]


def greedy(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Argmax over the first `vocab_size` columns (drops padded vocabulary of a draft)."""
    return truncate_logits(logits, vocab_size).argmax(dim=-1)


def propose(draft: Any, cache: BatchCache, pending: list[list[int]], k: int, vocab_size: int, with_hidden: bool, pad_id: int) -> Proposal:
    """Draft k tokens per row greedily from the cached draft state (k or k+1 draft calls)."""
    device = cache.valid.device
    ids, mask = left_pad(pending, pad_id, device)  # [batch, p]
    out = cached_forward(draft, cache, ids, mask, last=1)
    token = greedy(out.logits[:, -1], vocab_size)  # [batch]
    tokens, hidden, calls = [token], [], 1
    for step in range(1, k + int(with_hidden)):
        out = cached_forward(draft, cache, token[:, None], last=1)  # feeds c_step
        calls += 1
        hidden.append(out.hidden[:, -1])  # [batch, Hd]: draft hidden at c_step
        if step < k:
            token = greedy(out.logits[:, -1], vocab_size)
            tokens.append(token)
    return Proposal(
        tokens=torch.stack(tokens, dim=1),  # [batch, k]
        hidden=torch.stack(hidden, dim=1) if with_hidden else None,  # [batch, k, Hd]
        draft_calls=calls,
    )


def verify(target: Any, cache: BatchCache, pending: list[list[int]], proposal: torch.Tensor, pad_id: int) -> Verification:
    """One cached target forward over pending tokens + proposal `[batch, k]`."""
    device = cache.valid.device
    ids, mask = left_pad(pending, pad_id, device)  # [batch, p]
    k = proposal.shape[1]
    ids = torch.cat([ids, proposal.to(device)], dim=1)  # [batch, p + k]
    mask = torch.cat([mask, torch.ones_like(proposal, dtype=torch.bool, device=device)], dim=1)
    out = cached_forward(target, cache, ids, mask, last=k + 1)
    return Verification(logits=out.logits, argmax=out.logits.argmax(dim=-1), hidden=out.hidden[:, 1:])


def accept(rule: AcceptanceRule, proposal: Proposal, verification: Verification) -> torch.Tensor:
    """`[batch]` long: accepted prefix length n under `rule`."""
    k = proposal.tokens.shape[1]
    if k == 0:
        return torch.zeros(proposal.tokens.shape[0], dtype=torch.long)
    mask = rule(proposal.tokens, verification.logits[:, :k], verification.hidden, proposal.hidden)  # [batch, k]
    return accepted_lengths(mask)


def emitted_tokens(proposal: torch.Tensor, target_argmax: torch.Tensor, accepted: torch.Tensor) -> list[list[int]]:
    """Per row: c_1..c_n followed by t_{n+1} (proposal `[batch, k]`, argmax `[batch, k+1]`, accepted `[batch]`)."""
    drafted, chosen, lengths = proposal.tolist(), target_argmax.tolist(), accepted.tolist()
    return [row[:n] + [targets[n]] for row, targets, n in zip(drafted, chosen, lengths)]


def roll_back(cache: BatchCache, rows: Sequence[_Row]) -> None:
    """Drop cached tokens beyond each row's emitted text minus its last token (which stays pending)."""
    lengths = cache.lengths().tolist()
    cache.truncate([min(cached, len(row.tokens) - 1) for cached, row in zip(lengths, rows)])


def _stop_index(generated: list[int], start: int, eos: set[int], stop_strings: Sequence[str], tokenizer: Any) -> tuple[int, str] | None:
    """Earliest cut (number of generated tokens to keep, reason) among positions >= start, or None."""
    for end in range(start + 1, len(generated) + 1):
        if generated[end - 1] in eos:
            return end, "eos"
        if stop_strings and tokenizer is not None:
            text = tokenizer.decode(generated[:end], skip_special_tokens=False)
            if any(stop in text for stop in stop_strings):
                return end, "stop_string"
    return None


class SpeculativeEngine:
    """Greedy speculative decoding of batches of prompts with a target, a draft and an acceptance rule."""

    def __init__(
        self,
        target: Any,
        draft: Any,
        rule: AcceptanceRule,
        window: int = 4,
        eos_token_ids: Sequence[int] | int | None = (),
        pad_token_id: int | None = 0,
    ):
        """window: draft tokens proposed per cycle (k); eos_token_ids: a row stops after emitting one;
        pad_token_id: filler id for padding slots (never attended to)."""
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.target, self.draft, self.rule, self.window = target, draft, rule, window
        if eos_token_ids is None:
            eos_token_ids = ()
        self.eos = {int(eos_token_ids)} if isinstance(eos_token_ids, int) else {int(t) for t in eos_token_ids}
        self.pad_token_id = 0 if pad_token_id is None else int(pad_token_id)
        self.vocab_size = target.get_output_embeddings().weight.shape[0]

    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        max_new_tokens: int,
        stop_strings: Sequence[str] = (),
        tokenizer: Any = None,
    ) -> list[GenerationResult]:
        """Decode every prompt (token ids, any lengths) together; one result per prompt, in order.

        stop_strings need `tokenizer` (to decode the text); a row stops after the token that completes one.
        """
        if stop_strings and tokenizer is None:
            raise ValueError("stop_strings need a tokenizer")
        if any(len(prompt) == 0 for prompt in prompt_ids):
            raise ValueError("every prompt needs at least one token")
        start = time.perf_counter()
        rows = [_Row(i, list(map(int, p)), len(p), stop_strings) for i, p in enumerate(prompt_ids)]
        finished: list[_Row] = []
        if max_new_tokens <= 0:
            finished, rows = rows, []
        device = next(self.target.parameters()).device
        target_cache = BatchCache.empty(self.target, len(rows), device)
        draft_cache = BatchCache.empty(self.draft, len(rows), device)
        while rows:
            remaining = max(max_new_tokens - len(row.generated) for row in rows)
            k = min(self.window, remaining - 1)  # no use drafting past the budget
            proposal = self._propose(draft_cache, rows, k)
            verification = verify(self.target, target_cache, pending_tokens(rows, target_cache), proposal.tokens, self.pad_token_id)
            accepted = accept(self.rule, proposal, verification)
            emitted = emitted_tokens(proposal.tokens, verification.argmax, accepted)
            for row, tokens, n in zip(rows, emitted, accepted.tolist()):
                row.metrics.record_cycle(n, proposal.draft_calls)
                self._append(row, tokens, max_new_tokens, tokenizer)
            roll_back(target_cache, rows)
            roll_back(draft_cache, rows)
            done = [i for i, row in enumerate(rows) if row.stop_reason is not None]
            if done:
                now = time.perf_counter() - start
                for i in done:
                    rows[i].metrics.wall_s = now
                finished += [rows[i] for i in done]
                keep = [i for i in range(len(rows)) if i not in set(done)]
                rows = [rows[i] for i in keep]
                if rows:
                    target_cache.select_rows(keep)
                    draft_cache.select_rows(keep)
        wall = time.perf_counter() - start
        results: list[GenerationResult | None] = [None] * len(prompt_ids)
        for row in finished:
            row.metrics.new_tokens = len(row.generated)
            row.metrics.wall_s = row.metrics.wall_s or wall
            results[row.index] = GenerationResult(row.generated, row.metrics, row.stop_reason or "length")
        return results  # type: ignore[return-value]

    def _propose(self, cache: BatchCache, rows: Sequence[_Row], k: int) -> Proposal:
        if k <= 0:  # budget allows one token: the target decides alone
            empty = torch.zeros((len(rows), 0), dtype=torch.long, device=cache.valid.device)
            return Proposal(tokens=empty, hidden=None, draft_calls=0)
        return propose(
            self.draft, cache, pending_tokens(rows, cache), k, self.vocab_size, self.rule.needs_draft_hidden, self.pad_token_id
        )

    def _append(self, row: _Row, tokens: list[int], max_new_tokens: int, tokenizer: Any) -> None:
        """Add a cycle's tokens to a row and cut at EOS, a stop string or the budget."""
        before = len(row.generated)
        row.tokens.extend(tokens)
        generated = row.generated
        cut = _stop_index(generated, before, self.eos, row.stop_strings, tokenizer)
        if cut is not None and cut[0] <= max_new_tokens:
            del row.tokens[row.prompt_len + cut[0] :]
            row.stop_reason = cut[1]
        elif len(generated) >= max_new_tokens:
            del row.tokens[row.prompt_len + max_new_tokens :]
            row.stop_reason = "length"
