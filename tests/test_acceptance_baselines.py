"""The training-free lossy rules `typical` and `prob`, pinned on hand-made logits (no model)."""

from __future__ import annotations

import math

import pytest
import torch

from autojudge.decode.engine.acceptance import MODES, ProbRule, TypicalRule, accepted_lengths, build_rule, draft_token_probs


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


# ---------------------------------------------------------------------------------- FLy


def fly_logits(argmax: list[int], uncertain: list[bool], vocab: int = 6) -> torch.Tensor:
    """`[1, k, vocab]`: at each position the target's argmax is `argmax[i]`, with a peaked (top-3
    entropy ~0.17 nats) or spread (~1.1 nats) distribution."""
    rows = []
    for token, spread in zip(argmax, uncertain):
        probs = [0.02] * vocab if spread else [0.006] * vocab
        probs[token] = 0.5 if spread else 0.97
        if spread:
            probs[(token + 1) % vocab], probs[(token + 2) % vocab] = 0.3, 0.12
        total = sum(probs)
        rows.append([p / total for p in probs])
    return logits_from_probs([rows])


def test_top3_entropy_is_the_authors_measure():
    from autojudge.decode.engine.acceptance import top3_entropy

    logits = fly_logits([0, 0], [False, True])
    probs = torch.softmax(logits.double(), -1)[0]
    for i in range(2):
        top = probs[i].topk(3).values
        assert top3_entropy(logits)[0, i].item() == pytest.approx(-(top * top.log()).sum().item(), abs=1e-5)
    assert top3_entropy(logits)[0, 0] < 0.3 < top3_entropy(logits)[0, 1]


def test_fly_accepts_an_uncertain_mismatch_once_the_following_draft_tokens_match():
    from autojudge.decode.engine.acceptance import FlyRule

    rule = FlyRule(entropy=0.3, window=3)
    target = [1, 2, 3, 4, 5, 1, 2, 3]
    logits = fly_logits(target, [True] * 8)
    # mismatch at 1, then 2 matches (window 3 = mismatch + 2 followers): accepted, the whole run kept
    draft = torch.tensor([[1, 0, 3, 4, 5, 1, 2, 3]])
    mask = rule(draft, logits)
    assert mask.tolist() == [[True] * 8]
    assert accepted_lengths(mask).tolist() == [8]
    # the same mismatch with a second mismatch among its followers: rejected (the draft has not re-synchronised)
    draft = torch.tensor([[1, 0, 3, 0, 5, 1, 2, 3]])
    assert accepted_lengths(rule(draft, logits)).tolist() == [1]
    # exact mode on the first draft stops at the mismatch
    assert accepted_lengths(build_rule("exact")(torch.tensor([[1, 0, 3, 4, 5, 1, 2, 3]]), logits)).tolist() == [1]


def test_fly_rejects_a_mismatch_where_the_target_is_certain():
    from autojudge.decode.engine.acceptance import FlyRule

    target = [1, 2, 3, 4, 5, 1, 2, 3]
    certain_at_1 = fly_logits(target, [True, False, True, True, True, True, True, True])
    draft = torch.tensor([[1, 0, 3, 4, 5, 1, 2, 3]])
    assert accepted_lengths(FlyRule(0.3, 3)(draft, certain_at_1)).tolist() == [1]
    assert accepted_lengths(FlyRule(0.0, 3)(draft, certain_at_1)).tolist() == [8]  # threshold 0: entropy ignored


def test_fly_defers_the_decision_to_verified_tokens_only():
    from autojudge.decode.engine.acceptance import FlyRule

    rule = FlyRule(entropy=0.3, window=3)
    target = [1, 2, 3, 4, 5, 1]
    logits = fly_logits(target, [True] * 6)
    # k = 6, window 3: a mismatch at i is decided only when i + 3 < 6 (the authors' last-window rule)
    assert accepted_lengths(rule(torch.tensor([[1, 2, 0, 4, 5, 1]]), logits)).tolist() == [6]  # i = 2: decided
    assert accepted_lengths(rule(torch.tensor([[1, 2, 3, 0, 5, 1]]), logits)).tolist() == [3]  # i = 3: not yet
    # a shorter row (padding -1) is decided against its own length, not the batch's
    two = torch.cat([logits, logits])
    draft = torch.tensor([[1, 2, 0, 4, 5, 1], [1, 2, 0, 4, 5, -1]])
    assert accepted_lengths(rule(draft, two)).tolist() == [6, 2]
    # a window longer than the proposal allows accepts nothing lossy
    assert accepted_lengths(FlyRule(0.3, 6)(torch.tensor([[1, 0, 3, 4, 5, 1]]), logits)).tolist() == [1]


def test_fly_parameters_are_checked_and_the_mode_is_built():
    from autojudge.decode.engine.acceptance import FlyRule

    assert "fly" in MODES
    rule = build_rule("fly", fly_entropy=0.5, fly_window=4)
    assert isinstance(rule, FlyRule) and rule.describe() == {"mode": "fly", "entropy": 0.5, "window": 4}
    for entropy, window in ((-0.1, 6), (float("nan"), 6), (0.3, 1), (0.3, 100)):
        with pytest.raises(ValueError):
            FlyRule(entropy, window)


def test_the_torch_free_copies_of_the_rule_defaults_agree():
    """`setup` (no torch: argparse defaults, the configs) repeats the rules' defaults and the mode names."""
    import inspect

    from autojudge import setup
    from autojudge.actors.server import ReplicaConfig
    from autojudge.decode.engine import RequestSettings, acceptance
    from autojudge.pipeline.run import RunConfig

    assert setup.RULE_MODES == acceptance.MODES
    assert (setup.FLY_ENTROPY, setup.FLY_WINDOW) == (acceptance.FLY_ENTROPY, acceptance.FLY_WINDOW)
    assert RunConfig().decoding.fly_window == ReplicaConfig().decoding.fly_window == acceptance.FLY_WINDOW
    defaults = {name: p.default for name, p in inspect.signature(acceptance.build_rule).parameters.items()}
    assert (setup.DEFAULT_TOP_K, setup.TYPICAL_EPSILON, setup.MIN_PROB) == (defaults["top_k"], defaults["epsilon"], defaults["min_prob"])
    assert setup.DEFAULT_TOP_K == RequestSettings().top_k
