"""Fit a truncated self-speculative draft to its target (minutes on a CPU).

The first N layers of SmolLM2 followed by the target's final norm and head predict
poorly: the residual stream after layer N is not in the space the head reads (about
6% agreement with the target's greedy token at N = 4..8, see docs/real-models.md).
We therefore train only the draft's *last decoder layer and final norm* (the
embeddings and the tied head stay frozen, so the draft keeps the target's tokenizer
and vocabulary) to imitate the target on the target's own greedy GSM8K responses:

    loss = soft cross-entropy( draft logits , target distribution restricted to its top-k )

over response positions only (where speculative decoding needs the draft). The
training responses come from GSM8K *train* prompts (the measurements use test prompts).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class FitConfig:
    """Settings of the draft fit."""

    num_layers: int = 8
    """Decoder layers kept from the target."""
    train_layers: int = 1
    """How many of the draft's last layers are trained (the rest stay frozen)."""
    prompts: int = 48
    """GSM8K train prompts whose target responses are the training data."""
    max_new_tokens: int = 256
    """Length cap of those responses."""
    reference_answers: int = 300
    """Extra training sequences: GSM8K train reference solutions (after the response prompts, calculator
    annotations removed) teacher-forced through the target - more data without generating it."""
    epochs: int = 3
    """Passes over the responses."""
    learning_rate: float = 1e-3
    """AdamW learning rate (cosine decay to 10%)."""
    top_k: int = 32
    """Target probabilities kept per position (soft labels)."""
    seed: int = 0
    """Seed of the shuffling."""
    threads: int = 1
    """torch threads (1 is fastest on a shared 2-core machine)."""
    name: str | None = None
    """Folder name under the cache (default `draft-L{num_layers}-fit`)."""
    data: str | None = None
    """GSM8K train JSONL (default: ../shared/data/gsm8k/train.jsonl next to the repo, or $AUTOJUDGE_DATA)."""


@torch.no_grad()
def target_soft_labels(target: Any, prompt: list[int], response: list[int], top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k token ids [R, k] and renormalised probabilities [R, k] of the target at each response position."""
    logits = target(torch.tensor([prompt + response])).logits[0, len(prompt) - 1 : len(prompt) + len(response) - 1]
    probs, ids = logits.float().softmax(-1).topk(top_k, dim=-1)  # [R, k]
    return ids, probs / probs.sum(-1, keepdim=True)


def reference_sequences(tokenizer: Any, source: str, count: int, offset: int) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, reference-solution ids + EOS) for GSM8K problems `offset..offset+count`."""
    import re

    from autojudge.real.data import gsm8k_prompt_ids
    from autojudge.tasks import get_task

    problems = get_task("gsm8k").load(source, limit=offset + count)[offset:]
    prompts = gsm8k_prompt_ids(tokenizer, source, count, offset)
    responses = []
    for problem in problems:
        text = re.sub(r"<<[^>]*>>", "", problem.answer or "")
        text = re.sub(r"\n?#### *(.+)$", r"\nThe final answer is \1.", text.strip())
        responses.append(tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id])
    return prompts, responses


def soft_label_examples(target: Any, prompts: list[list[int]], responses: list[list[int]], top_k: int,
                        progress: str | None = None) -> list[tuple[list[int], list[int], torch.Tensor, torch.Tensor]]:
    """(prompt, response, top-k ids [R, k], probabilities [R, k]) per response of more than one token
    (`target_soft_labels`); `progress` labels a bar on stderr (one target forward per sequence)."""
    from tqdm import tqdm

    pairs = [(p, r) for p, r in zip(prompts, responses) if len(r) > 1]
    return [(p, r, *target_soft_labels(target, p, r, top_k))
            for p, r in tqdm(pairs, desc=progress, unit="seq", disable=progress is None, dynamic_ncols=True)]


