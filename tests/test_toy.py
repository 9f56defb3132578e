"""Tests of the toy world, its tokenizer, the shipped model pair and the training script."""

from __future__ import annotations

import re

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from autojudge.toy import MODEL_DIR, model_path
from autojudge.toy.train import ModelSpec, ToyTrainConfig, train_pair
from autojudge.toy.world import generate_problems

LINE = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)")


def test_generator_is_seeded_and_deterministic() -> None:
    assert generate_problems(20, 1) == generate_problems(20, 1)
    assert generate_problems(5, 1) == generate_problems(20, 1)[:5]


def test_different_seeds_differ() -> None:
    questions = {seed: [p["question"] for p in generate_problems(20, seed)] for seed in range(4)}
    for a in range(4):
        for b in range(a + 1, 4):
            assert questions[a] != questions[b]


def test_records_are_well_formed_and_arithmetic_is_consistent() -> None:
    for index, record in enumerate(generate_problems(300, 2)):
        assert set(record) == {"id", "question", "answer"}
        assert record["id"] == f"toy-2-{index}"
        lines = record["answer"].split("\n")
        final = re.fullmatch(r"#### (\d+)", lines[-1])
        assert final is not None
        steps = [LINE.search(line) for line in lines[1:-1]]
        assert 2 <= len(steps) <= 4 and all(steps)
        previous = None
        for match in steps:
            left, op, right, result = int(match[1]), match[2], int(match[3]), int(match[4])
            assert result == {"+": left + right, "-": left - right, "*": left * right}[op]
            assert previous is None or left == previous
            assert 0 <= result <= 99
            previous = result
        assert int(final[1]) == previous


def test_solutions_use_several_phrasings() -> None:
    openings = {line.split(" ")[0] for p in generate_problems(200, 0) for line in p["answer"].split("\n")[1:-1]}
    assert {"So", "Now", "That", "After"} <= openings
    endings = {line.rsplit(" ", 1)[-1] for p in generate_problems(200, 0) for line in p["answer"].split("\n")[1:-1]}
    assert {"total.", "left.", "now.", "all."} <= endings


def test_styles_share_problems_and_differ_in_favourite_wording() -> None:
    a, b = generate_problems(400, 0, style="a"), generate_problems(400, 0, style="b")
    assert [p["question"] for p in a] == [p["question"] for p in b]
    assert [p["answer"].split("\n")[-1] for p in a] == [p["answer"].split("\n")[-1] for p in b]
    assert [LINE.findall(p["answer"]) for p in a] == [LINE.findall(p["answer"]) for p in b]

    def favourite_opening(problems: list[dict], kind: str) -> str:
        lines = [line for p in problems for line in p["answer"].split("\n")[1:-1] if f" {kind} " in line]
        openings = [" ".join(line.split(" ")[:2]) for line in lines]
        return max(set(openings), key=openings.count)

    for kind in "+-*":
        assert favourite_opening(a, kind) != favourite_opening(b, kind)
    with pytest.raises(ValueError, match="unknown toy style"):
        generate_problems(1, 0, style="c")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(model_path("target")))


def test_digits_are_single_tokens_and_text_round_trips(tokenizer) -> None:
    for record in generate_problems(20, 3):
        for text in (record["question"], record["answer"]):
            ids = tokenizer.encode(text, add_special_tokens=False)
            assert tokenizer.decode(ids) == text
            pieces = [tokenizer.decode([i]) for i in ids]
            assert all(len(piece) == 1 for piece in pieces if any(ch.isdigit() for ch in piece))
    assert len(tokenizer.encode("1234567890", add_special_tokens=False)) == 10


def test_chat_template_gives_the_training_prompt(tokenizer) -> None:
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tom has 3 apples."}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|bos|><|user|>\nTom has 3 apples.\n<|assistant|>\n"
    assert tokenizer.eos_token == "<|eos|>" and tokenizer.pad_token == "<|pad|>" and tokenizer.bos_token == "<|bos|>"


def test_shipped_models_load_and_share_the_tokenizer() -> None:
    assert model_path("target").parent == MODEL_DIR
    target_tok = AutoTokenizer.from_pretrained(str(model_path("target")))
    draft_tok = AutoTokenizer.from_pretrained(str(model_path("draft")))
    assert target_tok.get_vocab() == draft_tok.get_vocab()
    target = AutoModelForCausalLM.from_pretrained(str(model_path("target")))
    draft = AutoModelForCausalLM.from_pretrained(str(model_path("draft")))
    assert target.config.vocab_size == draft.config.vocab_size == len(target_tok)
    assert target.generation_config.eos_token_id == target_tok.eos_token_id
    assert 4 * draft.num_parameters() <= target.num_parameters()
    with pytest.raises(ValueError):
        model_path("judge")


def test_micro_training_run_produces_a_loadable_folder(tmp_path) -> None:
    tiny = ModelSpec(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, steps=2, learning_rate=1e-3)
    config = ToyTrainConfig(
        target=tiny, draft=tiny, num_problems=16, batch_size=4, warmup_steps=1, tokenizer_corpus_problems=50
    )
    summary = train_pair(tmp_path, config)
    for name in ("target", "draft"):
        assert summary[name]["parameters"] > 0
        model = AutoModelForCausalLM.from_pretrained(str(tmp_path / name))
        tok = AutoTokenizer.from_pretrained(str(tmp_path / name))
        ids = tok(tok.apply_chat_template([{"role": "user", "content": "Tom has 3 apples."}], tokenize=False,
                                          add_generation_prompt=True), add_special_tokens=False, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
        assert out.shape[1] <= ids["input_ids"].shape[1] + 3
