"""Hogwild! generation (arXiv 2504.06261): N workers of one model over one shared KV cache.

The workers share one `blocks.SharedCache`: the prompt, then one block per worker (its header,
e.g. "\\n\\n**Alice:** ", then its own text). Each step every active worker feeds its last
token (and any injected check prompt) in one batched `blocks.forward_feeds`, over its own view:
the prompt, the other workers' blocks, its own block last. The workers are told in the system
prompt that they collaborate and see each other's progress (`collaboration_system_prompt`); an
answer hook reads a final answer from any worker's text and can stop them all.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from autojudge.decode.hogwild.blocks import Feed, SharedCache, forward_feeds, hogwild_decoder
from autojudge.errors import InputError

WORKER_NAMES = ("Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi")


@dataclass
class HogwildConfig:
    """Settings of one Hogwild! generation."""

    workers: int = 2
    """Number of workers (instances of the model) generating in parallel, >= 1."""
    max_new_tokens: int = 256
    """Budget of generated tokens per worker (injected prompts do not count)."""
    collaborate: bool = True
    """Use the collaboration system prompt and name each worker's block ("**Alice:** ").
    Off: the prompt is used as given and worker blocks start empty (one worker = plain greedy)."""
    separator: str = "\n\n"
    """Text at the start of every worker block, before its header (collaborate mode)."""
    header: str = "**{name}:** "
    """The header that introduces a worker's block; `{name}` is the worker's name (the paper: "**Alice [1]:** ")."""
    check_every: int | None = None
    """Every this many generated tokens (at the next line break), insert `check_prompt` into the worker's text."""
    check_prompt: str = "Quick check: is another worker already doing this? (yes/no): "
    """The periodic question a worker answers about redundant work (the paper's s1 prompt)."""
    stop_on_answer: bool = False
    """Stop all workers as soon as one has written a final answer."""

    def validate(self) -> None:
        if not isinstance(self.workers, int) or self.workers < 1:
            raise InputError(f"hogwild needs at least 1 worker, got {self.workers}")
        if self.workers > len(WORKER_NAMES):
            raise InputError(f"hogwild supports at most {len(WORKER_NAMES)} workers, got {self.workers}")
        if self.max_new_tokens < 1:
            raise InputError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if "{name}" not in self.header:
            raise InputError(f"the worker header must contain {{name}}, got {self.header!r}")
        if self.check_every is not None and self.check_every < 1:
            raise InputError(f"check_every must be >= 1 when given, got {self.check_every}")


def collaboration_system_prompt(names: Sequence[str]) -> str:
    """The system prompt that tells the workers they share their work (after the paper's rules, shortened)."""
    if len(names) == 1:
        return (
            f"You are {names[0]}, an assistant. Your text appears after your name; continue it. "
            'When the problem is solved, write "The final answer is N".'
        )
    others = ", ".join(names[:-1]) + f" and {names[-1]}"
    return (
        f"You are one of {len(names)} assistants ({others}) solving the same problem together, at the same time. "
        "You all write in parallel and see each other's work as it is written: the other assistants' text "
        "comes first, each under its writer's name, then your own text, which you continue. "
        "Split the work: take different parts of the problem or check another assistant's result, "
        "and do not repeat what someone else is already doing. If you notice that you are doing the "
        "same as another assistant, stop and do something else. "
        'When the problem is solved, one of you writes "The final answer is N".'
    )


def render_prompt(tokenizer: Any, user_message: str, config: HogwildConfig) -> str:
    """The prompt text for a question (no model needed): the collaboration system prompt of
    `config.workers` workers and the question in the chat template."""
    from autojudge.tasks.base import chat_prompt

    names = list(WORKER_NAMES[: config.workers])
    return chat_prompt(tokenizer, user_message, collaboration_system_prompt(names) if config.collaborate else None)


