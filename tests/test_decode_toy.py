"""Exact mode on the shipped toy pair equals the target's greedy `generate` (the weights ship in the
package: a missing one is a broken package, and this test fails on it)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)


def test_exact_equals_greedy_on_the_toy_pair():
    from autojudge.decode.engine import EngineCore, RequestSettings
    from autojudge.models import load_pair
    from autojudge.tasks import get_task
    from autojudge.tasks.base import Problem
    from autojudge.toy.world import generate_problems

    pair = load_pair("toy:target", "toy:draft")
    task, tokenizer = get_task("toy"), pair.tokenizer
    problems = [Problem(id=r["id"], question=r["question"]) for r in generate_problems(4, seed=2)]
    prompts = [task.prompt_ids(p, tokenizer) for p in problems]
    eos, budget = tokenizer.eos_token_id, 96
    reference = []
    for prompt in prompts:
        with torch.no_grad():
            out = pair.target.generate(
                torch.tensor([prompt]), do_sample=False, max_new_tokens=budget, eos_token_id=eos, pad_token_id=0
            )[0, len(prompt):].tolist()
        reference.append(out[: out.index(eos) + 1] if eos in out else out)
    engine = EngineCore.for_pair(pair, default_window=4)
    settings = RequestSettings(max_new_tokens=budget)
    batched = engine.generate(prompts, settings)
    assert [r.token_ids for r in batched] == reference
    assert [engine.generate([p], settings)[0].token_ids for p in prompts] == reference
    assert sum(r.metrics.new_tokens for r in batched) > sum(r.metrics.target_calls for r in batched)
