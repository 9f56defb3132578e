"""The lean forward (autojudge/decode/engine/lean.py) computes what the model's own forward does."""

from __future__ import annotations

import pytest
import torch

from autojudge.decode.engine.cache import RowKVCache, forward_rows
from autojudge.decode.engine.core import EngineCore, RequestSettings
from autojudge.decode.engine.lean import compile_lean, compiled_graphs, lean_decoder, lean_unsupported_reason, set_lean
from tests.helpers import greedy_reference, noisy_copy, tiny_model

torch.set_num_threads(1)


def run_rows(model, lean: bool, pack_min_elements: int | None = None) -> list:
    """Prompts of different lengths in three rows, then a roll-back and ragged chunks."""
    set_lean(model, lean, pack_min_elements)
    cache = RowKVCache(model, num_rows=3, capacity=32)
    first = forward_rows(model, cache, [0, 1, 2], [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]], with_logits=True)
    cache.truncate(0, 3)
    second = forward_rows(model, cache, [2, 0], [[20], [21, 22, 23]], with_logits=True)
    single = forward_rows(model, cache, [1], [[24]], with_logits=True)  # one row, one token: no mask, the transposed head
    return first + second + single


def assert_same_rows(lean: list, reference: list) -> None:
    for ours, theirs in zip(lean, reference):
        assert ours.argmax == theirs.argmax
        torch.testing.assert_close(ours.hidden, theirs.hidden, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("packed", [False, True], ids=["F.linear", "prepacked"])
def test_lean_forward_matches_the_models_own_forward_through_the_cache(arch, packed):
    """Also with every weight (the head too) through oneDNN's prepacked kernel, which the default
    threshold keeps for SmolLM2-sized weights."""
    model = tiny_model(arch, seed=3, hidden_size=64, layers=3)
    reference = run_rows(model, lean=False)
    lean = run_rows(model, lean=True, pack_min_elements=0 if packed else None)
    decoder = lean_decoder(model)
    assert decoder is not None
    if packed and torch.backends.mkldnn.is_available():
        assert decoder.packed and decoder.head_linear is not None
    if not packed:
        assert not decoder.packed  # the default threshold leaves toy-sized weights on F.linear
    assert_same_rows(lean, reference)


def test_padding_runs_through_attention_only(monkeypatch):
    """Rows of ragged chunks: every projection sees the real tokens only (9 of the 3 x 4 grid), and the
    outputs are still the model's own (`test_lean_forward_matches_the_models_own_forward_through_the_cache`)."""
    from autojudge.decode.engine import lean as lean_module

    model = tiny_model("llama", seed=3, hidden_size=64, layers=2)
    set_lean(model, True)
    cache = RowKVCache(model, num_rows=3, capacity=32)
    forward_rows(model, cache, [0, 1, 2], [[5, 6, 7, 8], [11, 12], [13, 14, 15]])
    seen: list[int] = []
    original = lean_module.LeanLinear.__call__
    monkeypatch.setattr(lean_module.LeanLinear, "__call__", lambda self, x: seen.append(x.reshape(-1, x.shape[-1]).shape[0]) or original(self, x))
    out = forward_rows(model, cache, [0, 1, 2], [[20, 21, 22, 23], [24], [25, 26, 27, 28]], last=[1, 1, 1])
    assert seen and set(seen) == {9}
    seen.clear()
    forward_rows(model, cache, [0, 1], [[30, 31], [32, 33]])  # no padding: the grid as it is
    assert set(seen) == {4}
    assert [len(o.argmax) for o in out] == [1, 1, 1]


def test_prepacked_weights_follow_in_place_changes():
    """A weight changed in place (an optimizer step) re-makes its packed copy before the next forward."""
    model = tiny_model("llama", seed=8, hidden_size=64, layers=2)
    run_rows(model, lean=True, pack_min_elements=0)
    with torch.no_grad():
        model.base_model.layers[1].mlp.down_proj.weight.mul_(1.5)
        model.base_model.layers[0].self_attn.k_proj.weight.add_(0.01)  # a view into the stacked q/k/v
        model.get_output_embeddings().weight.mul_(0.5)
    decoder = lean_decoder(model)
    assert decoder is not None
    reference = run_rows(model, lean=False)
    model.__dict__["_autojudge_lean"] = decoder  # the same decoder, its packed copies now stale
    model.__dict__["_autojudge_lean_off"] = False
    cache = RowKVCache(model, num_rows=3, capacity=32)
    first = forward_rows(model, cache, [0, 1, 2], [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]], with_logits=True)
    assert_same_rows(first, reference[:3])


