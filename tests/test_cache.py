"""The per-row-slot KV cache and its batched forward (autojudge/decode/engine/cache.py)."""

from __future__ import annotations

import pytest
import torch

from autojudge.decode.engine.cache import CacheLayoutError, RowKVCache, forward_rows, group_by_length
from tests.helpers import tiny_model

torch.set_num_threads(1)


def full_logits(model, tokens: list[int]) -> torch.Tensor:
    """Reference: uncached forward over the whole sequence, `[len, vocab]`."""
    with torch.inference_mode():
        return model(torch.tensor([tokens])).logits[0]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_rows_of_different_lengths_match_single_row_forwards_through_roll_back_and_reuse(arch):
    model = tiny_model(arch, seed=1)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    cache = RowKVCache(model, num_rows=3, capacity=16)
    outs = forward_rows(model, cache, [0, 1, 2], prompts, with_logits=True)
    for out, prompt in zip(outs, prompts):
        torch.testing.assert_close(out.logits, full_logits(model, prompt), atol=1e-4, rtol=1e-4)
        assert out.argmax == full_logits(model, prompt).argmax(-1).tolist()
    assert cache.lengths == [6, 2, 4]
    # one more token per row, in a different row order, outputs for the last position only
    step = forward_rows(model, cache, [2, 0, 1], [[22], [20], [21]], last=[1, 1, 1], with_logits=True)
    for out, row in zip(step, [2, 0, 1]):
        torch.testing.assert_close(out.logits[0], full_logits(model, prompts[row] + [20 + row])[-1], atol=1e-4, rtol=1e-4)
    # roll rows back by different amounts, continue a subset of rows
    cache.truncate(0, 4)
    cache.truncate(1, 2)
    kept = [prompts[0][:4], prompts[1][:2]]
    after = forward_rows(model, cache, [0, 1], [[30, 31], [32]], last=[1, 1], with_logits=True)
    for out, row, extra in zip(after, [0, 1], [[30, 31], [32]]):
        torch.testing.assert_close(out.logits[0], full_logits(model, kept[row] + extra)[-1], atol=1e-4, rtol=1e-4)
    # a freed row takes a new sequence; the other rows are untouched
    cache.reset(1)
    fresh = forward_rows(model, cache, [1, 2], [[40, 41, 42], [43]], last=[3, 1], with_logits=True)
    torch.testing.assert_close(fresh[0].logits, full_logits(model, [40, 41, 42]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fresh[1].logits[0], full_logits(model, prompts[2] + [22, 43])[-1], atol=1e-4, rtol=1e-4)


def test_group_by_length_splits_a_long_chunk_from_one_token_rows_when_padding_costs_more():
    lengths = [1, 1, 2, 1, 40, 1]
    assert group_by_length([10, 11, 12, 13, 14, 15], lengths, 16) == [[10, 11, 12, 13, 15], [14]]
    assert group_by_length([10, 11, 12, 13, 14, 15], lengths, 1000) == [[10, 11, 12, 13, 14, 15]]  # a call costs more
    assert group_by_length([3, 4], [5, 5], 0) in ([[3, 4]], [[3], [4]])  # equal lengths: no padding either way


def test_grouped_forward_equals_one_padded_forward_in_the_callers_row_order():
    """A new row's prompt among one-token rows runs in a forward of its own; outputs (and cache lengths)
    are those of the single padded forward, returned in the order the rows were given."""
    model = tiny_model("llama", seed=3)
    prompts = [[5, 6], [7, 8, 9], [10, 11]]
    grouped, padded = RowKVCache(model, num_rows=4, capacity=64), RowKVCache(model, num_rows=4, capacity=64)
    for cache in (grouped, padded):
        forward_rows(model, cache, [0, 1, 2], prompts)
    rows, chunks = [3, 0, 2, 1], [list(range(20, 50)), [12], [13], [14]]  # row 3 joins with a 30-token prompt
    assert group_by_length(list(range(4)), [len(c) for c in chunks], 8) == [[1, 2, 3], [0]]
    out = forward_rows(model, grouped, rows, chunks, last=[2, 1, 1, 1], with_logits=True, overhead_tokens=8)
    reference = forward_rows(model, padded, rows, chunks, last=[2, 1, 1, 1], with_logits=True)
    assert grouped.lengths == padded.lengths == [3, 4, 3, 30]
    for ours, theirs in zip(out, reference):
        assert ours.argmax == theirs.argmax
        torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ours.hidden, theirs.hidden, atol=1e-4, rtol=1e-4)


def test_hidden_is_the_lm_head_input_and_grow_keeps_rows():
    model = tiny_model("llama", seed=2)
    cache = RowKVCache(model, num_rows=1, capacity=4)
    out = forward_rows(model, cache, [0], [[3, 4, 5]], last=[2], with_logits=True)[0]
    with torch.inference_mode():
        torch.testing.assert_close(model.lm_head(out.hidden), out.logits)
    with torch.inference_mode():
        reference = model(torch.tensor([[3, 4, 5]]), output_hidden_states=True).hidden_states[-1][0, 1:]
    torch.testing.assert_close(out.hidden, reference)
    with pytest.raises(ValueError, match="capacity"):
        forward_rows(model, cache, [0], [[6, 7]])
    cache.grow(32, num_rows=3)
    assert cache.lengths == [3, 0, 0]
    step = forward_rows(model, cache, [0, 2], [[6] * 10, [9]])
    assert step[0].argmax == full_logits(model, [3, 4, 5] + [6] * 10)[3:].argmax(-1).tolist()
    assert cache.lengths == [13, 0, 1]


def test_sliding_window_models_are_refused():
    import transformers

    config = transformers.Qwen2Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=96, use_sliding_window=True, sliding_window=8, max_window_layers=0,
    )
    model = transformers.Qwen2ForCausalLM(config).eval()
    with pytest.raises(CacheLayoutError, match="full-attention"):
        RowKVCache(model, 1, 8)
