"""The speculative engine: exact mode equals the target's greedy `generate`, batched equals single."""

from __future__ import annotations

import pytest
import torch

from autojudge.decode import ExactRule, JudgeRule, SpeculativeEngine, TopKRule
from autojudge.decode.tiny import noisy_copy, tiny_model

torch.set_num_threads(1)

PROMPTS = [[1, 5, 6, 7, 8, 9, 10, 11], [1, 12, 13], [1, 14, 15, 16, 17, 3], [1]]
EOS = 2


def hf_greedy(model, prompts, max_new_tokens, eos=EOS):
    """Reference: batched HF greedy generate with left padding; each row cut after its first EOS."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
            pad_token_id=0, eos_token_id=eos,
        )
    rows = []
    for row in out[:, width:].tolist():
        rows.append(row[: row.index(eos) + 1] if eos in row else row)
    return rows


def pair(arch):
    target = tiny_model(arch, seed=0, layers=2)
    draft = noisy_copy(target, scale=0.3, seed=1)
    return target, draft


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("window", [1, 4])
def test_exact_equals_greedy_generate_batched_and_single(arch, window):
    target, draft = pair(arch)
    reference = hf_greedy(target, PROMPTS, 24)
    engine = SpeculativeEngine(target, draft, ExactRule(), window=window, eos_token_ids=EOS, pad_token_id=0)
    batched = engine.generate(PROMPTS, max_new_tokens=24)
    assert [r.token_ids for r in batched] == reference
    for prompt, expected in zip(PROMPTS, reference):
        single = engine.generate([prompt], max_new_tokens=24)[0]
        assert single.token_ids == expected == hf_greedy(target, [prompt], 24)[0]
    accepted = sum(sum(n * c for n, c in enumerate(r.metrics.accepted_lengths)) for r in batched)
    assert accepted > 0, "the noisy draft should get some tokens accepted"
    for result in batched:
        m = result.metrics
        assert m.new_tokens == len(result.token_ids)
        assert m.target_calls == m.cycles >= 1
        # each cycle emits accepted + 1 tokens unless the last one was cut
        assert m.new_tokens <= sum((n + 1) * c for n, c in enumerate(m.accepted_lengths))


def test_exact_with_a_random_draft_of_a_wider_vocab_and_eos_stop():
    target = tiny_model("llama", seed=3)
    draft = tiny_model("llama", seed=4, vocab_size=112, hidden_size=16, layers=1)
    free = hf_greedy(target, PROMPTS, 20, eos=None)
    eos = free[0][6]  # a token the target really emits: row 0 stops there
    reference = hf_greedy(target, PROMPTS, 20, eos=eos)
    engine = SpeculativeEngine(target, draft, ExactRule(), window=3, eos_token_ids=[eos], pad_token_id=0)
    results = engine.generate(PROMPTS, max_new_tokens=20)
    assert [r.token_ids for r in results] == reference
    assert results[0].token_ids[-1] == eos and results[0].stop_reason == "eos"


def test_budget_one_token_and_accept_everything_judge():
    target, draft = pair("llama")
    engine = SpeculativeEngine(target, draft, ExactRule(), window=4, eos_token_ids=EOS)
    one = engine.generate(PROMPTS, max_new_tokens=1)
    assert [r.token_ids for r in one] == hf_greedy(target, PROMPTS, 1)
    assert all(r.metrics.draft_calls == 0 and r.metrics.target_calls == 1 for r in one)
    # A judge that calls every mismatch unimportant accepts all k draft tokens: the output
    # is the draft's greedy proposal plus target bonus tokens, k + 1 tokens per target call.
    judge = lambda h_t, h_d: torch.zeros(h_t.shape[0])
    lossy = SpeculativeEngine(target, draft, JudgeRule(judge, 0.5), window=4, eos_token_ids=[]).generate(PROMPTS, 20)
    for result in lossy:
        assert result.metrics.accepted_lengths == [0, 0, 0, 0, 4]
        assert result.metrics.target_calls == 4 and result.metrics.new_tokens == 20
    # top-1 is exact
    top1 = SpeculativeEngine(target, draft, TopKRule(1), window=4, eos_token_ids=EOS).generate(PROMPTS, 16)
    assert [r.token_ids for r in top1] == hf_greedy(target, PROMPTS, 16)


def test_stop_strings_cut_after_the_completing_token():
    class CharTokenizer:
        def decode(self, ids, skip_special_tokens=False):
            return "".join(chr(97 + i % 26) for i in ids)

    target, draft = pair("llama")
    full = hf_greedy(target, [PROMPTS[0]], 12, eos=None)[0]
    stop = CharTokenizer().decode(full[3:5])
    engine = SpeculativeEngine(target, draft, ExactRule(), window=4)
    result = engine.generate([PROMPTS[0]], 12, stop_strings=[stop], tokenizer=CharTokenizer())[0]
    assert stop in CharTokenizer().decode(result.token_ids)
    assert stop not in CharTokenizer().decode(result.token_ids[:-1])
    assert result.stop_reason == "stop_string" and result.token_ids == full[: len(result.token_ids)]
