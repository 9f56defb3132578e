"""The engine core: exact mode equals the target's greedy `generate`, whatever shares the batch;
continuous batching (rows join mid-generation, abort frees slots); per-request settings."""

from __future__ import annotations

import pytest
import torch

from autojudge.decode.engine import EngineCore, ExactRule, JudgeRule, RequestSettings, TopKRule, accepted_lengths
from tests.helpers import greedy_reference, noisy_copy, tiny_model

torch.set_num_threads(1)

PROMPTS = [[1, 5, 6, 7, 8, 9, 10, 11], [1, 12, 13], [1, 14, 15, 16, 17, 3], [1]]
EOS = 2


def pair(arch):
    target = tiny_model(arch, seed=0, layers=2)
    return target, noisy_copy(target, scale=0.3, seed=1)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("window", [1, 4])
def test_exact_equals_greedy_generate_batched_and_single(arch, window):
    target, draft = pair(arch)
    reference = greedy_reference(target, PROMPTS, 24)
    engine = EngineCore(target, draft, eos_token_ids=EOS, default_window=window)
    batched = engine.generate(PROMPTS, RequestSettings(max_new_tokens=24))
    assert [r.token_ids for r in batched] == reference
    for prompt, expected in zip(PROMPTS, reference):
        assert engine.generate([prompt], RequestSettings(max_new_tokens=24))[0].token_ids == expected
    accepted = sum(sum(n * c for n, c in enumerate(r.metrics.accepted_lengths)) for r in batched)
    assert accepted > 0, "the noisy draft should get some tokens accepted"
    for result in batched:
        m = result.metrics
        assert m.new_tokens == len(result.token_ids)
        assert m.target_calls == m.cycles >= 1
        assert m.new_tokens <= sum((n + 1) * c for n, c in enumerate(m.accepted_lengths))


def test_requests_added_mid_generation_produce_what_they_produce_alone():
    target, draft = pair("llama")
    reference = greedy_reference(target, PROMPTS, 20)
    engine = EngineCore(target, draft, eos_token_ids=EOS, default_window=3, max_batch=8)
    settings = RequestSettings(max_new_tokens=20)
    tokens: dict[int, list[int]] = {}
    order = [engine.add_request(PROMPTS[0], settings)]
    steps = 0
    while engine.has_unfinished() or len(order) < len(PROMPTS):
        if steps in (1, 2, 4) and len(order) < len(PROMPTS):  # join while row 0 is mid-generation
            order.append(engine.add_request(PROMPTS[len(order)], settings))
        for update in engine.step().updates:
            tokens.setdefault(update.request_id, []).extend(update.new_token_ids)
        steps += 1
    assert [tokens[i] for i in order] == reference


def test_requests_added_while_the_draft_proposes_join_that_cycles_verification():
    """`step(poll)`: a request added by `poll` gets its first token from the same cycle, and every
    output still equals greedy `generate`; with no free row it waits for the next cycle."""
    target, draft = pair("llama")
    reference = greedy_reference(target, PROMPTS, 20)
    engine = EngineCore(target, draft, eos_token_ids=EOS, default_window=3, max_batch=3)
    settings = RequestSettings(max_new_tokens=20)
    order = [engine.add_request(PROMPTS[0], settings)]
    tokens: dict[int, list[int]] = {}

    def poll() -> None:  # one new request per cycle while prompts remain
        if len(order) < len(PROMPTS):
            order.append(engine.add_request(PROMPTS[len(order)], settings))

    first = engine.step(poll).updates
    assert {u.request_id for u in first} == set(order[:2]) and all(len(u.new_token_ids) >= 1 for u in first)
    assert [u.metrics.draft_calls for u in first if u.request_id == order[1]] == [0]  # verified, never drafted
    for update in first:
        tokens.setdefault(update.request_id, []).extend(update.new_token_ids)
    while engine.has_unfinished() or len(order) < len(PROMPTS):
        for update in engine.step(poll).updates:
            tokens.setdefault(update.request_id, []).extend(update.new_token_ids)
    assert len(PROMPTS) > 3  # some waited for a free row
    assert [tokens[i] for i in order] == reference


