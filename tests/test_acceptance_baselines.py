"""The training-free lossy rules `typical` and `prob`, pinned on hand-made logits (no model)."""

from __future__ import annotations

import math

import pytest
import torch

from autojudge.decode.acceptance import MODES, ProbRule, TypicalRule, accepted_lengths, build_rule, draft_token_probs


def logits_from_probs(rows: list[list[list[float]]]) -> torch.Tensor:
    """`[batch, k, vocab]` logits whose softmax is exactly the given distributions."""
    return torch.tensor(rows, dtype=torch.float64).log().float()


# one row, three positions, vocab 4
PEAKED = [0.97, 0.01, 0.01, 0.01]  # entropy 0.168 nats
SPREAD = [0.5, 0.3, 0.15, 0.05]  # entropy 1.142 nats
UNIFORM = [0.25, 0.25, 0.25, 0.25]  # entropy ln 4 = 1.386 nats; argmax is token 0 (first of ties)
LOGITS = logits_from_probs([[PEAKED, SPREAD, UNIFORM]])


def entropy(probs: list[float]) -> float:
    return -sum(p * math.log(p) for p in probs)


def test_probabilities_and_entropy_of_the_helper():
    probs, ent = draft_token_probs(torch.tensor([[1, 2, 3]]), LOGITS)
    assert probs[0].tolist() == pytest.approx([0.01, 0.15, 0.25], abs=1e-5)
    assert ent[0].tolist() == pytest.approx([entropy(PEAKED), entropy(SPREAD), entropy(UNIFORM)], abs=1e-4)


def test_typical_rule_with_the_default_constants():
    rule = TypicalRule()  # epsilon 0.09, delta sqrt(0.09) = 0.3 (Medusa / vLLM defaults)
    assert (rule.epsilon, rule.delta) == (0.09, pytest.approx(0.3))
    # thresholds: min(0.09, 0.3 * exp(-H)) = 0.09 at every position here (0.3*e^-1.386 = 0.075 at UNIFORM!)
    assert 0.3 * math.exp(-entropy(UNIFORM)) == pytest.approx(0.075)
    # PEAKED: p=0.01 < 0.09 rejected; SPREAD: p=0.15 > 0.09 accepted; UNIFORM: p=0.25 > 0.075 accepted
    assert rule(torch.tensor([[1, 2, 3]]), LOGITS).tolist() == [[False, True, True]]
    # SPREAD: p=0.05 < 0.09 rejected, exact matches always accepted
    assert rule(torch.tensor([[0, 3, 0]]), LOGITS).tolist() == [[True, False, True]]


def test_typical_rule_entropy_term_decides_when_epsilon_is_large():
    # epsilon 0.5, delta 0.3 (explicit): thresholds min(0.5, 0.3 e^-H): PEAKED 0.254, SPREAD 0.0957, UNIFORM 0.075
    rule = TypicalRule(0.5, delta=0.3)
    assert rule(torch.tensor([[1, 3, 2]]), LOGITS).tolist() == [[False, False, True]]
    assert rule(torch.tensor([[1, 2, 1]]), LOGITS).tolist() == [[False, True, True]]
    # a larger epsilon with delta = sqrt(epsilon) raises the bar at low entropy only up to delta * e^-H
    wide = TypicalRule(0.5)  # delta 0.707: SPREAD threshold min(0.5, 0.226) = 0.226 > 0.15: rejected
    assert wide(torch.tensor([[0, 2, 1]]), LOGITS).tolist() == [[True, False, True]]
    assert accepted_lengths(wide(torch.tensor([[0, 2, 1]]), LOGITS)).tolist() == [1]


def test_prob_rule_thresholds_the_target_probability_of_the_draft_token():
    draft = torch.tensor([[1, 1, 3], [0, 2, 1]])
    logits = torch.cat([LOGITS, LOGITS])
    assert ProbRule(0.29)(draft, logits).tolist() == [[False, True, False], [True, False, False]]
    assert ProbRule(0.14)(draft, logits).tolist() == [[False, True, True], [True, True, True]]
    assert ProbRule(0.009)(draft, logits).tolist() == [[True, True, True], [True, True, True]]
    assert ProbRule(1.0)(draft, logits).tolist() == [[False, False, False], [True, False, False]]  # exact only


def test_build_rule_and_bad_parameters():
    assert {"typical", "prob"} <= set(MODES)
    assert isinstance(build_rule("typical", epsilon=0.2), TypicalRule) and build_rule("typical", epsilon=0.2).epsilon == 0.2
    assert build_rule("prob", min_prob=0.4).describe() == {"mode": "prob", "min_prob": 0.4}
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            TypicalRule(bad)
        with pytest.raises(ValueError):
            ProbRule(bad)