def worker_header(name: str, separator: str, header: str = "**{name}:** ") -> str:
    """The text that opens a worker's block: the separator, then the header with the worker's name."""
    return separator + header.replace("{name}", name)


_MARKER = re.compile(r"(?:final answer is|####)\s*:?\s*(?:\*\*)?\s*(-?\$?\s?[\d,]*\.?\d+)", re.IGNORECASE)


def marked_final_answer(text: str, finished: bool = False) -> str | None:
    """The GSM8K answer hook: the number after the first "The final answer is" / "####" of `text`,
    once it is complete (followed by a non-number character, or the worker has finished)."""
    from autojudge.tasks.answers import normalize_number

    for match in _MARKER.finditer(text):
        rest = text[match.end() :]
        if not finished and (not rest or (rest[0] in ".," and len(rest) < 2)):
            continue  # the number may still grow
        if rest and rest[0] in ".," and rest[1:2].isdigit():
            continue  # regex stopped inside a number
        answer = normalize_number(match.group(1))
        if answer is not None:
            return answer
    return None


@dataclass
class WorkerResult:
    """What one worker produced."""

    name: str
    """The worker's name ("Alice", ...)."""
    token_ids: list[int]
    """Generated tokens (EOS excluded; injected check prompts excluded)."""
    text: str
    """The worker's text: its generated tokens and any injected check prompts, in order."""
    new_tokens: int
    """Number of generated tokens."""
    stop_reason: str
    """"eos", "length" or "answer" (stopped because a final answer was written)."""


@dataclass
class HogwildResult:
    """One prompt's Hogwild! generation."""

    workers: list[WorkerResult]
    """Per worker, in index order."""
    transcript: str
    """The shared cache as a reader sees it: every worker block in order, headers included."""
    steps: int
    """Batched forwards after the prompt (each gives at most one token per active worker)."""
    forwards: int
    """All model forwards: prompt prefill + worker headers + steps."""
    new_tokens: int
    """Tokens generated by all workers together."""
    wall_s: float
    """Wall time of the whole generation, prefill included."""
    answer: str | None = None
    """The final answer read by the answer hook (first worker to write one), or None."""
    answer_worker: str | None = None
    """Name of the worker whose answer was taken."""
    answer_step: int | None = None
    """Step at which that answer was complete."""
    answer_wall_s: float | None = None
    """Seconds from the start until that answer was complete."""

    @property
    def tokens_per_forward(self) -> float:
        return self.new_tokens / max(self.steps, 1)


@dataclass
class _Worker:
    """Loop state of one worker."""

    name: str
    block: int
    view: list[int]
    token_ids: list[int] = field(default_factory=list)
    text_ids: list[int] = field(default_factory=list)
    since_check: int = 0
    stop_reason: str | None = None