def test_more_requests_than_rows_wait_and_take_freed_slots():
    target, draft = pair("qwen2")
    prompts = PROMPTS * 3
    engine = EngineCore(target, draft, eos_token_ids=EOS, default_window=4, max_batch=2)
    first = engine.add_request(prompts[0], RequestSettings(max_new_tokens=16))
    engine.add_request(prompts[1], RequestSettings(max_new_tokens=16))
    engine.add_request(prompts[2], RequestSettings(max_new_tokens=16))
    engine.step()
    assert engine.num_running == 2 and engine.num_waiting == 1
    engine.abort(first)
    assert engine.num_running == 1 and engine.target_cache.lengths[0] == 0 == engine.draft_cache.lengths[0]
    while engine.has_unfinished():
        engine.step()
    results = engine.generate(prompts, RequestSettings(max_new_tokens=16))
    assert [r.token_ids for r in results] == greedy_reference(target, prompts, 16)
    assert engine.target_cache.num_rows == 2 and engine.num_running == engine.num_waiting == 0


def test_abort_frees_the_row_at_once_and_others_continue_exactly():
    target, draft = pair("llama")
    engine = EngineCore(target, draft, eos_token_ids=[], default_window=4)
    settings = RequestSettings(max_new_tokens=30)
    ids = [engine.add_request(p, settings) for p in PROMPTS]
    tokens = {i: [] for i in ids}
    for _ in range(2):
        for update in engine.step().updates:
            tokens[update.request_id].extend(update.new_token_ids)
    slot = engine.running[ids[1]].slot
    engine.abort(ids[1])
    assert ids[1] not in engine.running and engine.target_cache.lengths[slot] == 0 == engine.draft_cache.lengths[slot]
    engine.abort(12345)  # unknown ids are ignored
    while engine.has_unfinished():
        for update in engine.step().updates:
            assert update.request_id != ids[1]
            tokens[update.request_id].extend(update.new_token_ids)
    reference = greedy_reference(target, PROMPTS, 30, eos=None)
    assert [tokens[i] for i in ids if i != ids[1]] == [reference[0], reference[2], reference[3]]


def test_per_request_settings_are_honoured_in_one_batch():
    target, draft = pair("llama")
    judge = lambda h_t, h_d: torch.zeros(h_t.shape[0])  # every mismatch unimportant
    engine = EngineCore(target, draft, judge=judge, eos_token_ids=[], default_window=4)
    reference = greedy_reference(target, PROMPTS, 20, eos=None)
    settings = [
        RequestSettings(max_new_tokens=20, mode="exact", window=2),
        RequestSettings(max_new_tokens=20, mode="autojudge", threshold=0.5),
        RequestSettings(max_new_tokens=7, window=0),  # no speculation
        RequestSettings(max_new_tokens=20, mode="topk", top_k=1, window=3),
    ]
    results = engine.generate(PROMPTS, settings)
    assert results[0].token_ids == reference[0] and len(results[0].metrics.accepted_lengths) <= 3
    assert results[1].metrics.accepted_lengths == [0, 0, 0, 0, 4] and results[1].metrics.target_calls == 4
    assert results[1].metrics.draft_tokens == 16  # 4 cycles of 4 proposals
    assert results[2].token_ids == reference[2][:7] and results[2].metrics.draft_calls == 0 == results[2].metrics.draft_tokens
    assert results[2].metrics.target_calls == 7 and results[2].stop_reason == "length"
    assert results[3].token_ids == reference[3]  # top-1 is exact


def test_exact_with_a_random_draft_of_a_wider_vocab_and_eos_stop():
    target = tiny_model("llama", seed=3)
    draft = tiny_model("llama", seed=4, vocab_size=112, hidden_size=16, layers=1)
    free = greedy_reference(target, PROMPTS, 20, eos=None)
    eos = free[0][6]  # a token the target really emits: row 0 stops there
    reference = greedy_reference(target, PROMPTS, 20, eos=eos)
    engine = EngineCore(target, draft, eos_token_ids=[eos], default_window=3)
    results = engine.generate(PROMPTS, RequestSettings(max_new_tokens=20))
    assert [r.token_ids for r in results] == reference
    assert results[0].token_ids[-1] == eos and results[0].stop_reason == "eos"


