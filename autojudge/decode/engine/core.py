"""The engine core: greedy speculative decoding with continuous batching (docs/design.md §1.4, §1.5).

The core holds a set of active rows, one request each, on the per-row-slot caches of the
target and the draft (`cache.RowKVCache`), and runs one cycle per `step()`:

1. `admit`: waiting requests take free slots (up to `max_batch` rows). A new row's prompt is
   simply its pending tokens: there is no separate prefill, the cycle's forwards read it.
2. `propose`: the draft feeds each row's pending tokens, then proposes c_1..c_k greedily, one
   batched step each (k is the row's own window, cut to its remaining budget); so it has its
   hidden state at c_1..c_{k-1}, and a rule that reads draft features gets the one at c_k
   only when it decides there (step 4).
3. `verify`: one batched target forward over every row's pending tokens + c_1..c_k gives the
   argmax t_1..t_{k+1}, the logits that predict c_1..c_k and the hidden states at c_1..c_k.
   Requests that arrived while the draft proposed (`step(poll)`) join here with no proposal:
   the verification reads their prompts and gives their first token.
4. `accept`: each row's acceptance rule (per request: exact, topk, autojudge, ...) gives the
   mask `[rows, k]`, reduced to the accepted prefix length n. A rule that reads draft features
   needs the draft's hidden state at c_k only in a row that kept c_1..c_{k-1} and mismatches at
   c_k; the draft feeds c_k for those rows alone (`feed_last`), one batched step, instead of
   an extra step for every row in every cycle.
5. Emit c_1..c_n then t_{n+1}; cut at EOS, a stop string or the budget (`apply_stops`).
6. `roll_back`: both caches drop what is beyond the emitted text (the target keeps all but the
   last emitted token, which stays pending). Finished rows free their slots at once.

`add_request(prompt_ids, settings) -> id`, `step() -> StepOutput`, `abort(id)`; `generate()`
is a loop over them. A row with window 0 is plain greedy decoding (the draft never sees it).
With the exact rule every row's output equals `target.generate(do_sample=False)` token for
token, whatever else is in the batch. Not thread-safe: drive it from one thread or loop.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from autojudge.decode.engine.acceptance import FLY_WINDOW, AcceptanceRule, ExactRule, accepted_lengths, build_rule, greedy_prefix
from autojudge.decode.engine.cache import FORWARD_OVERHEAD_TOKENS, RowKVCache, RowOutput, SharedPrefix, forward_rows
from autojudge.decode.engine.lean import compile_lean
from autojudge.decode.engine.metrics import RequestMetrics
from autojudge.setup import DEFAULT_MAX_NEW_TOKENS, DEFAULT_WINDOW


@dataclass(frozen=True)
class RequestSettings:
    """How one request is decoded."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    """Most tokens to generate (EOS included when emitted)."""
    mode: str = "exact"
    """Acceptance rule: "exact", "topk", "autojudge" (needs the engine's judge) or another mode of `build_rule`."""
    threshold: float | None = None
    """The lossy rule's parameter: autojudge tau (None: the judge's default), typical epsilon, prob
    least probability, fly entropy threshold (None: the rule's default)."""
    top_k: int = 4
    """K of the "topk" rule."""
    fly_window: int = FLY_WINDOW
    """Window of the "fly" rule: a mismatch and the draft tokens after it that must match."""
    window: int | None = None
    """Draft tokens proposed per cycle; None: the engine's default; 0: no speculation (plain greedy)."""
    stop_strings: tuple[str, ...] = ()
    """The row stops after the token that completes one of these (needs the engine's tokenizer)."""
    rule: AcceptanceRule | None = None
    """An explicit rule object; overrides mode/threshold/top_k."""


@dataclass
class GenerationResult:
    """The output of one request."""

    token_ids: list[int]
    """Generated token ids (prompt excluded; EOS included when emitted; cut after a stop string)."""
    metrics: RequestMetrics
    """Counters for this request."""
    stop_reason: str = "length"
    """"eos", "stop_string", "length" (max_new_tokens reached) or "abort"."""


@dataclass
class RowUpdate:
    """What one request got from one cycle."""

    request_id: int
    new_token_ids: list[int]
    """Tokens this row emitted in this cycle (after stop cuts; possibly empty)."""
    finished: bool
    stop_reason: str | None
    """"eos" | "stop_string" | "length" when finished, else None."""
    metrics: RequestMetrics
    """The request's running counters."""


@dataclass
class StepOutput:
    """The result of one `step()`."""

    updates: list[RowUpdate]
    """One per row that took part in the cycle (and per request that finished without one)."""


@dataclass
class Request:
    """An active or waiting request."""

    id: int
    tokens: list[int]
    """Prompt + generated so far."""
    prompt_len: int
    settings: RequestSettings
    rule: AcceptanceRule
    window: int
    start: float = field(default_factory=time.perf_counter)
    slot: int | None = None
    stop_reason: str | None = None
    metrics: RequestMetrics = field(default_factory=RequestMetrics)

    @property
    def generated(self) -> list[int]:
        return self.tokens[self.prompt_len :]

    @property
    def capacity(self) -> int:
        """Cache slots this request can need: prompt, budget, one window of drafted tokens and the bonus."""
        return self.prompt_len + self.settings.max_new_tokens + self.window + 2


@dataclass
class Proposal:
    """The draft's tokens for every row of a cycle."""

    tokens: list[list[int]]
    """Per row c_1..c_k (k is the row's own window this cycle, possibly 0)."""
    hidden: list[torch.Tensor | None]
    """Per row the draft hidden states at c_1..c_{k-1} `[k - 1, Hd]` (None when its rule does not read
    them; the one at c_k comes from `feed_last` when the rule needs it)."""
    draft_calls: list[int]
    """Per row the draft forward passes it took part in."""


def pending(request: Request, cache: RowKVCache) -> list[int]:
    """The tokens of a request that `cache` has not stored yet."""
    assert request.slot is not None
    return request.tokens[cache.lengths[request.slot] :]


def propose(
    draft: Any, cache: RowKVCache, rows: Sequence[Request], windows: Sequence[int], vocab_size: int, pad_id: int,
    overhead_tokens: int = FORWARD_OVERHEAD_TOKENS,
) -> Proposal:
    """Draft each row's window greedily: the pending tokens first, then one batched step per
    token (k steps for a window of k: c_k itself is not fed). Rows whose pending
    tokens differ much in length (a new row's prompt) run in separate forwards (`forward_rows` with `overhead_tokens`)."""
    tokens: list[list[int]] = [[] for _ in rows]
    hidden: list[list[torch.Tensor]] = [[] for _ in rows]
    empty: dict[int, torch.Tensor] = {}  # per row a `[0, Hd]` tensor, for a window of 1
    calls = [0] * len(rows)
    feed = {i: pending(row, cache) for i, row in enumerate(rows) if windows[i] > 0}
    first = True
    while feed:
        indices = list(feed)
        outputs = forward_rows(
            draft, cache, [rows[i].slot for i in indices], [feed[i] for i in indices], pad_id,  # type: ignore[misc]
            last=[1] * len(indices), vocab_size=vocab_size, overhead_tokens=overhead_tokens,
        )  # fmt: skip
        feed = {}
        for i, out in zip(indices, outputs):
            calls[i] += 1
            if first:
                empty[i] = out.hidden[:0]
            else:
                hidden[i].append(out.hidden[-1])  # [Hd]: the draft hidden at the c just fed
            tokens[i].append(out.argmax[-1])
            if len(tokens[i]) < windows[i]:
                feed[i] = [tokens[i][-1]]
        first = False
    return Proposal(
        tokens=tokens,
        hidden=[(torch.stack(h) if h else empty[i]) if rows[i].rule.needs_draft_hidden and tokens[i] else None
                for i, h in enumerate(hidden)],
        draft_calls=calls,
    )


def feed_last(draft: Any, cache: RowKVCache, rows: Sequence[Request], proposal: Proposal, indices: Sequence[int],
              vocab_size: int, pad_id: int, overhead_tokens: int = FORWARD_OVERHEAD_TOKENS) -> list[torch.Tensor]:
    """The draft's hidden state at c_k `[Hd]` for the rows `indices`: one batched step feeding their
    last proposal (the cache then holds it, as the next cycle would have fed it anyway)."""
    outputs = forward_rows(
        draft, cache, [rows[i].slot for i in indices], [[proposal.tokens[i][-1]] for i in indices], pad_id,  # type: ignore[misc]
        last=[1] * len(indices), vocab_size=vocab_size, overhead_tokens=overhead_tokens,
    )  # fmt: skip
    for i in indices:
        proposal.draft_calls[i] += 1
    return [out.hidden[-1] for out in outputs]


def verify(
    target: Any, cache: RowKVCache, rows: Sequence[Request], proposal: Proposal, pad_id: int,
    overhead_tokens: int = FORWARD_OVERHEAD_TOKENS,
) -> list[RowOutput]:
    """One batched target forward over each row's pending tokens + its proposal (a new row's prompt
    in a forward of its own when padding the others to it costs more, `forward_rows` with `overhead_tokens`); per row the
    outputs at the last k+1 positions: logits/argmax predicting c_1..c_k and the bonus, hidden
    states `[k + 1, Ht]` (index i >= 1 is the position holding c_i)."""
    chunks = [pending(row, cache) + drafted for row, drafted in zip(rows, proposal.tokens)]
    last = [len(drafted) + 1 for drafted in proposal.tokens]
    slots = [row.slot for row in rows]
    return forward_rows(target, cache, slots, chunks, pad_id, last=last, with_logits=True, overhead_tokens=overhead_tokens)  # type: ignore[arg-type]


def pad_rows(rows: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    """Stack rows of different lengths `[k_i, ...]` into `[len(rows), width, ...]`, zero-padded
    (on the rows' device and dtype)."""
    out = rows[0].new_zeros((len(rows), width, *rows[0].shape[1:]))
    for index, row in enumerate(rows):
        out[index, : row.shape[0]] = row
    return out


def accept(rows: Sequence[Request], proposal: Proposal, verification: Sequence[RowOutput],
           last_hidden: Callable[[list[int]], list[torch.Tensor]] | None = None) -> list[int]:
    """Per row the accepted prefix length n under its own rule (rows sharing a rule are judged together).

    A rule that reads draft features decides each position from that position's features. A row
    whose draft hidden at c_k is missing (`propose` does not feed c_k) has c_k treated as padding in
    the first pass (never judged); only a row that keeps c_1..c_{k-1} and mismatches at c_k needs the
    real one: `last_hidden(row indices)` gives it (`feed_last`) and the rule's verdict at c_k is taken
    from a second pass over those rows."""
    accepted = [0] * len(rows)
    groups: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        if not proposal.tokens[i]:
            continue
        if isinstance(row.rule, ExactRule):  # the greedy prefix, straight from the argmax lists
            accepted[i] = greedy_prefix(proposal.tokens[i], verification[i].argmax)
        else:
            groups.setdefault(id(row.rule), []).append(i)
    for members in groups.values():
        rule = rows[members[0]].rule
        lengths = [len(proposal.tokens[i]) for i in members]
        width = max(lengths)
        device = verification[members[0]].hidden.device
        drafted = pad_rows([torch.tensor(proposal.tokens[i], device=device) + 1 for i in members], width) - 1  # [b, k], padding -1
        logits = pad_rows([verification[i].logits[:k] for i, k in zip(members, lengths)], width)  # type: ignore[index]
        h_target = pad_rows([verification[i].hidden[1 : k + 1] for i, k in zip(members, lengths)], width)  # [b, k, Ht]
        h_draft = pad_rows([proposal.hidden[i] for i in members], width) if rule.needs_draft_hidden else None  # type: ignore[misc]
        in_window = torch.arange(width, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]  # [b, k]
        # rows whose draft hidden at c_k is not known yet: c_k counts as padding in the first pass (never judged)
        missing = [j for j, i in enumerate(members) if h_draft is not None and proposal.hidden[i].shape[0] < lengths[j]]  # type: ignore[union-attr]
        first = drafted
        if missing:
            first = drafted.clone()
            first[missing, [lengths[j] - 1 for j in missing]] = -1
        mask = rule(first, logits, h_target, h_draft) & in_window  # a shorter row's padding is never kept
        if missing:
            kept = accepted_lengths(mask).tolist()
            at_last = [j for j in missing if kept[j] == lengths[j] - 1]  # kept c_1..c_{k-1}: the verdict at c_k counts
            decide = []  # rows mismatching at c_k (an exact match there is always kept)
            for j in at_last:
                if proposal.tokens[members[j]][-1] == verification[members[j]].argmax[lengths[j] - 1]:
                    mask[j, lengths[j] - 1] = True
                else:
                    decide.append(j)
            if decide:
                if last_hidden is None:
                    raise ValueError("a rule that reads draft features needs last_hidden for the draft's hidden state at c_k")
                columns = [lengths[j] - 1 for j in decide]
                for j, column, h in zip(decide, columns, last_hidden([members[j] for j in decide])):
                    h_draft[j, column] = h  # type: ignore[index]
                again = torch.tensor(decide, device=device)
                verdict = rule(drafted[again], logits[again], h_target[again], h_draft[again])  # type: ignore[index]
                mask[decide, columns] = verdict[torch.arange(len(decide), device=device), torch.tensor(columns, device=device)]
        for i, n in zip(members, accepted_lengths(mask).tolist()):
            accepted[i] = n
    return accepted


def emit(drafted: Sequence[int], target_argmax: Sequence[int], accepted: int) -> list[int]:
    """A cycle's tokens: the accepted draft tokens c_1..c_n, then the target's t_{n+1} (the
    replacement for the first rejected token, or the bonus token when all k were kept)."""
    return list(drafted[:accepted]) + [target_argmax[accepted]]


def stop_cut(generated: Sequence[int], start: int, eos: set[int], stop_strings: Sequence[str], tokenizer: Any) -> tuple[int, str] | None:
    """Earliest cut (number of generated tokens to keep, reason) among positions >= start, or None."""
    for end in range(start + 1, len(generated) + 1):
        if generated[end - 1] in eos:
            return end, "eos"
        if stop_strings:
            text = tokenizer.decode(list(generated[:end]), skip_special_tokens=False)
            if any(stop in text for stop in stop_strings):
                return end, "stop_string"
    return None


class EngineCore:
    """Greedy speculative decoding of a changing set of requests with one target, one draft and per-request rules."""

    def __init__(
        self,
        target: Any,
        draft: Any,
        *,
        judge: Any = None,
        tokenizer: Any = None,
        eos_token_ids: Sequence[int] | int | None = (),
        pad_token_id: int | None = 0,
        default_window: int = DEFAULT_WINDOW,
        max_batch: int = 64,
        forward_overhead_tokens: int = FORWARD_OVERHEAD_TOKENS,
        shared_prefix: Sequence[int] = (),
    ) -> None:
        """judge: the callable of mode "autojudge" (`judge(h_target, h_draft) -> p_important`); tokenizer:
        needed for stop strings; eos_token_ids: a row stops after emitting one; pad_token_id: filler for
        padding slots (never attended to); default_window: draft tokens per cycle when a request does
        not say; max_batch: most rows decoded together (more requests wait for a free slot);
        forward_overhead_tokens: the fixed cost of one forward call in fed tokens, which decides when a
        cycle's rows split into several forwards by chunk length (`cache.group_by_length`); shared_prefix:
        tokens many prompts start with (a few-shot header), whose keys and values are computed once per
        model and copied into each new row (`cache.SharedPrefix`)."""
        if default_window < 0:
            raise ValueError(f"default_window must be >= 0, got {default_window}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.target, self.draft, self.judge, self.tokenizer = target, draft, judge, tokenizer
        if eos_token_ids is None:
            eos_token_ids = ()
        self.eos = {int(eos_token_ids)} if isinstance(eos_token_ids, int) else {int(t) for t in eos_token_ids}
        self.pad_token_id = 0 if pad_token_id is None else int(pad_token_id)
        self.default_window, self.max_batch = default_window, max_batch
        self.forward_overhead_tokens = forward_overhead_tokens
        self.vocab_size = target.get_output_embeddings().weight.shape[0]
        self.target_cache = RowKVCache(target, 0, 0)
        self.draft_cache = RowKVCache(draft, 0, 0)
        self.shared_prefix = SharedPrefix(shared_prefix) if shared_prefix else None
        self.waiting: deque[Request] = deque()
        self.running: dict[int, Request] = {}
        self._free_slots: list[int] = []
        self._finished_early: list[Request] = []  # budget 0: finished without a cycle
        self._rules: dict[tuple[Any, ...], AcceptanceRule] = {}
        self._next_id = 0

    @classmethod
    def for_pair(cls, pair: Any, judge: Any = None, default_window: int = DEFAULT_WINDOW, max_batch: int = 64, compile: bool = False,
                 shared_prefix: Sequence[int] = ()) -> "EngineCore":
        """The engine for a loaded `models.ModelPair`: its tokenizer, and the one EOS policy (the
        tokenizer's EOS and both models' generation-config EOS ids, as `generate` stops on).
        `compile`: `torch.compile` both models' lean forwards (`lean.compile_lean`)."""
        from autojudge.models import eos_token_ids

        if compile:
            for model in (pair.target, pair.draft):
                compile_lean(model, mode="reduce-overhead" if next(model.parameters()).is_cuda else None)

        tokenizer = pair.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(
            pair.target, pair.draft, judge=judge, tokenizer=tokenizer,
            eos_token_ids=eos_token_ids(tokenizer, pair.target, pair.draft), pad_token_id=pad,
            default_window=default_window, max_batch=max_batch, shared_prefix=shared_prefix,
        )  # fmt: skip

    # -- requests -----------------------------------------------------------------------
    def add_request(self, prompt_ids: Sequence[int], settings: RequestSettings = RequestSettings()) -> int:
        """Queue a request; it joins the batch at the next `step()` with a free slot. Returns its id."""
        prompt = [int(token) for token in prompt_ids]
        if not prompt:
            raise ValueError("every prompt needs at least one token")
        if settings.stop_strings and self.tokenizer is None:
            raise ValueError("stop strings need the engine's tokenizer")
        window = self.default_window if settings.window is None else settings.window
        if window < 0:
            raise ValueError(f"window must be >= 0, got {window}")
        request = Request(self._next_id, prompt, len(prompt), settings, self.rule_for(settings), window)
        self._next_id += 1
        if settings.max_new_tokens <= 0:
            request.stop_reason = "length"
            self._finished_early.append(request)
        else:
            self.waiting.append(request)
        return request.id

    def rule_for(self, settings: RequestSettings) -> AcceptanceRule:
        """The (shared) rule object for a request's settings; rows with equal settings are judged together."""
        if settings.rule is not None:
            return settings.rule
        key = (settings.mode, settings.threshold, settings.top_k, settings.fly_window)
        if key not in self._rules:
            named = {"typical": "epsilon", "prob": "min_prob", "fly": "fly_entropy"}
            parameter = {} if settings.threshold is None or settings.mode not in named else {named[settings.mode]: settings.threshold}
            self._rules[key] = build_rule(
                settings.mode, judge=self.judge, threshold=settings.threshold, top_k=settings.top_k,
                fly_window=settings.fly_window, **parameter,
            )
        return self._rules[key]

    def abort(self, request_id: int) -> None:
        """Drop a request now: a running row frees its cache slots; no further output for it."""
        for request in list(self.waiting):
            if request.id == request_id:
                self.waiting.remove(request)
        request = self.running.pop(request_id, None)
        if request is not None:
            self._release(request)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def has_unfinished(self) -> bool:
        return bool(self.running or self.waiting or self._finished_early)

    # -- one cycle ----------------------------------------------------------------------
    def step(self, poll: Callable[[], None] | None = None) -> StepOutput:
        """Admit waiting requests, run one speculative cycle over every active row, emit and retire.

        `poll` (optional) is called once the draft has proposed, to add requests that arrived
        meanwhile (it must not abort any): those that find a free row join this cycle's
        verification, which reads their prompts and gives their first token (a plain greedy
        step for them), instead of waiting a whole cycle for the next one."""
        updates = [RowUpdate(r.id, [], True, r.stop_reason, r.metrics) for r in self._finished_early]
        self._finished_early = []
        self._admit()
        rows = list(self.running.values())
        if not rows:
            return StepOutput(updates)
        windows = [min(row.window, row.settings.max_new_tokens - len(row.generated) - 1) for row in rows]
        overhead = self.forward_overhead_tokens
        proposal = propose(self.draft, self.draft_cache, rows, windows, self.vocab_size, self.pad_token_id, overhead)
        if poll is not None:
            poll()
            late = self._admit()
            rows += late
            proposal.tokens += [[] for _ in late]
            proposal.hidden += [None] * len(late)
            proposal.draft_calls += [0] * len(late)
        verification = verify(self.target, self.target_cache, rows, proposal, self.pad_token_id, overhead)
        accepted = accept(rows, proposal, verification, lambda indices: feed_last(
            self.draft, self.draft_cache, rows, proposal, indices, self.vocab_size, self.pad_token_id, overhead))
        for i, row in enumerate(rows):
            n = accepted[i]
            row.metrics.record_cycle(n, proposal.draft_calls[i], len(proposal.tokens[i]))
            new_tokens = self._append(row, emit(proposal.tokens[i], verification[i].argmax, n))
            assert row.slot is not None
            self.target_cache.truncate(row.slot, len(row.tokens) - 1)
            self.draft_cache.truncate(row.slot, len(row.tokens) - 1)
            if row.stop_reason is not None:
                row.metrics.wall_s = time.perf_counter() - row.start
                self.running.pop(row.id)
                self._release(row)
            updates.append(RowUpdate(row.id, new_tokens, row.stop_reason is not None, row.stop_reason, row.metrics))
        return StepOutput(updates)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        settings: RequestSettings | Sequence[RequestSettings] = RequestSettings(),
        on_finished: Callable[[int], None] | None = None,
    ) -> list[GenerationResult]:
        """Decode every prompt (continuous batching, at most `max_batch` rows at once); one result
        per prompt, in order. `settings` is one for all or one per prompt; `on_finished(index)` is
        called as each prompt finishes (progress)."""
        if isinstance(settings, RequestSettings):
            settings = [settings] * len(prompts)
        if len(settings) != len(prompts):
            raise ValueError(f"{len(settings)} settings for {len(prompts)} prompts")
        ids = [self.add_request(prompt, setting) for prompt, setting in zip(prompts, settings)]
        tokens: dict[int, list[int]] = {request_id: [] for request_id in ids}
        results: dict[int, GenerationResult] = {}
        while len(results) < len(ids):
            for update in self.step().updates:
                if update.request_id not in tokens:
                    continue
                tokens[update.request_id].extend(update.new_token_ids)
                if update.finished:
                    results[update.request_id] = GenerationResult(tokens[update.request_id], update.metrics, update.stop_reason or "length")
                    if on_finished is not None:
                        on_finished(update.request_id - ids[0])
        return [results[request_id] for request_id in ids]

    # -- bookkeeping --------------------------------------------------------------------
    def _admit(self) -> list[Request]:
        """Move waiting requests into free slots (growing the caches as needed); returns them."""
        admitted = []
        while self.waiting and len(self.running) < self.max_batch:
            request = self.waiting.popleft()
            if not self._free_slots:
                rows = self.target_cache.num_rows
                grown = min(self.max_batch, max(1, 2 * rows))
                self.target_cache.grow(self.target_cache.trash_slot, grown)
                self.draft_cache.grow(self.draft_cache.trash_slot, grown)
                self._free_slots = sorted(self._free_slots + list(range(rows, grown)))
            request.slot = self._free_slots.pop(0)  # lowest first: active rows stay a compact range
            self.target_cache.grow(request.capacity)
            self.draft_cache.grow(request.capacity)
            if self.shared_prefix is not None:  # the row starts with the prefix's keys/values: `pending` skips it
                prompt = request.tokens[: request.prompt_len]
                self.shared_prefix.load(self.target, self.target_cache, request.slot, prompt, self.pad_token_id)
                self.shared_prefix.load(self.draft, self.draft_cache, request.slot, prompt, self.pad_token_id)
            self.running[request.id] = request
            admitted.append(request)
        return admitted

    def _release(self, request: Request) -> None:
        """Free a request's slots in both caches."""
        if request.slot is None:
            return
        self.target_cache.reset(request.slot)
        self.draft_cache.reset(request.slot)
        self._free_slots = sorted(self._free_slots + [request.slot])
        request.slot = None

    def _append(self, row: Request, tokens: list[int]) -> list[int]:
        """Add a cycle's tokens to a row, cut at EOS, a stop string or the budget; return what was kept."""
        before = len(row.generated)
        row.tokens.extend(tokens)
        budget = row.settings.max_new_tokens
        cut = stop_cut(row.generated, before, self.eos, row.settings.stop_strings, self.tokenizer)
        if cut is not None and cut[0] <= budget:
            del row.tokens[row.prompt_len + cut[0] :]
            row.stop_reason = cut[1]
        elif len(row.generated) >= budget:
            del row.tokens[row.prompt_len + budget :]
            row.stop_reason = "length"
        row.metrics.new_tokens = len(row.generated)
        return row.generated[before:]


__all__ = [
    "EngineCore",
    "GenerationResult",
    "Proposal",
    "Request",
    "RequestSettings",
    "RowUpdate",
    "StepOutput",
    "accept",
    "emit",
    "propose",
    "stop_cut",
    "verify",
]
