"""How good is a draft for a target: tokens per target call of exact speculative decoding.

In exact mode a cycle at response position p accepts the longest run of draft
proposals that equal the target's greedy tokens. The draft's i-th proposal in the
cycle is conditioned on the (so far accepted, hence correct) prefix, so it equals
the draft's *teacher-forced* argmax over the target's greedy response. One
teacher-forced draft pass over y = T.greedy(x) therefore gives the exact cycle
count of a window-k speculative decode (up to float ties) without running it:

    d_i = argmax D(. | x, y_<i)
    cycle at p: n = greedy_prefix(d_p..d_{p+k-1}, y_p..y_{p+k-1}); emit n + 1 tokens; p += n + 1

tokens per target call = len(y) / cycles. `target_responses` produces y in batches
(left padded), which is much faster on CPU than one prompt at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch

from autojudge.decode.engine.acceptance import greedy_prefix


@dataclass
class AcceptanceStats:
    """Simulated exact speculative decoding of one or more responses."""

    new_tokens: int
    """Tokens emitted (length of the target's responses)."""
    target_calls: int
    """Verification passes (cycles) a window-k decode would need."""
    match_rate: float
    """Fraction of response positions where the draft's teacher-forced argmax equals the target's token."""

    @property
    def tokens_per_target_call(self) -> float:
        return self.new_tokens / max(self.target_calls, 1)


@torch.no_grad()
def draft_predictions(draft: Any, prompt: list[int], response: list[int]) -> list[int]:
    """The draft's teacher-forced argmax at every response position i: argmax D(. | x, y_<i)."""
    sequence = torch.tensor([prompt + response])  # [1, P + R]
    logits = draft(sequence).logits[0, len(prompt) - 1 : len(prompt) + len(response) - 1]  # [R, V]
    return logits.argmax(-1).tolist()


def count_cycles(predictions: list[int], response: list[int], window: int) -> int:
    """Verification passes a window-`window` exact decode of `response` needs, given the draft's
    teacher-forced `predictions` (each cycle accepts their greedy prefix, then the target's token)."""
    position, cycles = 0, 0
    while position < len(response):
        end = min(position + window, len(response))
        accepted = greedy_prefix(predictions[position:end], response[position:end])
        cycles += 1
        position += accepted + 1  # accepted proposals plus the target's own token
    return cycles


def measure_draft(
    draft: Any, prompts: list[list[int]], responses: list[list[int]], windows: tuple[int, ...] = (8,)
) -> dict[int, AcceptanceStats]:
    """Simulated exact speculative decoding stats per window over (prompt, response) pairs."""
    pairs = [(draft_predictions(draft, p, r), r) for p, r in zip(prompts, responses) if r]
    total = sum(len(r) for _, r in pairs)
    matched = sum(sum(d == t for d, t in zip(predicted, r)) for predicted, r in pairs)
    return {
        window: AcceptanceStats(total, sum(count_cycles(predicted, r, window) for predicted, r in pairs), matched / max(total, 1))
        for window in windows
    }


def measure_drafts(
    draft_specs: list[str], prompts: int = 16, max_new_tokens: int = 256, windows: tuple[int, ...] = (4, 8),
    data: str | None = None, log: Any = print,
) -> list[dict[str, Any]]:
    """Simulated exact speculative decoding of SmolLM2 with each draft on GSM8K test prompts.

    The target's responses are generated once and cached; one row (dict) per draft."""
    import time
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autojudge.real.data import cached_target_responses, default_gsm8k
    from autojudge.real.smollm2 import model_root
    from autojudge.real.specs import resolve_real_spec

    target_dir = resolve_real_spec("smollm2:target")
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    target = AutoModelForCausalLM.from_pretrained(target_dir, dtype=torch.float32).eval()
    started = time.time()
    cache_file = model_root() / "responses" / f"gsm8k-test-{prompts}-{max_new_tokens}.json"
    source = data or str(default_gsm8k("test"))
    prompt_ids, responses = cached_target_responses(target, tokenizer, source, prompts, max_new_tokens, cache_file,
                                                    progress=f"target responses to {prompts} test prompts")
    log(f"target responses: {len(responses)} prompts, {sum(map(len, responses))} tokens ({time.time() - started:.0f}s)")
    rows = []
    for spec in draft_specs:
        location = spec if Path(spec).is_dir() else resolve_real_spec(spec)
        draft = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32).eval()
        started = time.time()
        stats = measure_draft(draft, prompt_ids, responses, windows)
        row: dict[str, Any] = {
            "draft": spec,
            "layers": draft.config.num_hidden_layers,
            "match_rate": round(stats[windows[0]].match_rate, 3),
        }
        row.update({f"tokens_per_target_call_k{k}": round(s.tokens_per_target_call, 2) for k, s in stats.items()})
        row["measure_s"] = round(time.time() - started, 1)
        log(json.dumps(row))
        rows.append(row)
    return rows