def test_exact_decoding_with_prepacked_weights_equals_generate():
    target = tiny_model("llama", seed=9, hidden_size=64, layers=2)
    draft = noisy_copy(target, 0.1, seed=10)
    set_lean(target, True, pack_min_elements=0)
    set_lean(draft, True, pack_min_elements=0)
    prompts = [[1, 5, 9, 13], [1, 7, 8, 9, 10, 11, 12], [1, 3]]
    engine = EngineCore(target, draft, eos_token_ids=[2], default_window=3, max_batch=2)
    results = engine.generate(prompts, RequestSettings(max_new_tokens=24))
    assert [result.token_ids for result in results] == greedy_reference(target, prompts, 24)


def test_lean_weights_are_views_of_the_models_parameters():
    model = tiny_model("llama", seed=4)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    lean = lean_decoder(model)
    assert lean is not None
    attn = model.base_model.layers[0].self_attn
    stacked = lean.layers[0].qkv.weight
    assert attn.q_proj.weight.data_ptr() == stacked.data_ptr()  # no second copy of the weights
    assert attn.k_proj.weight.untyped_storage().data_ptr() == stacked.untyped_storage().data_ptr()
    for name, p in model.named_parameters():  # values unchanged
        assert torch.equal(p, before[name]), name


def test_unsupported_models_run_their_own_forward():
    model = tiny_model("gpt2", seed=1)
    assert "gpt2" in (lean_unsupported_reason(model) or "")
    assert lean_decoder(model) is None
    cache = RowKVCache(model, num_rows=1, capacity=8)
    out = forward_rows(model, cache, [0], [[5, 6, 7]])[0]
    with torch.inference_mode():
        assert out.argmax == model(torch.tensor([[5, 6, 7]])).logits[0].argmax(-1).tolist()


def test_a_model_saved_after_the_lean_forward_reloads_with_the_same_weights(tmp_path):
    import transformers

    model = tiny_model("llama", seed=5)
    lean_decoder(model)
    model.save_pretrained(tmp_path)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    for (name, p), (_, q) in zip(model.named_parameters(), again.named_parameters()):
        assert torch.equal(p, q), name


@pytest.mark.slow
def test_compiled_lean_forward_keeps_exact_decoding_equal_to_generate():
    """`torch.compile` of the lean forward (dynamic shapes): exact mode still equals greedy `generate`."""
    target = tiny_model("llama", seed=6, hidden_size=64, layers=2)
    draft = noisy_copy(target, 0.1, seed=7)
    assert compile_lean(target) and compile_lean(draft)
    prompts = [[1, 5, 9, 13], [1, 7, 8, 9, 10, 11, 12], [1, 3]]
    engine = EngineCore(target, draft, eos_token_ids=[2], default_window=3, max_batch=2)
    results = engine.generate(prompts, RequestSettings(max_new_tokens=24))
    assert [result.token_ids for result in results] == greedy_reference(target, prompts, 24)
    assert 0 < compiled_graphs() < 20  # dynamic shapes: a handful of graphs, not one per length