def train_draft(draft: Any, examples: list[Any], config: FitConfig, log: Any = print, progress: bool = True) -> dict[str, Any]:
    """Train the draft's last `config.train_layers` layers and its final norm on `examples`
    (`soft_label_examples`), the rest frozen; a bar per epoch (stderr) and a line after each.
    Returns the last epoch's figures (train_tokens, final_train_match, fit_seconds)."""
    from tqdm import tqdm

    for parameter in draft.parameters():
        parameter.requires_grad_(False)
    trained = [*draft.model.layers[-config.train_layers :], draft.model.norm]
    parameters = [p for module in trained for p in module.parameters()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.0)
    steps = config.epochs * len(examples)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=config.learning_rate / 10)
    head = draft.get_output_embeddings()
    generator = torch.Generator().manual_seed(config.seed)
    draft.train()
    fit_started = time.time()
    total_loss, total_match, total_tokens = 0.0, 0, 0
    for epoch in range(config.epochs):
        total_loss, total_match, total_tokens = 0.0, 0, 0
        order = torch.randperm(len(examples), generator=generator).tolist()
        for index in tqdm(order, desc=f"fit: epoch {epoch + 1}/{config.epochs}", unit="seq", disable=not progress,
                          dynamic_ncols=True, leave=False):
            prompt, response, label_ids, label_probs = examples[index]
            sequence = torch.tensor([prompt + response])  # [1, P + R]
            hidden = draft.model(sequence).last_hidden_state[0, len(prompt) - 1 : -1]  # [R, H], after the final norm
            log_probs = head(hidden).log_softmax(-1)  # [R, V]
            loss = -(label_probs * log_probs.gather(-1, label_ids)).sum(-1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(response)
            total_match += (log_probs.argmax(-1) == label_ids[:, 0]).sum().item()
            total_tokens += len(response)
        log(
            f"fit: epoch {epoch + 1}/{config.epochs} loss {total_loss / total_tokens:.3f} "
            f"train match {total_match / total_tokens:.3f} ({time.time() - fit_started:.0f}s)"
        )
    draft.eval()
    for parameter in draft.parameters():
        parameter.requires_grad_(False)
    return {"train_tokens": total_tokens, "final_train_match": total_match / max(total_tokens, 1),
            "fit_seconds": round(time.time() - fit_started, 1)}


def fit_draft(config: FitConfig, cache: Path | None = None, log: Any = print) -> Path:
    """Build `draft-L{N}`, fit it as above, save `draft-L{N}-fit` (with `fit.json`); returns the folder.
    Every step that takes more than a few seconds says so and shows a bar on stderr (about 10 CPU
    minutes in all for the default draft: generating the data, then three epochs)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autojudge.real.data import cached_target_responses, default_gsm8k
    from autojudge.real.smollm2 import build_draft, convert_target, model_root, save_model_folder

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    folder = model_root(cache) / (config.name or f"draft-L{config.num_layers}-fit")
    target_dir = convert_target(cache)
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    target = AutoModelForCausalLM.from_pretrained(target_dir, dtype=torch.float32).eval()
    draft = AutoModelForCausalLM.from_pretrained(build_draft(config.num_layers, cache), dtype=torch.float32)

    started = time.time()
    source = config.data or str(default_gsm8k("train"))
    responses_file = model_root(cache) / "responses" / f"gsm8k-train-{config.prompts}-{config.max_new_tokens}.json"
    log(f"fit: fitting {folder.name} to the target on GSM8K train ({config.prompts} generated responses, "
        f"{config.reference_answers} reference solutions, {config.epochs} epochs; about 10 CPU minutes)")
    prompts, responses = cached_target_responses(target, tokenizer, source, config.prompts, config.max_new_tokens, responses_file,
                                                 progress=f"fit: target responses to {config.prompts} prompts")
    if config.reference_answers:
        extra_prompts, extra_responses = reference_sequences(tokenizer, source, config.reference_answers, offset=config.prompts)
        prompts, responses = prompts + extra_prompts, responses + extra_responses
    examples = soft_label_examples(target, prompts, responses, config.top_k, progress="fit: target soft labels")
    log(f"fit: {len(examples)} target responses, {sum(len(e[1]) for e in examples)} tokens ({time.time() - started:.0f}s)")
    figures = train_draft(draft, examples, config, log)
    save_model_folder(draft, tokenizer, folder)
    (folder / "fit.json").write_text(json.dumps({**asdict(config), **figures}, indent=2))
    return folder
