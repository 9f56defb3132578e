"""Cached forward and batched-cache roll-back (autojudge/decode/forward.py)."""

from __future__ import annotations

import pytest
import torch

from autojudge.decode.forward import BatchCache, cached_forward, left_pad
from autojudge.decode.tiny import tiny_model

torch.set_num_threads(1)


def _hand_cache(rows: list[list[float]], valid: list[list[bool]]) -> BatchCache:
    """A one-layer cache whose key at (row, slot) is the given number (values = key + 100)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    keys = torch.tensor(rows, dtype=torch.float32)[:, None, :, None]  # [batch, 1 head, slots, 1]
    cache.update(keys, keys + 100, 0)
    return BatchCache(cache=cache, valid=torch.tensor(valid))


def _keys(cache: BatchCache) -> list[list[float]]:
    return cache.cache.layers[0].keys[:, 0, :, 0].tolist()


def test_truncate_one_row_is_a_crop():
    cache = _hand_cache([[1, 2, 3, 4, 5]], [[True] * 5])
    cache.truncate([3])
    assert _keys(cache) == [[1, 2, 3]]
    assert cache.valid.tolist() == [[True] * 3]
    assert cache.cache.layers[0].values[0, 0, :, 0].tolist() == [101, 102, 103]
    assert cache.cache.get_seq_length() == 3


def test_truncate_rows_to_different_lengths_right_aligns_them():
    # row 0: left padding (slot 0) then tokens 11..14; row 1: tokens 21..25
    cache = _hand_cache([[0, 11, 12, 13, 14], [21, 22, 23, 24, 25]], [[False, True, True, True, True], [True] * 5])
    cache.truncate([1, 3])
    assert cache.lengths().tolist() == [1, 3]
    assert cache.valid.tolist() == [[False, False, True], [True, True, True]]
    keys = _keys(cache)
    assert keys[0][2] == 11 and keys[1] == [21, 22, 23]


def test_compact_removes_holes_in_the_middle():
    cache = _hand_cache([[1, 2, 3, 4], [5, 6, 7, 8]], [[True, False, True, False], [True, True, True, True]])
    cache.compact()
    assert cache.valid.tolist() == [[False, False, True, True], [True, True, True, True]]
    assert [k for k, v in zip(_keys(cache)[0], cache.valid[0]) if v] == [1, 3]
    assert _keys(cache)[1] == [5, 6, 7, 8]


def test_truncate_past_length_is_a_no_op_and_select_rows_repeats():
    cache = _hand_cache([[1, 2], [3, 4]], [[True, True], [False, True]])
    cache.truncate([5, 5])
    assert _keys(cache) == [[1, 2], [3, 4]]
    cache.select_rows([1, 1])
    assert cache.lengths().tolist() == [1, 1]
    assert _keys(cache) == [[4], [4]]
    copy = cache.clone()
    copy.truncate([0, 0])
    assert _keys(cache) == [[4], [4]] and copy.num_slots == 0


def _full_logits(model, tokens: list[int]) -> torch.Tensor:
    """Reference: uncached forward over the whole sequence, `[len, vocab]`."""
    with torch.inference_mode():
        return model(torch.tensor([tokens])).logits[0]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_left_padded_batch_matches_single_rows(arch):
    model = tiny_model(arch, seed=1)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    cache = BatchCache.empty(model, len(prompts))
    ids, mask = left_pad(prompts, pad_id=0)
    out = cached_forward(model, cache, ids, mask)
    assert torch.isfinite(out.logits).all() and out.hidden.shape[:2] == ids.shape
    for row, prompt in enumerate(prompts):
        got = out.logits[row, ids.shape[1] - len(prompt) :]
        torch.testing.assert_close(got, _full_logits(model, prompt), atol=1e-4, rtol=1e-4)
    # one more token per row, then roll rows back by different amounts and continue
    step = cached_forward(model, cache, torch.tensor([[20], [21], [22]]), last=1)
    for row, prompt in enumerate(prompts):
        torch.testing.assert_close(step.logits[row, 0], _full_logits(model, prompt + [20 + row])[-1], atol=1e-4, rtol=1e-4)
    cache.truncate([4, 2, 5])  # row 0 loses 3 tokens, row 1 one, row 2 none
    kept = [prompts[0][:4], prompts[1][:2], prompts[2] + [22]]
    new_ids, new_mask = left_pad([[30, 31], [32], [33, 34]], pad_id=0)
    after = cached_forward(model, cache, new_ids, new_mask, last=1)
    for row, extra in enumerate([[30, 31], [32], [33, 34]]):
        torch.testing.assert_close(after.logits[row, 0], _full_logits(model, kept[row] + extra)[-1], atol=1e-4, rtol=1e-4)
    cache.select_rows([2])
    final = cached_forward(model, cache, torch.tensor([[40]]), last=1)
    torch.testing.assert_close(final.logits[0, 0], _full_logits(model, kept[2] + [33, 34, 40])[-1], atol=1e-4, rtol=1e-4)


def test_hidden_is_the_lm_head_input():
    model = tiny_model("llama", seed=2)
    cache = BatchCache.empty(model, 1)
    out = cached_forward(model, cache, torch.tensor([[3, 4, 5]]), last=2)
    assert out.logits.shape[1] == 2
    torch.testing.assert_close(model.lm_head(out.hidden), out.logits)
    with torch.inference_mode():
        reference = model(torch.tensor([[3, 4, 5]]), output_hidden_states=True).hidden_states[-1][:, 1:]
    torch.testing.assert_close(out.hidden, reference)
