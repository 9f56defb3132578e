"""The task interface: where prompts come from, how they are formatted, how answers compare.

A task is the evaluator E of docs/design.md §1.1: `answer(problem, response)` gives the
reference a* of a response, and `same(problem, response, reference)` says whether
another response reaches the same outcome. `is_correct` compares with ground truth.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Hashable


@dataclass
class Problem:
    """One prompt to decode or mine."""

    id: str
    """Stable identifier (string), used as `prompt_id` in every output."""
    question: str | None = None
    """Task-formatted input (the task renders it, e.g. through the chat template)."""
    prompt: str | None = None
    """Raw prompt text, used exactly as given (no chat template)."""
    answer: str | None = None
    """Ground-truth solution (GSM8K: worked solution ending in `#### N`), when known."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Task-specific extras (e.g. unit tests of a code task)."""
    error: str | None = None
    """Set when the input record was malformed; consumers report it instead of running it."""


class Task(ABC):
    """A source of problems plus the evaluator E used by mining and evaluation."""

    name: str = "task"

    @abstractmethod
    def load(self, source: str | None = None, limit: int | None = None, strict: bool = True) -> list[Problem]:
        """Problems from `source` (a file, or a task default). With strict=False a malformed
        record becomes a Problem with `error` set instead of raising InputError."""

    @abstractmethod
    def render_prompt(self, problem: Problem, tokenizer: Any) -> str:
        """The prompt text fed to the models (raw `prompt`, or `question` formatted)."""

    def prompt_ids(self, problem: Problem, tokenizer: Any) -> list[int]:
        """The prompt as token ids: `render_prompt` tokenized with no special tokens added
        (a chat template already holds them). The one place prompts become ids."""
        return list(tokenizer(self.render_prompt(problem, tokenizer), add_special_tokens=False).input_ids)

    def shared_prefix(self, tokenizer: Any) -> str:
        """Text every prompt of this task starts with (a few-shot header), whose keys and values the
        engine and the miner compute once; "" when there is none worth sharing."""
        return ""

    def shared_prefix_ids(self, tokenizer: Any) -> list[int]:
        """`shared_prefix` as token ids ([] when none); prompts share its ids up to the tokenizer's boundary."""
        text = self.shared_prefix(tokenizer)
        return list(tokenizer(text, add_special_tokens=False).input_ids) if text else []

    @abstractmethod
    def answer(self, problem: Problem, response: str) -> Hashable:
        """The outcome of a response that `same` compares (a* = answer(problem, y))."""

    def same(self, problem: Problem, response: str, reference: Hashable) -> bool:
        """Whether `response` reaches the same outcome as the reference a*."""
        return self.answer(problem, response) == reference

    @abstractmethod
    def is_correct(self, problem: Problem, response: str) -> bool:
        """Whether `response` is right by the problem's ground truth."""


def chat_prompt(tokenizer: Any, user_message: str, system: str | None = None) -> str:
    """Format one user turn with the tokenizer's chat template (generation prompt added).

    Tokenizers without a template get a plain "Question/Answer" frame.
    """
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": user_message}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prefix = f"{system}\n\n" if system else ""
    return f"{prefix}Question: {user_message}\nAnswer:"
