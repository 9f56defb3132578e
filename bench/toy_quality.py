"""Quality bar of the built-in toy pair on held-out problems (seed 3).

Measures, with greedy decoding:
- final-answer accuracy of the target and of the draft (batched `generate`, left padding);
- parameter counts and the draft/target ratio;
- exact speculative decoding at window k (draft proposes k greedily, the target
  verifies in one forward, the longest matching prefix + 1 target token is kept):
  tokens per target call, and whether the first mismatch of each cycle is on a
  number or on wording. Plain loop, batch size 1, no KV cache, on a subset.

    python bench/toy_quality.py --num 500 --spec-num 100
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from autojudge.setup import DEFAULT_WINDOW
from autojudge.tasks.answers import extract_answer
from autojudge.toy import model_path
from autojudge.toy.world import generate_problems


@dataclass
class BenchConfig:
    """What the bench measures and on which problems."""

    target: Path  # target model folder
    draft: Path  # draft model folder
    num: int = 500  # held-out problems for the accuracy figures
    seed: int = 3  # world seed of the held-out problems
    spec_num: int = 100  # problems (a prefix of the same set) for the speculative metric
    window: int = DEFAULT_WINDOW  # draft tokens proposed per target call
    batch_size: int = 64  # prompts per batched generate call
    max_new_tokens: int = 128  # generation budget per problem
    threads: int = 1  # torch CPU threads (1 is fastest on a shared machine)


@dataclass
class SpecStats:
    """Counters of exact speculative decoding over a set of prompts."""

    new_tokens: int = 0  # tokens emitted (accepted draft tokens + one target token per call)
    target_calls: int = 0  # target forward passes (one per cycle)
    number_mismatches: int = 0  # cycles whose first rejected token involves a digit
    wording_mismatches: int = 0  # cycles whose first rejected token is wording only
    matches_greedy: int = 0  # prompts whose speculative output equals the batched greedy output


def prompt_texts(tokenizer: PreTrainedTokenizerBase, problems: list[dict]) -> list[str]:
    """Chat-formatted prompts, as the models were trained on."""
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": p["question"]}], tokenize=False, add_generation_prompt=True)
        for p in problems
    ]


@torch.no_grad()
def greedy_generate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], batch_size: int, max_new_tokens: int
) -> list[str]:
    """Batched greedy completions (left padding), decoded without special tokens."""
    tokenizer.padding_side = "left"
    outputs: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start : start + batch_size], add_special_tokens=False, return_tensors="pt", padding=True)
        generated = model.generate(
            **batch, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id
        )  # [batch, prompt + new]
        new_tokens = generated[:, batch["input_ids"].shape[1] :]
        outputs.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return outputs


def accuracy(responses: list[str], problems: list[dict]) -> float:
    """Fraction of responses whose final answer equals the reference's."""
    correct = sum(extract_answer(r) == extract_answer(p["answer"]) for r, p in zip(responses, problems))
    return correct / len(problems)


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings once)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def propose(draft: PreTrainedModel, context: torch.Tensor, window: int, eos_id: int) -> list[int]:
    """Draft's greedy continuation of `context` (1-D ids), up to `window` tokens or EOS."""
    proposal: list[int] = []
    ids = context
    for _ in range(window):
        token = int(draft(ids[None]).logits[0, -1].argmax())
        proposal.append(token)
        if token == eos_id:
            break
        ids = torch.cat([ids, torch.tensor([token])])
    return proposal