def test_budget_one_token_and_accept_everything_judge():
    target, draft = pair("llama")
    engine = EngineCore(target, draft, eos_token_ids=EOS, default_window=4)
    one = engine.generate(PROMPTS, RequestSettings(max_new_tokens=1))
    assert [r.token_ids for r in one] == greedy_reference(target, PROMPTS, 1)
    assert all(r.metrics.draft_calls == 0 and r.metrics.target_calls == 1 for r in one)
    zero = engine.generate(PROMPTS[:1], RequestSettings(max_new_tokens=0))[0]
    assert zero.token_ids == [] and zero.metrics.target_calls == 0
    judge = lambda h_t, h_d: torch.zeros(h_t.shape[0])
    lossy = EngineCore(target, draft, eos_token_ids=[], default_window=4)
    for result in lossy.generate(PROMPTS, RequestSettings(max_new_tokens=20, rule=JudgeRule(judge, 0.5))):
        assert result.metrics.accepted_lengths == [0, 0, 0, 0, 4]
        assert result.metrics.target_calls == 4 and result.metrics.new_tokens == 20
    top1 = engine.generate(PROMPTS, RequestSettings(max_new_tokens=16, rule=TopKRule(1)))
    assert [r.token_ids for r in top1] == greedy_reference(target, PROMPTS, 16)
    exact = engine.generate(PROMPTS, RequestSettings(max_new_tokens=16, rule=ExactRule()))
    assert [r.token_ids for r in exact] == greedy_reference(target, PROMPTS, 16)


def test_stop_strings_cut_after_the_completing_token():
    class CharTokenizer:
        def decode(self, ids, skip_special_tokens=False):
            return "".join(chr(97 + i % 26) for i in ids)

    target, draft = pair("llama")
    full = greedy_reference(target, [PROMPTS[0]], 12, eos=None)[0]
    stop = CharTokenizer().decode(full[3:5])
    engine = EngineCore(target, draft, tokenizer=CharTokenizer(), default_window=4)
    result = engine.generate([PROMPTS[0]], RequestSettings(max_new_tokens=12, stop_strings=(stop,)))[0]
    assert stop in CharTokenizer().decode(result.token_ids)
    assert stop not in CharTokenizer().decode(result.token_ids[:-1])
    assert result.stop_reason == "stop_string" and result.token_ids == full[: len(result.token_ids)]


def test_bad_requests_are_refused_and_leave_the_engine_usable():
    target, draft = pair("llama")
    engine = EngineCore(target, draft, eos_token_ids=EOS)
    with pytest.raises(ValueError, match="at least one token"):
        engine.add_request([], RequestSettings())
    with pytest.raises(ValueError, match="unknown decode mode"):
        engine.add_request([1, 2], RequestSettings(mode="nope"))
    with pytest.raises(ValueError, match="needs a judge"):
        engine.add_request([1, 2], RequestSettings(mode="autojudge"))
    with pytest.raises(ValueError, match="tokenizer"):
        engine.add_request([1, 2], RequestSettings(stop_strings=("x",)))
    assert not engine.has_unfinished()
    assert engine.generate([PROMPTS[1]], RequestSettings(max_new_tokens=5))[0].token_ids == greedy_reference(target, [PROMPTS[1]], 5)[0]


