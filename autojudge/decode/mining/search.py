"""Semi-greedy label search (docs/design.md §1.1): shared types and the plain reference algorithm.

`plain_search` is the oracle: it follows §1.1 literally, one prompt at a time, with a
fresh `target.generate(do_sample=False)` per mismatch and no cache reuse. It is slow
on purpose and is what the tests and `bench/mine.py` compare the fast miner
(`lookahead.py`) against. Both return a `SearchResult` with one `Label` per
mismatch visited, each with its features (§1.2): the last hidden states of target and
draft at the position holding the draft token in `x + y_<m + [d_m]`.

Conventions: a response is a list of generated token ids (an EOS, when generated, is
its last element); `budget` is the most tokens a response may have; position m = 0 is
the first generated token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Protocol

import torch

from autojudge.models import eos_token_ids  # noqa: F401 - re-exported for the miner


class Evaluator(Protocol):
    """E of §1.1 over token ids: the outcome of a response, and outcome equality."""

    def answer(self, response_ids: list[int]) -> Hashable: ...

    def same(self, response_ids: list[int], reference: Hashable) -> bool: ...


@dataclass
class TaskEvaluator:
    """E from a task and one problem: responses are decoded without special tokens."""

    task: Any
    """An `autojudge.tasks.Task`."""
    problem: Any
    """The `Problem` being mined."""
    tokenizer: Any
    """The shared tokenizer of the pair."""

    def text(self, response_ids: list[int]) -> str:
        return self.tokenizer.decode(response_ids, skip_special_tokens=True)

    def answer(self, response_ids: list[int]) -> Hashable:
        return self.task.answer(self.problem, self.text(response_ids))

    def same(self, response_ids: list[int], reference: Hashable) -> bool:
        return self.task.same(self.problem, self.text(response_ids), reference)


@dataclass
class Label:
    """One visited mismatch."""

    position: int
    """m: index in the response (0 = first generated token)."""
    target_token: int
    """y_m, the target's token in the current response."""
    draft_token: int
    """d_m, the draft's greedy token at m."""
    important: bool
    """True iff swapping in d_m (then continuing greedily with T) changes the answer."""
    h_target: torch.Tensor | None = None
    """Target last hidden state at the position holding d_m, [target_hidden]."""
    h_draft: torch.Tensor | None = None
    """Draft last hidden state at the position holding d_m, [draft_hidden]."""


@dataclass
class SearchResult:
    """Everything the search found for one prompt."""

    initial_response: list[int]
    """y = T.greedy(x)."""
    final_response: list[int]
    """y after all accepted (unimportant) swaps."""
    target_answer: Hashable
    """a* = E.answer(initial_response)."""
    labels: list[Label] = field(default_factory=list)
    """One per visited mismatch, in order of position."""
    unfinished: bool = False
    """The search stopped after the first response: it did not end (EOS) within the budget and
    the search was asked to mine only answers that finish (`finished_only`); no labels."""


def unfinished(response: list[int], eos_ids: list[int], finished_only: bool) -> bool:
    """Whether a search with `finished_only` skips a prompt whose greedy response is `response`: a
    response that hit the budget before EOS has no final answer to keep (a cut or looping text)."""
    return finished_only and not (response and response[-1] in eos_ids)


# ---------------------------------------------------------------------------------------
# The plain algorithm (oracle)
# ---------------------------------------------------------------------------------------


@torch.inference_mode()
def greedy_generate(model: Any, context: list[int], max_new_tokens: int, eos_ids: list[int], pad_token_id: int) -> list[int]:
    """T.greedy: a fresh `generate(do_sample=False)` call, batch size 1, returns new tokens only."""
    from transformers import GenerationConfig

    if max_new_tokens <= 0:
        return []
    device = next(model.parameters()).device
    input_ids = torch.tensor([context], dtype=torch.long, device=device)  # [1, len]
    config = GenerationConfig(
        do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos_ids, pad_token_id=pad_token_id
    )
    output = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config)
    return output[0, len(context) :].tolist()


@torch.inference_mode()
def draft_predictions(draft: Any, prompt: list[int], response: list[int]) -> list[int]:
    """Teacher-forced draft argmax d_i = argmax D(. | x, y_<i) for every response position i."""
    device = next(draft.parameters()).device
    ids = torch.tensor([prompt + response[:-1]], dtype=torch.long, device=device)  # [1, P + n - 1]
    logits = draft(input_ids=ids).logits[0, len(prompt) - 1 :]  # [n, V]
    return logits.argmax(-1).tolist()


@torch.inference_mode()
def last_hidden(model: Any, sequence: list[int]) -> torch.Tensor:
    """Last-layer hidden state (after the final norm) at the last position, [hidden]."""
    device = next(model.parameters()).device
    ids = torch.tensor([sequence], dtype=torch.long, device=device)
    return model.base_model(input_ids=ids).last_hidden_state[0, -1].float().cpu()


def plain_search(
    target: Any,
    draft: Any,
    prompt: list[int],
    evaluator: Evaluator,
    budget: int,
    eos_ids: list[int],
    pad_token_id: int,
    with_features: bool = True,
    finished_only: bool = False,
) -> SearchResult:
    """docs/design.md §1.1 step by step: fresh greedy regeneration per mismatch, batch size 1.
    `finished_only`: a prompt whose first response does not end within the budget gets no labels."""
    response = greedy_generate(target, prompt, budget, eos_ids, pad_token_id)
    result = SearchResult(initial_response=list(response), final_response=response, target_answer=None)
    reference = evaluator.answer(response)
    result.target_answer = reference
    if unfinished(response, eos_ids, finished_only):
        result.unfinished = True
        return result
    left = 0
    while left < len(response):
        drafts = draft_predictions(draft, prompt, response)
        mismatches = [i for i in range(left, len(response)) if drafts[i] != response[i]]
        if not mismatches:
            break
        m = mismatches[0]
        head = response[:m] + [drafts[m]]
        if drafts[m] in eos_ids:
            alternative = head  # the alternative ends with the swapped EOS
        else:
            alternative = head + greedy_generate(target, prompt + head, budget - len(head), eos_ids, pad_token_id)
        label = Label(m, response[m], drafts[m], important=not evaluator.same(alternative, reference))
        if with_features:
            label.h_target = last_hidden(target, prompt + head)
            label.h_draft = last_hidden(draft, prompt + head)
        result.labels.append(label)
        if not label.important:
            response = alternative
        left = m + 1
        if drafts[m] in eos_ids:
            break
    result.final_response = response
    return result