@torch.no_grad()
def speculative_greedy(
    target: PreTrainedModel,
    draft: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    config: BenchConfig,
    stats: SpecStats,
) -> list[int]:
    """Exact speculative decoding of one prompt; returns the new token ids."""
    eos_id = tokenizer.eos_token_id
    ids = torch.tensor(tokenizer(prompt, add_special_tokens=False)["input_ids"])  # [seq]
    prompt_len = len(ids)
    while len(ids) - prompt_len < config.max_new_tokens:
        proposal = propose(draft, ids, config.window, eos_id)
        verify = torch.cat([ids, torch.tensor(proposal)])
        target_argmax = target(verify[None]).logits[0, len(ids) - 1 :].argmax(-1).tolist()  # [len(proposal) + 1]
        stats.target_calls += 1
        accepted_len = 0
        while accepted_len < len(proposal) and proposal[accepted_len] == target_argmax[accepted_len]:
            accepted_len += 1
        if accepted_len < len(proposal):
            pair = tokenizer.decode([proposal[accepted_len]]) + tokenizer.decode([target_argmax[accepted_len]])
            if any(ch.isdigit() for ch in pair):
                stats.number_mismatches += 1
            else:
                stats.wording_mismatches += 1
        emitted = proposal[:accepted_len] + [target_argmax[accepted_len]]
        if eos_id in emitted:
            emitted = emitted[: emitted.index(eos_id) + 1]
        emitted = emitted[: config.max_new_tokens - (len(ids) - prompt_len)]
        ids = torch.cat([ids, torch.tensor(emitted)])
        stats.new_tokens += len(emitted)
        if eos_id in emitted:
            break
    return ids[prompt_len:].tolist()


def run_bench(config: BenchConfig) -> dict:
    """All figures of the quality bar as a dict."""
    torch.set_num_threads(config.threads)
    tokenizer = AutoTokenizer.from_pretrained(str(config.target))
    target = AutoModelForCausalLM.from_pretrained(str(config.target)).eval()
    draft = AutoModelForCausalLM.from_pretrained(str(config.draft)).eval()
    problems = generate_problems(config.num, config.seed)
    prompts = prompt_texts(tokenizer, problems)

    start = time.time()
    target_out = greedy_generate(target, tokenizer, prompts, config.batch_size, config.max_new_tokens)
    draft_out = greedy_generate(draft, tokenizer, prompts, config.batch_size, config.max_new_tokens)
    generate_seconds = time.time() - start

    stats = SpecStats()
    start = time.time()
    for prompt, greedy_text in zip(prompts[: config.spec_num], target_out):
        new_ids = speculative_greedy(target, draft, tokenizer, prompt, config, stats)
        stats.matches_greedy += tokenizer.decode(new_ids, skip_special_tokens=True) == greedy_text
    spec_seconds = time.time() - start

    target_params, draft_params = count_parameters(target), count_parameters(draft)
    return {
        "problems": config.num,
        "seed": config.seed,
        "target_accuracy": accuracy(target_out, problems),
        "draft_accuracy": accuracy(draft_out, problems),
        "target_params": target_params,
        "draft_params": draft_params,
        "draft_to_target_params": draft_params / target_params,
        "spec_problems": min(config.spec_num, config.num),
        "spec_window": config.window,
        "spec_tokens_per_target_call": stats.new_tokens / max(1, stats.target_calls),
        "spec_stats": asdict(stats),
        "generate_seconds": round(generate_seconds, 1),
        "spec_seconds": round(spec_seconds, 1),
    }


def check_bar(result: dict) -> dict[str, bool]:
    """The project's quality bar for the toy pair."""
    return {
        "target_accuracy>=0.90": result["target_accuracy"] >= 0.90,
        "draft_accuracy<=target-0.20": result["draft_accuracy"] <= result["target_accuracy"] - 0.20,
        "draft_params<=target/4": result["draft_to_target_params"] <= 0.25,
        "spec_tokens_per_call>=3": result["spec_tokens_per_target_call"] >= 3.0,
    }


def main() -> None:
    """CLI entry point; prints the figures as JSON."""
    parser = argparse.ArgumentParser(description="Quality bar of the toy target/draft pair.")
    parser.add_argument("--target", type=Path, default=model_path("target"), help="target model folder")
    parser.add_argument("--draft", type=Path, default=model_path("draft"), help="draft model folder")
    parser.add_argument("--num", type=int, default=500, help="held-out problems for accuracy")
    parser.add_argument("--seed", type=int, default=3, help="world seed of the held-out problems")
    parser.add_argument("--spec-num", type=int, default=100, help="problems for the speculative metric")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="draft tokens per target call")
    parser.add_argument("--batch-size", type=int, default=64, help="prompts per generate call")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    config = BenchConfig(
        target=args.target, draft=args.draft, num=args.num, seed=args.seed, spec_num=args.spec_num,
        window=args.window, batch_size=args.batch_size, threads=args.threads,
    )
    result = run_bench(config)
    result["bar"] = check_bar(result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