def test_a_model_with_prepacked_weights_can_be_copied_and_pickled():
    """oneDNN's packed tensors cannot be copied: the copy (and an unpickled model) builds its own lean forward."""
    import copy
    import pickle

    model = tiny_model("llama", seed=11, hidden_size=64, layers=2)
    set_lean(model, True, pack_min_elements=0)
    reference = run_rows(model, lean=True, pack_min_elements=0)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone.__dict__.get("_autojudge_lean") is None
        assert_same_rows(run_rows(clone, lean=True), reference)
        assert lean_decoder(clone) is not None


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_prefix_attention_equals_attention_over_each_rows_cache(dtype, tolerance):
    """Reading a shared prefix once for every row gives each row's own attention over its whole cache."""
    from autojudge.decode.engine.lean import prefix_attention

    g = torch.Generator().manual_seed(0)
    b, heads, kv_heads, c, d, prefix, rest = 3, 6, 2, 4, 8, 11, 7
    prefix_k, prefix_v = (torch.randn(kv_heads, prefix, d, generator=g).to(dtype) for _ in range(2))
    own_k, own_v = (torch.randn(b, kv_heads, rest, d, generator=g).to(dtype) for _ in range(2))
    keys = torch.cat([prefix_k.expand(b, -1, -1, -1), own_k], dim=2)
    values = torch.cat([prefix_v.expand(b, -1, -1, -1), own_v], dim=2)
    q = torch.randn(b, heads, c, d, generator=g).to(dtype)
    lengths = [2, 5, 7]  # row r's chunk sits at slots prefix + lengths[r] - c + j; later slots are masked
    allowed = torch.zeros(b, 1, c, prefix + rest, dtype=torch.bool)
    for row, length in enumerate(lengths):
        for j in range(c):
            allowed[row, 0, j, : prefix + max(length - c + j + 1, 1)] = True
    mask = torch.where(allowed, 0.0, torch.finfo(dtype).min).to(dtype)
    expected = torch.nn.functional.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=d**-0.5, enable_gqa=True)
    got = prefix_attention(q, prefix_k, prefix_v, own_k, own_v, mask, d**-0.5)  # each row's slots after the prefix
    assert got.dtype == dtype and got.shape == expected.shape
    torch.testing.assert_close(got.float(), expected.float(), atol=tolerance, rtol=tolerance)


def test_engine_with_a_shared_prefix_equals_greedy_generate(monkeypatch):
    """Prompts behind one header: rows copy the header's keys/values and attention reads them once; exact
    decoding still equals the target's greedy `generate`, and the rows fed only what follows the header."""
    torch.set_num_threads(1)
    target = tiny_model("llama", seed=0, layers=2)
    draft = noisy_copy(target, scale=0.3, seed=1)
    header = [1, 9, 8, 7, 6, 5, 4, 3, 12, 13, 14, 15]
    prompts = [header + tail for tail in ([20, 21], [22], [23, 24, 25], [26, 27])] + [header[:4] + [30]]
    reference = greedy_reference(target, prompts, 16)
    import autojudge.decode.engine.lean as lean

    calls = []
    original = lean.prefix_attention
    monkeypatch.setattr(lean, "prefix_attention", lambda *args: calls.append(1) or original(*args))
    engine = EngineCore(target, draft, eos_token_ids=2, default_window=3, max_batch=4, shared_prefix=header)
    assert [r.token_ids for r in engine.generate(prompts, RequestSettings(max_new_tokens=16))] == reference
    assert calls, "batched forwards over rows behind the header read it once"
    assert engine.shared_prefix is not None and engine.shared_prefix.loaded_tokens == 2 * (4 * 12 + 4)


def test_attention_with_lse_matches_attention_and_logsumexp():
    """The unfused fallback (devices without the CPU kernel that returns the log-sum-exp)."""
    from autojudge.decode.engine.lean import _attention_with_lse

    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(2, 6, 3, 8, generator=g), torch.randn(2, 2, 5, 8, generator=g), torch.randn(2, 2, 5, 8, generator=g)
    mask = torch.zeros(2, 1, 3, 5)
    mask[0, 0, :, 4] = torch.finfo(torch.float32).min
    out, lse = _attention_with_lse(q, k, v, mask, 0.35)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.35, enable_gqa=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    scores = q @ k.repeat_interleave(3, dim=1).transpose(-1, -2) * 0.35 + mask
    torch.testing.assert_close(lse, torch.logsumexp(scores, -1), atol=1e-5, rtol=1e-5)