def test_training_free_rules_per_request_in_a_mixed_batch():
    from autojudge.decode.engine.acceptance import ProbRule, TypicalRule

    target, draft = pair("llama")
    engine = EngineCore(target, draft, eos_token_ids=[], default_window=4)
    reference = greedy_reference(target, PROMPTS, 16, eos=None)
    settings = [
        RequestSettings(max_new_tokens=16),
        RequestSettings(max_new_tokens=16, mode="typical", threshold=0.05, window=2),
        RequestSettings(max_new_tokens=16, mode="prob", threshold=1.0, window=3),  # a mismatch never has p >= 1
        RequestSettings(max_new_tokens=16, mode="prob"),
    ]
    typical, strict, default = (engine.rule_for(s) for s in settings[1:])
    assert isinstance(typical, TypicalRule) and typical.epsilon == 0.05
    assert isinstance(strict, ProbRule) and strict.min_prob == 1.0 and default.min_prob == 0.3
    results = engine.generate(PROMPTS, settings)
    assert results[0].token_ids == reference[0] and results[2].token_ids == reference[2]
    assert all(len(r.token_ids) == 16 for r in results)
    assert len(results[1].metrics.accepted_lengths) <= 3  # its own window of 2 in a batch drafting 4


def judged_reference(target, draft, prompt, window, rule, max_new_tokens):
    """Judged speculative decoding the slow way (batch 1, no cache, whole-sequence forwards):
    the draft's and the target's hidden states at every c_i straight from `base_model`. Returns
    the tokens, the cycles whose verdict needed the draft's features at c_k (c_1..c_{k-1}
    kept, c_k a mismatch) and all cycles (target calls)."""
    ids, out, decided_last, cycles = list(prompt), [], 0, 0
    with torch.no_grad():
        while len(out) < max_new_tokens:
            k = min(window, max_new_tokens - len(out) - 1)
            drafted = []
            for _ in range(k):
                drafted.append(int(draft(torch.tensor([ids + drafted])).logits[0, -1].argmax()))
            sequence = torch.tensor([ids + drafted])
            logits = target(sequence).logits[0, len(ids) - 1 :]  # [k + 1, V]: predicting c_1..c_k and the bonus
            n = 0
            if k:
                h_target = target.base_model(sequence).last_hidden_state[:, len(ids) :]  # [1, k, Ht]
                h_draft = draft.base_model(sequence).last_hidden_state[:, len(ids) :]  # [1, k, Hd]
                mask = rule(torch.tensor([drafted]), logits[None, :k], h_target, h_draft)
                n = int(accepted_lengths(mask)[0])
                decided_last += int(accepted_lengths(mask[:, : k - 1])[0]) == k - 1 and drafted[-1] != int(logits[k - 1].argmax())
            new = drafted[:n] + [int(logits[n].argmax())]
            ids, out, cycles = ids + new, out + new, cycles + 1
    return out, decided_last, cycles


def test_the_judge_reads_the_draft_and_target_features_at_each_mismatch():
    """A judge whose verdict depends on the draft's and the target's features, rows of windows
    4, 1, 3 and 4 in one batch: the engine's output equals the slow reference's, and the draft
    feeds its last proposal only when the judge decides there."""
    target, draft = pair("llama")
    generator = torch.Generator().manual_seed(5)
    w_draft, w_target = torch.randn(draft.config.hidden_size, generator=generator), torch.randn(target.config.hidden_size, generator=generator)

    def judge(h_t, h_d):
        return torch.sigmoid(3 * (h_d @ w_draft / h_d.norm(dim=-1) + h_t @ w_target / h_t.norm(dim=-1)))

    rule = JudgeRule(judge, 0.5)
    windows, budget = [4, 1, 3, 4], 24
    expected, decided_last, cycles = zip(*(judged_reference(target, draft, p, k, rule, budget) for p, k in zip(PROMPTS, windows)))
    engine = EngineCore(target, draft, eos_token_ids=[], default_window=4)
    results = engine.generate(PROMPTS, [RequestSettings(max_new_tokens=budget, rule=rule, window=k) for k in windows])
    assert [r.token_ids for r in results] == list(expected)
    assert [r.metrics.cycles for r in results] == list(cycles)
    assert list(expected) != greedy_reference(target, PROMPTS, budget, eos=None), "the judge should accept some mismatches"
    # one draft step per proposed token, plus one per cycle that needed the features at c_k
    assert [r.metrics.draft_calls - r.metrics.draft_tokens for r in results] == list(decided_last)
    assert 0 < sum(decided_last) < sum(cycles)
