"""The fast semi-greedy search: same labels as `search.plain_search`, far fewer model calls.

Three ideas (docs/design.md §1.1, "Mining speed"):

1. **Prefix reuse.** Each search owns one row of a target and a draft `RowKVCache`. The
   prefix `x + y_<m` is never recomputed: a row is rolled back to the longest prefix
   still valid and only the new tokens are fed.
2. **Lossless lookahead regeneration.** After swapping `d_m` in at m, the old
   continuation (aligned by n-gram lookup) is a draft for the new one. One target
   forward verifies it; greedy acceptance keeps the longest prefix equal to the
   target's argmax and adds the target's own next token, exactly like speculative
   decoding, so the result is `T.greedy(x + y_<m + [d_m])` token for token (up to
   float ties between chunked and step-wise forwards). The first greedy response uses
   the same loop with prompt-lookup guesses (n-grams of `x + y` itself).
3. **Many searches in flight.** Each search is a generator that yields the forward
   calls it needs (`SearchStep`); `BatchedSearcher` runs the pending calls of all searches as
   one batched target forward and one batched draft forward per tick.

Features come for free: the target hidden at `d_m` is read from the first verification
forward, and the draft hidden from a one-token draft call that runs in the same tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generator, Hashable, Iterator, Sequence

import torch

from autojudge.decode.engine.acceptance import greedy_prefix
from autojudge.decode.engine.cache import FORWARD_OVERHEAD_TOKENS, RowKVCache, RowOutput, SharedPrefix, forward_rows, group_by_length
from autojudge.decode.mining.search import Evaluator, Label, SearchResult, unfinished


@dataclass
class LookaheadSettings:
    """How guesses for lossless verification are proposed."""

    max_ngram: int = 3
    """Longest suffix n-gram looked up in the old continuation to re-align after a correction."""
    realign_distance: int = 16
    """How far (tokens) from the expected alignment a re-alignment match may be."""
    first_guess: int = 4
    """Old-continuation tokens verified in the first round after a swap; the length doubles
    after each fully accepted round (a re-converged continuation is verified in a few forwards).
    With many searches in flight a forward's cost follows the tokens fed, not the rounds: on
    SmolLM2 / GSM8K (8 problems, float32) 4 and `min_guess` 1 fed 14% fewer target tokens than
    8 and 2 for 5% more rounds, same labels (docs/results/smollm2-gsm8k.md)."""
    max_guess: int = 128
    """Most old-continuation tokens verified in one target forward."""
    min_guess: int = 1
    """Guess length after a rejection is max(min_guess, 2 x tokens accepted in the last round):
    a continuation that has not re-converged is verified in short pieces, not re-fed in full.
    With 0 a row that diverged feeds one token per round (plain greedy) until its text re-aligns
    with the old one on a whole `max_ngram`-gram, then guesses again from 1 token."""
    initial_guess: int = 8
    """Most prompt-lookup tokens verified per forward while decoding the first response."""
    draft_proposals: int = 6
    """Tokens the draft proposes per round while decoding the first response (speculative
    decoding, verified greedily: lossless); 0 uses prompt/corpus lookup instead."""
    regen_proposals: int = 0
    """Tokens the draft proposes per round of a regeneration whose old text does not re-align
    (0: fall back to corpus lookup)."""
    initial_min_ngram: int = 2
    """Shortest n-gram used for prompt lookup in the first response (1 guesses too often)."""
    corpus_max_ngram: int = 4
    """Longest n-gram key of the corpus of earlier responses (`NgramCorpus`)."""
    corpus_entries: int = 200_000
    """The corpus is cleared when it holds more keys than this."""


COMPUTE_BOUND_PARAMETERS = 20_000_000
"""Targets at least this large pay for the tokens a wide forward feeds (`settings_for`)."""


def settings_for(target: Any) -> LookaheadSettings:
    """The guessing that suits the target's cost per forward.

    A guessed token costs one fed token and saves one round if accepted. A real model fed by 64
    searches at once pays for every token (SmolLM2-135M, float32, CPU: a forward's fixed cost is
    about 16 tokens', a quarter of a token per row), so a guess pays only when it is accepted about
    four times in five: it verifies no guess after a rejection until the text re-aligns
    (`min_guess` 0) and decodes first responses with prompt and corpus lookup instead of 6
    sequential one-token draft forwards per tick (`draft_proposals` 0). A toy-sized model pays
    per call, where guesses that save rounds win: the defaults.
    Measured in docs/results/smollm2-gsm8k.md (section 5); labels are the same either way."""
    if sum(parameter.numel() for parameter in target.parameters()) >= COMPUTE_BOUND_PARAMETERS:
        return LookaheadSettings(min_guess=0, draft_proposals=0)
    return LookaheadSettings()


@dataclass
class Call:
    """One forward on one row: roll the row back to `keep` tokens, then feed `tokens`."""

    keep: int
    tokens: list[int]


@dataclass
class SearchStep:
    """What a search needs next: a target call, a draft call, or both (run in one tick)."""

    target: Call | None = None
    draft: Call | None = None
    propose: int = 0
    """Draft proposals: after the draft call, extend greedily by this many tokens (one
    batched draft forward each) and append them to the target call, all in this tick."""


@dataclass
class SearchStepOutput:
    """The answers to a `SearchStep`."""

    target: RowOutput | None = None
    draft: RowOutput | None = None
    proposals: list[int] | None = None
    """The draft's greedy tokens when the step asked for proposals."""


SearchCoroutine = Generator[SearchStep, SearchStepOutput, SearchResult]
END_OF_JOBS: Any = object()
"""Returned by a job source of `BatchedSearcher.run_stream` when no more jobs will come."""


# ---------------------------------------------------------------------------------------
# Guess proposal (model-free)
# ---------------------------------------------------------------------------------------


def realign(new: list[int], old: list[int], expected: int, settings: LookaheadSettings) -> tuple[int, int]:
    """(e, n): index e in `old` aligned with new[-1], the nearest (to `expected`) end of an
    occurrence of the longest (n) suffix n-gram of `new` within `realign_distance`; (expected, 0)
    when nothing matches."""
    for n in range(min(settings.max_ngram, len(new)), 0, -1):
        suffix = new[-n:]
        best = None
        low, high = max(n - 1, expected - settings.realign_distance), min(len(old) - 1, expected + settings.realign_distance)
        for end in range(low, high + 1):
            if old[end - n + 1 : end + 1] == suffix and (best is None or abs(end - expected) < abs(best - expected)):
                best = end
        if best is not None:
            return best, n
    return expected, 0


def prompt_lookup(sequence: list[int], settings: LookaheadSettings) -> tuple[list[int], int]:
    """Prompt-lookup guess and its n: the tokens after the latest earlier occurrence of the
    longest suffix n-gram of `sequence` (prompt + response so far)."""
    for n in range(min(settings.max_ngram, len(sequence) - 1), settings.initial_min_ngram - 1, -1):
        suffix = sequence[-n:]
        for end in range(len(sequence) - 2, n - 2, -1):
            if sequence[end - n + 1 : end + 1] == suffix:
                return sequence[end + 1 : end + 1 + settings.initial_guess], n
    return [], 0


class NgramCorpus:
    """Continuations seen in earlier responses of the same searcher, keyed by n-gram
    (retrieval-based guessing): templated text ("marbles.\nThat leaves") is guessed from
    other prompts' responses. Guesses are verified, so the corpus never changes a label."""

    def __init__(self, settings: LookaheadSettings) -> None:
        self.settings = settings
        self.table: dict[tuple[int, ...], list[int]] = {}

    def add(self, tokens: list[int]) -> None:
        """Index every n-gram (n = 2..corpus_max_ngram) of `tokens` with what follows it."""
        if len(self.table) > self.settings.corpus_entries:
            self.table.clear()
        length = self.settings.initial_guess
        for n in range(2, self.settings.corpus_max_ngram + 1):
            for end in range(n - 1, len(tokens) - 1):
                self.table[tuple(tokens[end - n + 1 : end + 1])] = tokens[end + 1 : end + 1 + length]

    def add_recent(self, sequence: list[int], recent: int) -> None:
        """Index the n-grams whose continuation changed since the last `recent` tokens were appended."""
        self.add(sequence[max(0, len(sequence) - recent - self.settings.initial_guess - self.settings.corpus_max_ngram) :])

    def lookup(self, sequence: list[int]) -> tuple[list[int], int]:
        """(guess, n) for the longest suffix n-gram of `sequence` in the corpus; ([], 0) if none."""
        for n in range(min(self.settings.corpus_max_ngram, len(sequence)), 1, -1):
            guess = self.table.get(tuple(sequence[-n:]))
            if guess:
                return guess, n
        return [], 0


def lookup_guess(sequence: list[int], corpus: NgramCorpus | None, settings: LookaheadSettings) -> list[int]:
    """The better of prompt lookup and corpus lookup (longer n-gram match; prompt on ties)."""
    guess, n = prompt_lookup(sequence, settings)
    if corpus is not None:
        corpus_guess, corpus_n = corpus.lookup(sequence)
        if corpus_n > n:
            return corpus_guess
    return guess


# ---------------------------------------------------------------------------------------
# One search as a coroutine
# ---------------------------------------------------------------------------------------


@dataclass
class Regeneration:
    """The outcome of `regenerate`."""

    response: list[int]
    """The greedy response `head + continuation`."""
    target_valid: int
    """Tokens of the target row valid for `prompt + response`."""
    h_target: torch.Tensor | None
    """Target hidden at the last head token (None for an empty head)."""
    draft_output: RowOutput | None
    """The draft call of the first round: `(prompt + head)[draft_keep:] + first guess`."""
    draft_keep: int
    """Where that draft call started (absolute position)."""
    first_accepted: int
    """Guess tokens accepted in the first round (the draft outputs are valid up to there)."""


def regenerate(
    prompt: list[int],
    head: list[int],
    target_valid: int,
    old: list[int] | None,
    budget: int,
    eos_ids: list[int],
    settings: LookaheadSettings,
    draft_keep: int | None = None,
    corpus: NgramCorpus | None = None,
) -> Generator[SearchStep, SearchStepOutput, Regeneration]:
    """Greedy target continuation of `prompt + head` (to EOS or `budget` response tokens),
    verifying guesses from `old` (or prompt lookup when `old` is None).

    `target_valid` tokens of the target row must be valid for `prompt + head` and at most
    `len(prompt) + len(head) - 1`. With `draft_keep`, the first round also runs the draft
    over `(prompt + head)[draft_keep:] + guess` in the same tick: its hidden state at the
    last head token is the draft feature, and its argmax over the accepted guess gives
    the teacher-forced draft predictions of the new response for free."""
    prompt_len = len(prompt)
    response = list(head)
    feature_position = prompt_len + len(head) - 1
    aligned = len(head) - 1  # index in `old` aligned with response[-1]
    if old is not None and head and old[len(head) : len(head) + 1] == head[-1:]:
        aligned = len(head)  # the draft skipped a token: the old text continues one later
    outcome = Regeneration(response, target_valid, None, None, draft_keep or 0, 0)
    guess_length = settings.first_guess
    draft_row_valid: int | None = None  # draft row tokens valid for prompt + response (after round 1)
    first = True
    while True:
        finished = bool(response) and (response[-1] in eos_ids or len(response) >= budget)
        if finished and not first:
            break
        use_proposals = False
        if finished:
            guess: list[int] = []
        elif old is None:
            guess = lookup_guess(prompt + response, corpus, settings)
        else:
            matched = settings.max_ngram
            if not first:
                aligned, matched = realign(response, old, aligned, settings)
            if guess_length == 0 and matched >= settings.max_ngram:
                guess_length = 1  # re-aligned on a whole n-gram: try the old text again
            guess = old[aligned + 1 : aligned + 1 + guess_length]
            if matched < 2 and settings.regen_proposals > 0 and draft_row_valid is not None:
                use_proposals, guess = True, []  # the old text does not re-align: the draft proposes
            elif matched < 2 and corpus is not None:
                corpus_guess, corpus_n = corpus.lookup(prompt + response)
                if corpus_n >= 2:
                    guess = corpus_guess[:guess_length]  # as long as an old-text guess would be
        room = max(budget - len(response) - 1, 0)
        guess = guess[:room]
        keep = target_valid
        sequence = prompt + response
        draft_call, propose = None, 0
        if first and draft_keep is not None:
            draft_call = Call(draft_keep, sequence[draft_keep:] + guess)
        elif use_proposals and draft_row_valid is not None:
            draft_call, propose = Call(draft_row_valid, sequence[draft_row_valid:]), min(settings.regen_proposals, room)
        output = yield SearchStep(target=Call(keep, sequence[keep:] + guess), draft=draft_call, propose=propose)
        assert output.target is not None
        if use_proposals:
            guess = output.proposals or []
        if first and head:
            outcome.h_target = output.target.hidden[feature_position - keep].float().cpu()
        if first:
            outcome.draft_output = output.draft
        if finished:
            target_valid = len(sequence)
            break
        base = prompt_len + len(response) - 1 - keep  # index of response[-1] in the fed tokens
        predictions = output.target.argmax
        accepted = greedy_prefix(guess, predictions[base:], eos_ids)
        response.extend(guess[:accepted])
        if not (accepted and guess[accepted - 1] in eos_ids):
            response.append(predictions[base + accepted])
        if first:
            outcome.first_accepted = accepted
            if draft_keep is not None:
                draft_row_valid = len(sequence) + accepted
        elif use_proposals:
            draft_row_valid = len(sequence) + min(accepted, max(len(guess) - 1, 0))
        first = False
        if corpus is not None and old is None:  # share progress with the searches in flight
            corpus.add_recent(prompt + response, accepted + 1)
        if accepted < len(guess):  # rejected: verify shorter pieces until it re-converges
            guess_length = max(settings.min_guess, 2 * accepted)
        else:
            guess_length = min(settings.max_guess, 2 * guess_length)
        target_valid = prompt_len + len(response) - 1
        aligned += accepted + 1
    outcome.target_valid = min(target_valid, prompt_len + len(response))
    return outcome


def initial_response(
    prompt: list[int], budget: int, eos_ids: list[int], settings: LookaheadSettings
) -> Generator[SearchStep, SearchStepOutput, tuple[list[int], int, list[int], int]]:
    """y = T.greedy(x) by speculative decoding with the draft (lossless: greedy verification).

    The draft's proposals on the accepted prefix are exactly its teacher-forced argmax, so
    this also yields d_i for the response. Returns (response, valid target length, draft
    predictions for positions 0.., valid draft length)."""
    prompt_len = len(prompt)
    response: list[int] = []
    predictions: list[int] = []  # d_i for i < len(predictions)
    target_valid = draft_valid = 0
    while not response or (response[-1] not in eos_ids and len(response) < budget):
        sequence = prompt + response
        count = min(settings.draft_proposals, budget - len(response) - 1)
        output = yield SearchStep(
            target=Call(target_valid, sequence[target_valid:]),
            draft=Call(draft_valid, sequence[draft_valid:]),
            propose=count,
        )
        assert output.target is not None and output.draft is not None
        proposals = output.proposals or []
        # the draft call predicts positions draft_valid + j + 1 - P (real context)
        fed_predictions = output.draft.argmax
        first_position = draft_valid + 1 - prompt_len
        for j, token in enumerate(fed_predictions):
            position = first_position + j
            if position == len(predictions):
                predictions.append(token)
        base = len(sequence) - 1 - target_valid  # index of the last known token in the target call
        accepted = greedy_prefix(proposals, output.target.argmax[base:], eos_ids)
        response.extend(proposals[:accepted])
        ended = bool(accepted) and proposals[accepted - 1] in eos_ids
        # proposals 2.. were predicted on accepted context: they are d_i as well
        for i in range(1, min(accepted + 1, len(proposals))):
            if len(prompt) + len(predictions) == len(sequence) + i:
                predictions.append(proposals[i])
        if not ended:
            response.append(output.target.argmax[base + accepted])
        target_valid = prompt_len + len(response) - 1
        draft_valid = len(sequence) + min(accepted, max(len(proposals) - 1, 0))
    return response, min(target_valid, prompt_len + len(response)), predictions[: len(response)], draft_valid


def fast_search(
    prompt: list[int],
    evaluator: Evaluator,
    budget: int,
    eos_ids: list[int],
    settings: LookaheadSettings | None = None,
    corpus: NgramCorpus | None = None,
    finished_only: bool = False,
) -> SearchCoroutine:
    """§1.1 for one prompt as a coroutine over batched forwards (see `BatchedSearcher`); with
    `finished_only`, a prompt whose first response does not end within the budget gets no labels.

    `draft_predictions[i]` caches d_i for the current response; it survives an important
    label (the response is unchanged) and is extended from the regeneration's own draft
    pass after an unimportant one, so a separate draft scan runs only where neither covers."""
    settings = settings or LookaheadSettings()
    prompt_len = len(prompt)
    draft_predictions: list[int] = []  # d_i for i < len(draft_predictions), valid for `response`
    draft_valid = 0  # tokens of the draft row valid for `prompt + response`
    if settings.draft_proposals > 0:
        response, target_valid, draft_predictions, draft_valid = yield from initial_response(
            prompt, budget, eos_ids, settings
        )
    else:
        initial = yield from regenerate(prompt, [], 0, None, budget, eos_ids, settings, corpus=corpus)
        response, target_valid = initial.response, initial.target_valid
    if corpus is not None:
        corpus.add(prompt[-settings.corpus_max_ngram :] + response)
    reference: Hashable = evaluator.answer(response)
    result = SearchResult(initial_response=list(response), final_response=response, target_answer=reference)
    if unfinished(response, eos_ids, finished_only):
        result.unfinished = True
        return result
    left = 0
    while left < len(response):
        # m = first i >= left with d_i != y_i; extend the draft predictions when they run out
        m = left
        while True:
            while m < len(draft_predictions) and draft_predictions[m] == response[m]:
                m += 1
            if m < len(draft_predictions) or len(draft_predictions) >= len(response):
                break
            known = len(draft_predictions)
            keep = min(draft_valid, prompt_len + known - 1)
            sequence = prompt + response
            scan = (yield SearchStep(draft=Call(keep, sequence[keep : prompt_len + len(response) - 1]))).draft
            assert scan is not None
            offset = prompt_len - 1 - keep  # scan.argmax[i + offset] = d_i
            draft_predictions = draft_predictions + [scan.argmax[i + offset] for i in range(known, len(response))]
            draft_valid = prompt_len + len(response) - 1
        if m >= len(response):
            break
        draft_token = draft_predictions[m]
        head = response[:m] + [draft_token]
        regen = yield from regenerate(
            prompt,
            head,
            min(target_valid, prompt_len + m),
            response,
            budget,
            eos_ids,
            settings,
            draft_keep=min(draft_valid, prompt_len + m),
            corpus=corpus,
        )
        assert regen.draft_output is not None
        alternative = regen.response
        if corpus is not None:
            corpus.add(alternative[max(0, m - settings.corpus_max_ngram) :])
        important = not evaluator.same(alternative, reference)
        first_fed = prompt_len + m - regen.draft_keep  # index of d_m in the draft call
        h_draft = regen.draft_output.hidden[first_fed].float().cpu()
        result.labels.append(Label(m, response[m], draft_token, important, regen.h_target, h_draft))
        if important:
            target_valid, draft_valid = prompt_len + m, prompt_len + m
        else:
            # d_{m+1+j} for j <= accepted guess tokens come from the regeneration's draft pass
            verified = regen.draft_output.argmax[first_fed : first_fed + regen.first_accepted + 1]
            draft_predictions = (draft_predictions[:m] + [draft_token] + verified)[: len(alternative)]
            response = alternative
            target_valid = regen.target_valid
            draft_valid = prompt_len + m + 1 + regen.first_accepted
        left = m + 1
        if draft_token in eos_ids:
            break
    result.final_response = response
    return result

# ---------------------------------------------------------------------------------------
# Many searches in flight on one model pair
# ---------------------------------------------------------------------------------------


@dataclass
class SearchJob:
    """One prompt to search."""

    key: Any
    """Returned with the result (e.g. the prompt id)."""
    prompt: list[int]
    """Prompt token ids."""
    evaluator: Evaluator
    """E for this prompt."""
    budget: int
    """Most response tokens."""


@dataclass
class SearchCounters:
    """What the batched searcher did (for profiling)."""

    ticks: int = 0
    target_forwards: int = 0
    draft_forwards: int = 0
    target_tokens: int = 0
    """Real tokens fed to the target (padding excluded)."""
    draft_tokens: int = 0
    target_seconds: float = 0.0
    draft_seconds: float = 0.0
    search_seconds: float = 0.0
    """Time in the searches' own Python (lookup, acceptance, E.same)."""


class BatchedSearcher:
    """Runs up to `batch_size` fast searches at once on one target/draft pair."""

    def __init__(
        self,
        target: Any,
        draft: Any,
        eos_ids: list[int],
        pad_token_id: int,
        batch_size: int = 16,
        settings: LookaheadSettings | None = None,
        forward_overhead_tokens: int = FORWARD_OVERHEAD_TOKENS,
        shared_prefix: Sequence[int] = (),
        finished_only: bool = False,
    ) -> None:
        """`forward_overhead_tokens`: the fixed cost of one forward call, in fed tokens; sets how
        rows with chunks of different lengths are split into forwards (`group_by_length`).
        `shared_prefix`: tokens many prompts start with (a few-shot header), computed once per model
        and copied into each new row (`cache.SharedPrefix`); the searches never see the difference.
        `finished_only`: prompts whose first response does not end within the budget get no labels."""
        self.target, self.draft = target, draft
        self.eos_ids, self.pad_token_id = eos_ids, pad_token_id
        self.batch_size = batch_size
        self.settings = settings or settings_for(target)
        self.counters = SearchCounters()
        self.forward_overhead_tokens = forward_overhead_tokens
        self.corpus = NgramCorpus(self.settings)
        self.shared_prefix = SharedPrefix(shared_prefix) if shared_prefix else None
        self.finished_only = finished_only
        self._pinned: dict[int, int] = {}  # row -> leading prompt tokens its caches hold from the shared prefix

    def run(self, jobs: list[SearchJob]) -> Iterator[tuple[Any, SearchResult | Exception]]:
        """Yield (key, result or the exception that search raised) as searches finish."""
        if not jobs:
            return
        pending = iter(jobs)
        capacity = max(len(job.prompt) + job.budget for job in jobs)
        yield from self.run_stream(lambda block: next(pending, END_OF_JOBS), capacity, min(self.batch_size, len(jobs)))

    def run_stream(
        self, next_job: Callable[[bool], SearchJob | None], capacity: int, rows: int | None = None
    ) -> Iterator[tuple[Any, SearchResult | Exception]]:
        """Continuous batching: `next_job(block)` returns a job, None when none is ready yet
        (it is asked with block=True only when no search is in flight), or END_OF_JOBS.
        The caches start with room for `capacity` tokens per row and grow when a job needs more."""
        import time

        rows = rows or self.batch_size
        target_cache = RowKVCache(self.target, rows, capacity)
        draft_cache = RowKVCache(self.draft, rows, capacity)
        active: dict[int, tuple[Any, SearchCoroutine, SearchStep]] = {}
        free = list(range(rows - 1, -1, -1))
        clock = time.perf_counter
        counters = self.counters
        ended = False

        def advance(row: int, key: Any, search: SearchCoroutine, send: Callable[[], SearchStep]) -> Iterator[tuple[Any, Any]]:
            start = clock()
            try:
                active[row] = (key, search, send())
            except StopIteration as stop:
                free.append(row)
                yield key, stop.value
            except Exception as err:  # noqa: BLE001 - one prompt's failure must not stop the batch
                free.append(row)
                yield key, err
            finally:
                counters.search_seconds += clock() - start

        while True:
            while free and not ended:
                job = next_job(not active)
                if job is None:
                    break
                if job is END_OF_JOBS:
                    ended = True
                    break
                if len(job.prompt) + job.budget > capacity:
                    capacity = len(job.prompt) + job.budget
                    target_cache.grow(capacity)
                    draft_cache.grow(capacity)
                row = free.pop()
                target_cache.reset(row)
                draft_cache.reset(row)
                self._pinned.pop(row, None)
                if self.shared_prefix is not None:
                    pad = self.pad_token_id
                    self.shared_prefix.load(self.target, target_cache, row, job.prompt, pad)
                    pinned = self.shared_prefix.load(self.draft, draft_cache, row, job.prompt, pad)
                    if pinned:
                        self._pinned[row] = pinned
                search = fast_search(job.prompt, job.evaluator, job.budget, self.eos_ids, self.settings, self.corpus,
                                     self.finished_only)
                yield from advance(row, job.key, search, lambda s=search: next(s))
            if not active:
                if ended:
                    return
                continue
            counters.ticks += 1
            steps = {row: step for row, (_, _, step) in active.items()}
            draft_out, proposals = self._draft_phase(draft_cache, steps)
            target_calls = {}
            for row, step in steps.items():
                if step.target is not None and row in proposals:
                    target_calls[row] = Call(step.target.keep, step.target.tokens + proposals[row])
                else:
                    target_calls[row] = step.target
            target_out = self._forward(self.target, target_cache, target_calls, True)
            for row in sorted(active):
                key, search, _ = active.pop(row)
                output = SearchStepOutput(target_out.get(row), draft_out.get(row), proposals.get(row))
                yield from advance(row, key, search, lambda s=search, o=output: s.send(o))

    def _draft_phase(self, cache: RowKVCache, steps: dict[int, SearchStep]) -> tuple[dict[int, RowOutput], dict[int, list[int]]]:
        """The draft calls of a tick, then `propose` greedy draft steps for the rows that ask."""
        outputs = self._forward(self.draft, cache, {row: step.draft for row, step in steps.items()}, False)
        wanted = {row: step.propose for row, step in steps.items() if step.propose > 0 and row in outputs}
        proposals = {row: [outputs[row].argmax[-1]] for row in wanted}
        for index in range(1, max(wanted.values(), default=0)):
            calls: dict[int, Call | None] = {
                row: Call(cache.lengths[row], [proposals[row][-1]]) for row, count in wanted.items() if count > index
            }
            for row, output in self._forward(self.draft, cache, calls, False).items():
                proposals[row].append(output.argmax[-1])
        return outputs, proposals

    def _forward(self, model: Any, cache: RowKVCache, calls: dict[int, Call | None], is_target: bool) -> dict[int, RowOutput]:
        """Batched forwards over every row that has a call, rows grouped by chunk length."""
        import time

        rows = [row for row, call in calls.items() if call is not None]
        if not rows:
            return {}
        start = time.perf_counter()
        results: dict[int, RowOutput] = {}
        skips = {row: self._copied(row, calls[row], cache) for row in rows}  # type: ignore[arg-type]
        sizes = [len(calls[row].tokens) - skips[row] for row in rows]  # type: ignore[union-attr]
        for group in group_by_length(rows, sizes, self.forward_overhead_tokens):
            for row in group:
                cache.truncate(row, calls[row].keep + skips[row])  # type: ignore[union-attr]
            chunks = [calls[row].tokens[skips[row] :] for row in group]  # type: ignore[union-attr]
            outputs = forward_rows(model, cache, group, chunks, self.pad_token_id)
            results.update((row, pad_front(output, skips[row])) for row, output in zip(group, outputs))
            if is_target:
                self.counters.target_forwards += 1
                self.counters.target_tokens += sum(len(chunk) for chunk in chunks)
            else:
                self.counters.draft_forwards += 1
                self.counters.draft_tokens += sum(len(chunk) for chunk in chunks)
        elapsed = time.perf_counter() - start
        if is_target:
            self.counters.target_seconds += elapsed
        else:
            self.counters.draft_seconds += elapsed
        return results

    def _copied(self, row: int, call: Call, cache: RowKVCache) -> int:
        """Leading tokens of `call` its row already holds from the shared prefix (never all of them)."""
        pinned = self._pinned.get(row, 0)
        if call.keep >= pinned or cache.lengths[row] < pinned:
            return 0
        return min(pinned - call.keep, len(call.tokens) - 1)


def pad_front(output: RowOutput, count: int) -> RowOutput:
    """`output` as if `count` more tokens had been fed before its chunk (placeholder argmax -1, zero
    hidden states): what a search indexes by fed position sees the same layout."""
    if count == 0:
        return output
    hidden = torch.cat([output.hidden.new_zeros((count, output.hidden.shape[-1])), output.hidden])
    return RowOutput(argmax=[-1] * count + output.argmax, hidden=hidden)
