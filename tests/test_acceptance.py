"""Acceptance rules and the emit/roll-back step on hand-made logits (no model)."""

from __future__ import annotations

import pytest
import torch

from autojudge.decode.engine.acceptance import ExactRule, JudgeRule, TopKRule, accepted_lengths, build_rule
from autojudge.decode.engine.cache import RowOutput
from autojudge.decode.engine.core import Proposal, Request, RequestSettings, accept, emit
from autojudge.decode.engine.metrics import RequestMetrics, aggregate


def logits_from_ranking(rankings: list[list[list[int]]], vocab: int = 8) -> torch.Tensor:
    """`[batch, k, vocab]` logits where rankings[b][i] lists token ids best first."""
    batch, k = len(rankings), len(rankings[0])
    logits = torch.full((batch, k, vocab), -10.0)
    for b in range(batch):
        for i in range(k):
            for rank, token in enumerate(rankings[b][i]):
                logits[b, i, token] = 5.0 - rank
    return logits


# target's ranking at each of 3 positions, 2 rows
LOGITS = logits_from_ranking([[[1, 2], [3, 4, 5], [6, 7]], [[2, 1], [3, 0], [4, 5]]])
DRAFT = torch.tensor([[1, 4, 6], [1, 3, 4]])  # row 0: match, 2nd choice, match; row 1: 2nd choice, match, match


def test_accepted_lengths_is_the_true_prefix():
    mask = torch.tensor([[True, True, False, True], [False, True, True, True], [True] * 4, [False] * 4])
    assert accepted_lengths(mask).tolist() == [2, 0, 4, 0]


def test_exact_rule():
    assert ExactRule()(DRAFT, LOGITS).tolist() == [[True, False, True], [False, True, True]]


def test_topk_rule():
    assert TopKRule(1)(DRAFT, LOGITS).tolist() == [[True, False, True], [False, True, True]]
    assert TopKRule(2)(DRAFT, LOGITS).tolist() == [[True, True, True], [True, True, True]]
    assert TopKRule(2)(torch.tensor([[2, 5, 7]]), LOGITS[:1]).tolist() == [[True, False, True]]
    assert TopKRule(3)(torch.tensor([[2, 5, 7]]), LOGITS[:1]).tolist()[0][1] is True
    with pytest.raises(ValueError):
        TopKRule(0)


def test_judge_rule_sees_only_mismatches_and_thresholds():
    h_target = torch.arange(2 * 3, dtype=torch.float32).view(2, 3, 1)  # feature = 0..5 per position
    h_draft = -h_target
    seen = []

    def judge(h_t, h_d):
        seen.append((h_t.squeeze(-1).tolist(), h_d.squeeze(-1).tolist()))
        return torch.tensor([0.2, 0.9])[: h_t.shape[0]]  # mismatch (0,1) -> 0.2, mismatch (1,0) -> 0.9

    mask = JudgeRule(judge, threshold=0.5)(DRAFT, LOGITS, h_target, h_draft)
    assert seen == [([1.0, 3.0], [-1.0, -3.0])]  # positions (0, 1) and (1, 0), row-major
    assert mask.tolist() == [[True, True, True], [False, True, True]]
    assert accepted_lengths(mask).tolist() == [3, 0]
    strict = JudgeRule(judge, threshold=0.1)(DRAFT, LOGITS, h_target, h_draft)
    assert strict.tolist() == ExactRule()(DRAFT, LOGITS).tolist()
    # no mismatch: the judge is not called
    seen.clear()
    JudgeRule(judge, 0.5)(torch.tensor([[1, 3, 6]]), LOGITS[:1], h_target[:1], h_draft[:1])
    assert seen == []


def test_build_rule():
    assert isinstance(build_rule("exact"), ExactRule)
    assert build_rule("topk", top_k=3).top_k == 3

    class Judge:
        default_threshold = 0.3

        def __call__(self, h_t, h_d):
            return torch.zeros(h_t.shape[0])

    assert build_rule("autojudge", judge=Judge()).threshold == 0.3
    assert build_rule("autojudge", judge=Judge(), threshold=0.7).threshold == 0.7
    with pytest.raises(ValueError):
        build_rule("autojudge")
    with pytest.raises(ValueError):
        build_rule("sampling")


def test_accept_and_emit_replace_the_first_rejected_token_or_add_the_bonus():
    # window 3; target argmax at 4 positions (the last is the bonus position)
    argmax = [[1, 3, 6, 0], [2, 3, 4, 5], [1, 2, 3, 4]]
    logits = logits_from_ranking([[[a] for a in row] for row in argmax])  # [3, 4, V]
    verification = [RowOutput(argmax=row, hidden=torch.zeros(4, 1), logits=logits[i]) for i, row in enumerate(argmax)]
    drafted = [[1, 4, 6], [1, 3, 4], [1, 2, 3]]
    proposal = Proposal(tokens=drafted, hidden=[torch.zeros(3, 1)] * 3, draft_calls=[3, 3, 3])

    def rows(rule):
        return [Request(i, [9], 1, RequestSettings(), rule, 3) for i in range(3)]

    accepted = accept(rows(ExactRule()), proposal, verification)
    assert accepted == [1, 0, 3]
    assert [emit(d, a, n) for d, a, n in zip(drafted, argmax, accepted)] == [[1, 3], [2], [1, 2, 3, 4]]
    # a judge that accepts every mismatch: row 0 keeps the draft's 4 and 6 (6 matches anyway), bonus 0
    lenient = JudgeRule(lambda h_t, h_d: torch.zeros(h_t.shape[0]), 0.5)
    accepted = accept(rows(lenient), proposal, verification)
    assert [emit(d, a, n) for d, a, n in zip(drafted, argmax, accepted)] == [[1, 4, 6, 0], [1, 3, 4, 5], [1, 2, 3, 4]]
    # rows with a shorter window never keep the padding beyond it
    short = Proposal(tokens=[[1], [1, 3, 4], []], hidden=[torch.zeros(1, 1), torch.zeros(3, 1), None], draft_calls=[1, 3, 0])
    assert accept(rows(lenient), short, verification) == [1, 3, 0]


def test_metrics_and_aggregate():
    first, second = RequestMetrics(), RequestMetrics()
    for n in (0, 2, 4):
        first.record_cycle(n, draft_calls=4)
    first.new_tokens, first.wall_s = 9, 0.5
    second.record_cycle(1, draft_calls=4)
    second.new_tokens, second.wall_s = 2, 1.0
    assert first.accepted_lengths == [1, 0, 1, 0, 1] and first.target_calls == 3 and first.draft_calls == 12
    assert first.tokens_per_target_call == 3.0 and first.mean_accepted == 2.0 and first.tokens_per_s == 18.0
    total = aggregate([first, second])
    assert total.accepted_lengths == [1, 1, 1, 0, 1] and total.new_tokens == 11 and total.target_calls == 4
    assert total.wall_s == 1.0 and aggregate([first, second], wall_s=3.0).wall_s == 3.0
    assert set(total.to_dict()) >= {"new_tokens", "target_calls", "draft_calls", "accepted_lengths", "wall_s", "tokens_per_target_call", "tokens_per_s"}
