"""A stand-in engine core with continuous batching, over the functions of `engine.py`.

The server (`autojudge/actors/server.py`) is written against the engine core API of
`autojudge/decode/core.py` (add_request / step / abort, see DESIGN.md §1.5). This module
implements that API with the building blocks `SpeculativeEngine` uses (`propose`,
`verify`, `accept`, `emitted_tokens`, `roll_back`) so the server runs while that core is
not available; `autojudge.actors.server` imports the real core first and falls back here.

One `step()`:
1. admit waiting requests while fewer than `max_batch` rows run: each new row gets empty
   cache slots in both models (all masked), so its prompt is its pending text this cycle;
2. one speculative cycle over all rows with k = the largest window any row may use now;
   a row whose own window w is smaller (or 0: speculation off) has its mask cut at w, so
   it keeps at most w draft tokens and always the target's token after them;
3. per row, the acceptance rule of its own settings (rows grouped by rule);
4. emit, cut at EOS / stop string / budget, roll both caches back, drop finished rows.

Rows never see each other: cache slots are per row and masked (`forward.BatchCache`), so
in exact mode every row equals `target.generate(do_sample=False)` whatever else runs.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from autojudge.decode.acceptance import AcceptanceRule, accepted_lengths, build_rule
from autojudge.decode.engine import (
    GenerationResult,
    Proposal,
    Verification,
    _stop_index,
    emitted_tokens,
    pending_tokens,
    propose,
    roll_back,
    verify,
)
from autojudge.decode.forward import BatchCache, _layers
from autojudge.decode.metrics import RequestMetrics


@dataclass
class RequestSettings:
    """Per-request decode settings."""

    max_new_tokens: int = 128
    """Generation budget."""
    mode: str = "exact"
    """Acceptance rule: exact | topk | autojudge."""
    threshold: float | None = None
    """Judge threshold tau of mode autojudge (None: the judge's default)."""
    top_k: int = 4
    """K of mode topk."""
    window: int | None = None
    """Draft tokens per cycle; None: the engine default; 0: no speculation (plain greedy)."""
    stop_strings: tuple[str, ...] = ()
    """Stop after the token that completes one of these strings."""


@dataclass
class CoreMetrics(RequestMetrics):
    """RequestMetrics plus the draft tokens proposed to this row."""

    draft_tokens: int = 0
    """Draft tokens this row was offered for verification (sum of its per-cycle windows)."""


@dataclass
class RowUpdate:
    """What one row did in one cycle."""

    request_id: int
    new_token_ids: list[int]
    """Tokens emitted by this row in this cycle (after stop cuts)."""
    finished: bool
    stop_reason: str | None
    """"eos" | "stop_string" | "length", None while running."""
    metrics: RequestMetrics
    """Running counters of the request."""


@dataclass
class StepOutput:
    """The rows that took part in one cycle."""

    updates: list[RowUpdate] = field(default_factory=list)


@dataclass
class _Request:
    request_id: int
    tokens: list[int]  # prompt + generated
    prompt_len: int
    settings: RequestSettings
    rule: AcceptanceRule
    metrics: CoreMetrics = field(default_factory=CoreMetrics)
    stop_reason: str | None = None

    @property
    def generated(self) -> list[int]:
        return self.tokens[self.prompt_len :]


def add_empty_rows(cache: BatchCache, count: int) -> None:
    """Append `count` rows with no real tokens (all slots masked) to a cache."""
    for layer in _layers(cache.cache):
        if layer.is_initialized:
            pad = layer.keys.new_zeros((count, *layer.keys.shape[1:]))  # [count, heads, slots, head_dim]
            layer.keys = torch.cat([layer.keys, pad], dim=0)
            layer.values = torch.cat([layer.values, pad.clone()], dim=0)
    empty = torch.zeros((count, cache.num_slots), dtype=torch.bool, device=cache.valid.device)
    cache.valid = torch.cat([cache.valid, empty], dim=0)  # [batch + count, slots]


class EngineCore:
    """Continuous batching speculative decoding: add_request / step / abort (not thread-safe)."""

    def __init__(
        self,
        target: Any,
        draft: Any,
        *,
        judge: Any = None,
        tokenizer: Any = None,
        eos_token_ids: Sequence[int] = (),
        pad_token_id: int = 0,
        default_window: int = 8,
        max_batch: int = 64,
    ):
        self.target, self.draft, self.judge, self.tokenizer = target, draft, judge, tokenizer
        self.eos = {int(t) for t in eos_token_ids}
        self.pad_token_id = int(pad_token_id or 0)
        self.default_window = default_window
        self.max_batch = max_batch
        self.vocab_size = target.get_output_embeddings().weight.shape[0]
        self._waiting: deque[_Request] = deque()
        self._running: list[_Request] = []
        self._rules: dict[tuple[Any, ...], AcceptanceRule] = {}
        self._next_id = 0
        self._reset_caches()

    # ------------------------------------------------------------------ public API

    def add_request(self, prompt_ids: Sequence[int], settings: RequestSettings) -> int:
        """Queue a request; it joins the batch at the next step() with a free row. Returns its id."""
        if len(prompt_ids) == 0:
            raise ValueError("every prompt needs at least one token")
        if settings.stop_strings and self.tokenizer is None:
            raise ValueError("stop strings need the engine's tokenizer")
        request = _Request(self._next_id, [int(t) for t in prompt_ids], len(prompt_ids), settings, self._rule(settings))
        self._next_id += 1
        self._waiting.append(request)
        return request.request_id

    def abort(self, request_id: int) -> None:
        """Drop a request now (waiting or running); its cache rows are freed at once."""
        self._waiting = deque(r for r in self._waiting if r.request_id != request_id)
        keep = [i for i, r in enumerate(self._running) if r.request_id != request_id]
        if len(keep) != len(self._running):
            self._keep_rows(keep)

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def has_unfinished(self) -> bool:
        return bool(self._running or self._waiting)

    def step(self) -> StepOutput:
        """Admit waiting requests, run one cycle over all rows, return what each row emitted."""
        self._admit()
        rows = self._running
        if not rows:
            return StepOutput()
        windows = [self._window(row) for row in rows]
        k = max(windows)
        proposal = self._propose(rows, k)
        verification = verify(self.target, self.target_cache, pending_tokens(rows, self.target_cache), proposal.tokens, self.pad_token_id)
        accepted = self._accept(rows, windows, proposal, verification)
        emitted = emitted_tokens(proposal.tokens, verification.argmax, accepted)
        updates = []
        for row, tokens, n, w in zip(rows, emitted, accepted.tolist(), windows):
            row.metrics.record_cycle(n, proposal.draft_calls if w > 0 else 0)
            row.metrics.draft_tokens += w
            before = len(row.generated)
            self._append(row, tokens)
            row.metrics.new_tokens = len(row.generated)
            updates.append(RowUpdate(row.request_id, row.generated[before:], row.stop_reason is not None, row.stop_reason, row.metrics))
        roll_back(self.target_cache, rows)
        roll_back(self.draft_cache, rows)
        keep = [i for i, row in enumerate(rows) if row.stop_reason is None]
        if len(keep) != len(rows):
            self._keep_rows(keep)
        return StepOutput(updates)

    def generate(self, prompts: Sequence[Sequence[int]], settings: RequestSettings | Sequence[RequestSettings]) -> list[GenerationResult]:
        """Decode prompts to the end (all added at once); one result per prompt, in order."""
        per_prompt = [settings] * len(prompts) if isinstance(settings, RequestSettings) else list(settings)
        ids = [self.add_request(p, s) for p, s in zip(prompts, per_prompt)]
        tokens: dict[int, list[int]] = {i: [] for i in ids}
        done: dict[int, RowUpdate] = {}
        while len(done) < len(ids):
            for update in self.step().updates:
                tokens[update.request_id] += update.new_token_ids
                if update.finished:
                    done[update.request_id] = update
        return [GenerationResult(tokens[i], done[i].metrics, done[i].stop_reason or "length") for i in ids]

    # ------------------------------------------------------------------ cycle steps

    def _rule(self, settings: RequestSettings) -> AcceptanceRule:
        key = (settings.mode, settings.threshold, settings.top_k)
        if key not in self._rules:
            self._rules[key] = build_rule(settings.mode, judge=self.judge, threshold=settings.threshold, top_k=settings.top_k)
        return self._rules[key]

    def _window(self, row: _Request) -> int:
        """Draft tokens this row may keep this cycle (no use drafting past its budget)."""
        window = self.default_window if row.settings.window is None else row.settings.window
        remaining = row.settings.max_new_tokens - len(row.generated)
        return max(0, min(window, remaining - 1))

    def _admit(self) -> None:
        new = []
        while self._waiting and len(self._running) + len(new) < self.max_batch:
            new.append(self._waiting.popleft())
        if new:
            add_empty_rows(self.target_cache, len(new))
            add_empty_rows(self.draft_cache, len(new))
            self._running += new

    def _propose(self, rows: list[_Request], k: int) -> Proposal:
        if k <= 0:
            empty = torch.zeros((len(rows), 0), dtype=torch.long, device=self.draft_cache.valid.device)
            return Proposal(tokens=empty, hidden=None, draft_calls=0)
        with_hidden = any(row.rule.needs_draft_hidden for row in rows)
        pending = pending_tokens(rows, self.draft_cache)
        return propose(self.draft, self.draft_cache, pending, k, self.vocab_size, with_hidden, self.pad_token_id)

    def _accept(self, rows: list[_Request], windows: list[int], proposal: Proposal, verification: Verification) -> torch.Tensor:
        """`[batch]` accepted prefix length: each row under its own rule, cut at its own window."""
        batch, k = proposal.tokens.shape  # [batch, k]
        if k == 0:
            return torch.zeros(batch, dtype=torch.long)
        mask = torch.zeros((batch, k), dtype=torch.bool)
        groups: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(id(row.rule), []).append(i)
        for indices in groups.values():
            index = torch.tensor(indices)
            rule = rows[indices[0]].rule
            hidden_d = proposal.hidden[index] if proposal.hidden is not None else None
            mask[index] = rule(
                proposal.tokens[index], verification.logits[index, :k], verification.hidden[index], hidden_d
            ).cpu()
        allowed = torch.arange(k)[None, :] < torch.tensor(windows)[:, None]  # [batch, k]
        return accepted_lengths(mask & allowed)

    def _append(self, row: _Request, tokens: list[int]) -> None:
        """Add a cycle's tokens to a row and cut at EOS, a stop string or the budget."""
        budget = row.settings.max_new_tokens
        before = len(row.generated)
        row.tokens.extend(tokens)
        cut = _stop_index(row.generated, before, self.eos, row.settings.stop_strings, self.tokenizer)
        if cut is not None and cut[0] <= budget:
            del row.tokens[row.prompt_len + cut[0] :]
            row.stop_reason = cut[1]
        elif len(row.generated) >= budget:
            del row.tokens[row.prompt_len + budget :]
            row.stop_reason = "length"

    def _keep_rows(self, keep: list[int]) -> None:
        self._running = [self._running[i] for i in keep]
        if not self._running:
            self._reset_caches()
            return
        self.target_cache.select_rows(keep)
        self.draft_cache.select_rows(keep)

    def _reset_caches(self) -> None:
        device = next(self.target.parameters()).device
        self.target_cache = BatchCache.empty(self.target, 0, device)
        self.draft_cache = BatchCache.empty(self.draft, 0, device)
