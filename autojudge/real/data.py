"""GSM8K prompts for the real pair and the target's greedy responses to them (cached on disk).

Used by draft fitting (`fit.py`) and by the acceptance measurement (`measure.py`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def default_gsm8k(split: str) -> Path:
    import os

    if os.environ.get("AUTOJUDGE_DATA"):
        return Path(os.environ["AUTOJUDGE_DATA"]) / "gsm8k" / f"{split}.jsonl"
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gsm8k" / f"{split}.jsonl"


@torch.no_grad()
def target_responses(
    model: Any, tokenizer: Any, prompt_ids: list[list[int]], max_new_tokens: int, batch_size: int = 8,
    progress: str | None = None,
) -> list[list[int]]:
    """Greedy responses of `model` (stopping at EOS, which is kept), batched with left padding.
    `progress`: a label; a bar of generation steps on stderr while it runs (SmolLM2's 48 fitting
    prompts take minutes on a CPU)."""
    from tqdm import tqdm
    from transformers import StoppingCriteria, StoppingCriteriaList

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_id = tokenizer.eos_token_id
    starts = range(0, len(prompt_ids), batch_size)
    bar = tqdm(total=len(starts) * max_new_tokens, desc=progress, unit="step", disable=progress is None, dynamic_ncols=True)

    class CountSteps(StoppingCriteria):
        """Called once per generated position of the batch: moves the bar, never stops anything."""

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            bar.update(1)
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    responses: list[list[int]] = []
    with bar:
        for number, start in enumerate(starts, start=1):
            chunk = prompt_ids[start : start + batch_size]
            width = max(len(ids) for ids in chunk)
            input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in chunk])  # [b, width]
            attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in chunk])
            output = model.generate(
                input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                do_sample=False, eos_token_id=eos_id, pad_token_id=pad_id,
                stopping_criteria=StoppingCriteriaList([CountSteps()]) if progress is not None else None,
            )
            bar.update(number * max_new_tokens - bar.n)  # a batch whose rows all ended early
            for row in output[:, width:].tolist():
                response = []
                for token in row:
                    response.append(token)
                    if token == eos_id:
                        break
                responses.append(response)
    return responses



def gsm8k_prompt_ids(tokenizer: Any, source: str, limit: int, offset: int = 0) -> list[list[int]]:
    """Token ids of GSM8K problems `offset..offset+limit` rendered through the chat template."""
    from autojudge.tasks import get_task
    from autojudge.tasks.gsm8k import GSM8K_INSTRUCTION

    task = get_task("gsm8k", instruction=GSM8K_INSTRUCTION)
    problems = task.load(source, limit=offset + limit)[offset:]
    return [task.prompt_ids(p, tokenizer) for p in problems]


def cached_target_responses(
    model: Any, tokenizer: Any, source: str, limit: int, max_new_tokens: int, cache_file: Any, offset: int = 0,
    progress: str | None = None,
) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, target greedy responses) for GSM8K problems, stored in `cache_file` (JSON);
    `progress` labels a bar while they are generated (`target_responses`)."""
    from pathlib import Path

    cache_file = Path(cache_file)
    prompts = gsm8k_prompt_ids(tokenizer, source, limit, offset)
    if cache_file.exists():
        stored = json.loads(cache_file.read_text())
        if stored["prompts"] == prompts and stored["max_new_tokens"] == max_new_tokens:
            return prompts, stored["responses"]
    responses = target_responses(model, tokenizer, prompts, max_new_tokens, progress=progress)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps({"prompts": prompts, "responses": responses, "max_new_tokens": max_new_tokens}))
    return prompts, responses