class HogwildGenerator:
    """Greedy Hogwild! generation with one model: `generate(prompt_ids) -> HogwildResult`."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        config: HogwildConfig,
        eos_token_ids: Sequence[int] = (),
        answer_hook: Callable[[str, bool], str | None] | None = marked_final_answer,
    ):
        config.validate()
        self.decoder = hogwild_decoder(model)
        """The model's lean forward (`decode.engine.lean`), which the shared cache runs its steps with."""
        self.tokenizer = tokenizer
        self.config = config
        self.eos = set(int(token) for token in eos_token_ids)
        self.answer_hook = answer_hook
        self.names = list(WORKER_NAMES[: config.workers])

    def render_prompt(self, user_message: str) -> str:
        """The prompt text for a question: the collaboration system prompt and the question in the chat template."""
        return render_prompt(self.tokenizer, user_message, self.config)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def generate(self, prompt_ids: Sequence[int]) -> HogwildResult:
        """Run all workers on one prompt until each stops (EOS, budget, or an answer with stop_on_answer)."""
        if len(prompt_ids) == 0:
            raise InputError("hogwild: empty prompt (no tokens)")
        config, started = self.config, time.perf_counter()
        cache = SharedCache(self.decoder)
        prompt_block = cache.add_block("prompt")
        blocks = [cache.add_block(name) for name in self.names]
        workers = [
            _Worker(name=name, block=block, view=[prompt_block] + [b for b in blocks if b != block] + [block])
            for name, block in zip(self.names, blocks)
        ]
        logits = forward_feeds(cache, [Feed(prompt_block, list(prompt_ids), [prompt_block])])  # [1, vocab]
        forwards = 1
        if config.collaborate:
            headers = [self._encode(worker_header(w.name, config.separator, config.header)) for w in workers]
            logits = forward_feeds(cache, [Feed(w.block, h, w.view) for w, h in zip(workers, headers)])
            forwards += 1
        else:
            logits = logits.expand(len(workers), -1)
        result = HogwildResult(workers=[], transcript="", steps=0, forwards=0, new_tokens=0, wall_s=0.0)
        active = list(range(len(workers)))
        while True:
            next_tokens = logits.argmax(-1).tolist()  # one per active worker
            feeds, still_active = [], []
            for worker_index, token in zip(active, next_tokens):
                worker = workers[worker_index]
                feed = self._accept_token(worker, int(token))
                if feed is not None:
                    feeds.append(feed)
                    still_active.append(worker_index)
            self._read_answer(result, workers, started)
            if result.answer is not None and config.stop_on_answer:
                for worker_index in still_active:
                    workers[worker_index].stop_reason = "answer"
                still_active, feeds = [], []
            if not feeds:
                break
            logits = forward_feeds(cache, feeds)
            active = still_active
            result.steps += 1
            forwards += 1
        result.forwards = forwards
        result.wall_s = time.perf_counter() - started
        result.workers = [
            WorkerResult(w.name, w.token_ids, self._decode(w.text_ids), len(w.token_ids), w.stop_reason or "length")
            for w in workers
        ]
        result.new_tokens = sum(len(w.token_ids) for w in workers)
        result.transcript = "".join(self._header_text(w.name) + r.text for w, r in zip(workers, result.workers))
        return result

    def _header_text(self, name: str) -> str:
        """A worker's block header as shown in the transcript (a plain label without the collaboration prompt)."""
        if self.config.collaborate:
            return worker_header(name, self.config.separator, self.config.header)
        return f"\n\n[{name}]\n"

    def _accept_token(self, worker: _Worker, token: int) -> Feed | None:
        """Record a worker's new token; return what it feeds next step, or None when it stops."""
        config = self.config
        if token in self.eos:
            worker.stop_reason = "eos"
            return None
        worker.token_ids.append(token)
        worker.text_ids.append(token)
        worker.since_check += 1
        if len(worker.token_ids) >= config.max_new_tokens:
            worker.stop_reason = "length"
            return None
        feed = [token]
        if config.check_every is not None and worker.since_check >= config.check_every and "\n" in self._decode([token]):
            check = self._encode(config.check_prompt)
            feed += check
            worker.text_ids.extend(check)
            worker.since_check = 0
        return Feed(worker.block, feed, worker.view)

    def _read_answer(self, result: HogwildResult, workers: list[_Worker], started: float) -> None:
        """Apply the answer hook to each worker's text; keep the first answer found."""
        if self.answer_hook is None or result.answer is not None:
            return
        for worker in workers:
            answer = self.answer_hook(self._decode(worker.text_ids), worker.stop_reason is not None)
            if answer is not None:
                result.answer, result.answer_worker = answer, worker.name
                result.answer_step, result.answer_wall_s = result.steps, time.perf_counter() - started
                return

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


__all__ = [
    "WORKER_NAMES",
    "HogwildConfig",
    "HogwildGenerator",
    "HogwildResult",
    "WorkerResult",
    "collaboration_system_prompt",
    "marked_final_answer",
    "render_prompt",
    "worker_header",
]
