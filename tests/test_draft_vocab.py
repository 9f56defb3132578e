"""A reduced-vocabulary draft head (FR-Spec): the draft proposes only among kept tokens, its hidden
states are unchanged, exact mode still equals the target's greedy output, and a folder with
`draft_vocab.json` is loaded with the reduced head."""

from __future__ import annotations

import pytest
import torch

from autojudge.decode.engine import EngineCore, RequestSettings, RowKVCache, forward_rows
from autojudge.draft_vocab import ReducedHead, apply_draft_vocab, coverage, select_draft_vocab, write_draft_vocab
from tests.helpers import greedy_reference, noisy_copy, tiny_model

torch.set_num_threads(1)

PROMPTS = [[1, 5, 6, 7, 8, 9, 10, 11], [1, 12, 13], [1, 14, 15, 16, 17, 3], [1]]
EOS = 2


def kept_ids(target, count=48):
    """Half the vocabulary: what the target emits on the prompts first, then low ids, plus EOS."""
    emitted = greedy_reference(target, PROMPTS, 24)
    return select_draft_vocab([(1.0, emitted)], count, target.config.vocab_size, always=[EOS])


def test_reduced_head_argmax_is_the_argmax_over_the_kept_rows_and_hidden_states_are_unchanged():
    target = tiny_model("llama", seed=0)
    draft = noisy_copy(target, 0.3, seed=1)
    full_head = draft.get_output_embeddings().weight.detach().clone()
    ids = [3, 7, 11, 40, 41, 95]
    hidden = torch.randn(5, full_head.shape[1])
    head = ReducedHead(draft.get_output_embeddings(), ids)
    logits = head(hidden)
    assert logits.shape == (5, full_head.shape[0])
    expected = torch.tensor(ids)[(hidden @ full_head[ids].T).argmax(-1)]
    assert logits.argmax(-1).tolist() == expected.tolist()
    assert torch.allclose(logits[:, ids], hidden @ full_head[ids].T, atol=1e-5)

    prompt = PROMPTS[0]
    inputs = draft.get_input_embeddings().weight.detach().clone()
    before = forward_rows(draft, RowKVCache(draft, 1, 32), [0], [prompt])[0]
    apply_draft_vocab(draft, ids)
    after = forward_rows(draft, RowKVCache(draft, 1, 32), [0], [prompt])[0]
    assert torch.equal(before.hidden, after.hidden)  # the judge's features do not change
    assert set(after.argmax) <= set(ids)
    assert torch.equal(draft.get_input_embeddings().weight, inputs)  # input embeddings untouched
    with pytest.raises(ValueError):
        apply_draft_vocab(draft, ids)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("window", [1, 4])
def test_exact_mode_with_a_reduced_vocab_draft_equals_target_greedy(arch, window):
    target = tiny_model(arch, seed=0)
    draft = apply_draft_vocab(noisy_copy(target, 0.3, seed=1), kept_ids(target))
    reference = greedy_reference(target, PROMPTS, 24)
    engine = EngineCore(target, draft, eos_token_ids=EOS, default_window=window)
    batched = engine.generate(PROMPTS, RequestSettings(max_new_tokens=24))
    assert [r.token_ids for r in batched] == reference
    for prompt, expected in zip(PROMPTS, reference):
        assert engine.generate([prompt], RequestSettings(max_new_tokens=24))[0].token_ids == expected
    assert sum(sum(n * c for n, c in enumerate(r.metrics.accepted_lengths)) for r in batched) > 0


def test_a_draft_that_cannot_propose_the_targets_tokens_still_decodes_exactly():
    target = tiny_model("llama", seed=0)
    emitted = {token for row in greedy_reference(target, PROMPTS, 16) for token in row}
    outside = [token for token in range(target.config.vocab_size) if token not in emitted][:10]
    draft = apply_draft_vocab(noisy_copy(target, 0.3, seed=1), outside)
    results = EngineCore(target, draft, eos_token_ids=EOS, default_window=3).generate(PROMPTS, RequestSettings(max_new_tokens=16))
    assert [r.token_ids for r in results] == greedy_reference(target, PROMPTS, 16)
    assert all(r.metrics.accepted_lengths[1:] == [] or sum(r.metrics.accepted_lengths[1:]) == 0 for r in results)


def test_select_draft_vocab_ranks_by_weighted_count_and_keeps_forced_tokens():
    ids = select_draft_vocab([(10.0, [[5, 5, 6]]), (1.0, [[7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 9]])], 4, 100, always=[2])
    assert ids == [2, 5, 6, 7]  # EOS forced, then 5 (score 20), 7 (11), 6 (10); 9 (1) is cut
    assert select_draft_vocab([(1.0, [[50]])], 3, 100) == [0, 1, 50]  # filled from the lowest ids
    assert coverage([1, 2], [[1, 2, 3, 4]]) == 0.5
    with pytest.raises(ValueError):
        select_draft_vocab([], 0, 10)


def test_a_folder_with_draft_vocab_json_loads_a_reduced_draft_and_a_full_target(tmp_path):
    from autojudge.models import load_model, load_pair
    from tests.helpers import save_pair, toy_vocab_size

    target = tiny_model("llama", seed=0, vocab_size=toy_vocab_size())
    target_dir, draft_dir = save_pair(tmp_path, target, noisy_copy(target, 0.3, seed=1))
    write_draft_vocab(draft_dir, [2, 3, 4, 5], source="test")
    pair = load_pair(str(target_dir), str(draft_dir))
    assert isinstance(pair.draft.get_output_embeddings(), ReducedHead)
    assert pair.draft.get_output_embeddings().token_ids.tolist() == [2, 3, 4, 5]
    assert not isinstance(pair.target.get_output_embeddings(), ReducedHead)
    # the same folder named as a target keeps its full head
    assert not isinstance(load_model(str(draft_dir), reduced_head=False).get_output_embeddings(), ReducedHead)
    with torch.no_grad():
        logits = pair.draft(torch.tensor([[1, 5, 6]])).logits
    assert set(logits[0].argmax(-1).tolist()) <= {2, 3, 4, 5}
