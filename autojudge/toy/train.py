"""Train the built-in target/draft pair on the toy world (CPU, seeded).

Both models are `LlamaForCausalLM` sharing the toy tokenizer. The target (4 layers,
width 128) does the arithmetic reliably and is trained on style-"a" solutions; the
draft (2 layers, width 96, about 1/4 of the target's parameters) is trained on the
same problems written in style "b", which prefers other phrasings (see `world.py`).
So the pair disagrees on harmless wording at most choice points, and on numbers where
the smaller draft miscomputes. Training sequences are exactly
`apply_chat_template(question) + answer + <|eos|>`, with the loss on the answer
tokens only. Training data is the seed-0 stream of the world generator.

Reproduce the shipped weights:

    python -m autojudge.toy.train --out autojudge/toy/weights
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from autojudge.toy.tokenizer import build_tokenizer, save_tokenizer
from autojudge.toy.world import generate_problems

IGNORE_INDEX = -100  # label value that the loss skips (prompt and padding positions)


@dataclass
class ModelSpec:
    """Shape and schedule of one Llama model."""

    hidden_size: int  # width of the residual stream
    num_layers: int  # number of transformer blocks
    num_heads: int  # attention heads (also key/value heads)
    intermediate_size: int  # width of the SwiGLU MLP
    steps: int  # optimiser steps
    learning_rate: float  # peak AdamW learning rate
    style: str = "a"  # solution style of the training corpus ("a" or "b", see world.py)
    max_positions: int = 256  # longest sequence the model supports


@dataclass
class ToyTrainConfig:
    """Everything that determines the shipped target/draft pair."""

    target: ModelSpec = field(
        default_factory=lambda: ModelSpec(
            hidden_size=128, num_layers=4, num_heads=4, intermediate_size=384, steps=2000, learning_rate=3e-3
        )
    )  # the strong model
    draft: ModelSpec = field(
        default_factory=lambda: ModelSpec(
            hidden_size=96, num_layers=2, num_heads=4, intermediate_size=176, steps=900, learning_rate=3e-3,
            style="b",
        )
    )  # the small model (under 1/4 of the target's parameters), trained on the other style
    num_problems: int = 64_000  # training problems drawn from the seed-0 stream
    batch_size: int = 32  # sequences per optimiser step
    warmup_steps: int = 100  # linear warm-up before the cosine decay
    weight_decay: float = 0.01  # AdamW weight decay
    seed: int = 0  # torch seed for initialisation and batch order
    num_threads: int = 1  # torch CPU threads (1 is fastest on a shared 2-core machine)
    log_every: int = 100  # steps between progress lines
    checkpoint_every: int = 0  # save out_dir/checkpoints/<name>-<step> every this many steps (0 = never)
    tokenizer_vocab_size: int = 512  # BPE vocabulary size
    tokenizer_corpus_problems: int = 4000  # seed-0 problems the tokenizer is trained on


def encode_problems(tokenizer: PreTrainedTokenizerFast, problems: list[dict]) -> list[tuple[list[int], int]]:
    """(token ids of prompt + answer + eos, prompt length) for each problem."""
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p["question"]}], tokenize=False, add_generation_prompt=True)
        for p in problems
    ]
    answers = [p["answer"] + tokenizer.eos_token for p in problems]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
    return [(prompt + answer, len(prompt)) for prompt, answer in zip(prompt_ids, answer_ids)]


def collate(examples: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch with labels on the answer tokens only."""
    length = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), length), pad_id, dtype=torch.long)  # [batch, seq]
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)  # [batch, seq]
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)  # [batch, seq]
    for row, (ids, prompt_len) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def build_model(spec: ModelSpec, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A freshly initialised Llama with the toy tokenizer's special ids."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def learning_rate_at(step: int, spec: ModelSpec, warmup_steps: int) -> float:
    """Linear warm-up then cosine decay to 10% of the peak."""
    if step < warmup_steps:
        return spec.learning_rate * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, spec.steps - warmup_steps)
    return spec.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_model(
    model: LlamaForCausalLM,
    spec: ModelSpec,
    examples: list[tuple[list[int], int]],
    pad_id: int,
    config: ToyTrainConfig,
    name: str,
    checkpoint: Callable[[int], None] | None = None,
) -> None:
    """Seeded AdamW training over shuffled epochs of `examples`; `checkpoint(step)` is
    called every `config.checkpoint_every` steps."""
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=config.weight_decay)
    order = torch.randperm(len(examples), generator=generator).tolist()
    cursor = 0
    start = time.time()
    model.train()
    for step in range(spec.steps):
        if cursor + config.batch_size > len(order):
            order, cursor = torch.randperm(len(examples), generator=generator).tolist(), 0
        batch = collate([examples[i] for i in order[cursor : cursor + config.batch_size]], pad_id)
        cursor += config.batch_size
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, spec, config.warmup_steps)
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if (step + 1) % config.log_every == 0 or step == 0:
            print(f"[{name}] step {step + 1}/{spec.steps} loss {loss.item():.4f} {time.time() - start:.0f}s", flush=True)
        if checkpoint is not None and config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
            model.eval()
            checkpoint(step + 1)
            model.train()
    model.eval()


def save_model(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, folder: Path) -> None:
    """Standard HF folder: config, generation config, safetensors, tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=128,
    )
    model.save_pretrained(str(folder))
    save_tokenizer(tokenizer, folder)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def train_pair(out_dir: Path, config: ToyTrainConfig | None = None, which: tuple[str, ...] = ("target", "draft")) -> dict:
    """Train and save `out_dir/target` and `out_dir/draft`; returns a summary dict."""
    config = config or ToyTrainConfig()
    torch.set_num_threads(config.num_threads)
    tokenizer = build_tokenizer(config.tokenizer_vocab_size, config.tokenizer_corpus_problems)
    summary: dict = {"config": asdict(config)}
    for name in which:
        spec = getattr(config, name)
        examples = encode_problems(tokenizer, generate_problems(config.num_problems, seed=0, style=spec.style))
        torch.manual_seed(config.seed)
        model = build_model(spec, tokenizer)
        start = time.time()
        def checkpoint(step: int, model: LlamaForCausalLM = model, name: str = name) -> None:
            save_model(model, tokenizer, Path(out_dir) / "checkpoints" / f"{name}-{step}")

        train_model(model, spec, examples, tokenizer.pad_token_id, config, name, checkpoint)
        save_model(model, tokenizer, Path(out_dir) / name)
        summary[name] = {"parameters": count_parameters(model), "train_seconds": round(time.time() - start, 1)}
        print(f"[{name}] saved {summary[name]}", flush=True)
    return summary


def main() -> None:
    """CLI: `python -m autojudge.toy.train --out autojudge/toy/weights`."""
    parser = argparse.ArgumentParser(description="Train the toy target/draft pair.")
    parser.add_argument("--out", type=Path, required=True, help="folder that receives target/ and draft/")
    parser.add_argument("--only", choices=["target", "draft"], help="train just one of the two models")
    parser.add_argument("--checkpoint-every", type=int, default=0, help="also save checkpoints every N steps")
    args = parser.parse_args()
    which = (args.only,) if args.only else ("target", "draft")
    summary = train_pair(args.out, ToyTrainConfig(checkpoint_every=args.checkpoint_every), which)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))


if __name__ == "__main__":
    main()
