"""GSM8K-format tasks: JSONL records with `question` and `answer` ending in `#### N`.

`ToyTask` is the same format with the built-in toy world as its default source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autojudge.tasks.answers import extract_answer
from autojudge.tasks.base import Problem, Task, chat_prompt
from autojudge.errors import InputError
from autojudge.tasks.jsonl import scan_jsonl


def record_to_problem(record: dict[str, Any], where: str, default_id: str) -> Problem:
    """Validate one input record; raise InputError naming `where` (file:line) on a bad one.

    Records without an `id` get `default_id` (file stem and line index).
    """
    has_question = isinstance(record.get("question"), str)
    has_prompt = isinstance(record.get("prompt"), str)
    if not (has_question or has_prompt):
        raise InputError(f"{where}: missing field 'question' (or 'prompt') with a string value")
    text = record["question"] if has_question else record["prompt"]
    if not text.strip():
        raise InputError(f"{where}: empty {'question' if has_question else 'prompt'}")
    answer = record.get("answer")
    if answer is not None and not isinstance(answer, str):
        answer = str(answer)
    return Problem(
        id=str(record.get("id", default_id)),
        question=record["question"] if has_question else None,
        prompt=record["prompt"] if has_prompt and not has_question else None,
        answer=answer,
    )


def load_problems(path: str | Path, limit: int | None = None, strict: bool = True) -> list[Problem]:
    """Problems from a JSONL file; bad records raise (strict) or become error Problems."""
    problems: list[Problem] = []
    for index, (line_number, record, error) in enumerate(scan_jsonl(path)):
        if limit is not None and len(problems) >= limit:
            break
        where = f"{path}:{line_number}"
        try:
            if error is not None:
                raise InputError(error)
            assert record is not None
            problems.append(record_to_problem(record, where, f"{Path(path).stem}-{index}"))
        except InputError as err:
            if strict:
                raise
            record_id = record.get("id", f"line-{line_number}") if record else f"line-{line_number}"
            problems.append(Problem(id=str(record_id), error=str(err)))
    return problems


def shared_gsm8k_file(split: str) -> str:
    """$AUTOJUDGE_DATA/gsm8k/<split>.jsonl, else ../shared/data/gsm8k/<split>.jsonl next to the repository."""
    import os

    if os.environ.get("AUTOJUDGE_DATA"):
        return str(Path(os.environ["AUTOJUDGE_DATA"]) / "gsm8k" / f"{split}.jsonl")
    return str(Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gsm8k" / f"{split}.jsonl")


def clean_solution(answer: str) -> str:
    """A GSM8K reference solution without its calculator annotations (`<<48/2=24>>`), ending in `#### N`."""
    import re

    return re.sub(r"<<[^>]*>>", "", answer).strip()


GSM8K_INSTRUCTION = 'Solve the problem step by step, then end with "The final answer is N".'
"""The chat instruction of the zero-shot GSM8K set-up (the draft's fitting data; `bench/prompt_formats.py`)."""

MAX_SHOTS = 32
"""Most solved examples a few-shot prompt may hold."""


@dataclass
class GSM8KTask(Task):
    """Math word problems; the outcome of a response is its final number.

    With `shots` > 0 the prompt is few-shot in the chat template: the first `shots` problems of
    `shots_file` as earlier user/assistant turns (question; reference solution without calculator
    annotations, ending `#### N`), then the question. An instruct model then ends its answer with
    `#### N` and its end-of-turn token (EOS), so answers stop without stop strings."""

    instruction: str = ""
    """Text appended to the question in the user message (e.g. "End with 'The final answer is N'.")."""
    system: str | None = None
    """Optional system message for the chat template."""
    shots: int = 0
    """Solved train problems shown first as earlier chat turns (few-shot); 0: the question alone."""
    shots_file: str | None = None
    """GSM8K-format JSONL whose first `shots` problems are the examples (default: the shared GSM8K train file)."""
    name: str = "gsm8k"

    def __post_init__(self) -> None:
        if not 0 <= self.shots <= MAX_SHOTS:
            raise InputError(f"--shots must be in 0..{MAX_SHOTS}, got {self.shots}")
        self._examples: list[Problem] | None = None

    def examples(self) -> list[Problem]:
        """The few-shot examples (loaded once; each must have a question and an answer)."""
        if self._examples is None:
            source = self.shots_file or shared_gsm8k_file("train")
            if not self.shots:
                self._examples = []
            elif not Path(source).exists():
                raise InputError(f"--shots-file {source}: not found (the few-shot examples come from it)")
            else:
                examples = load_problems(source, limit=self.shots)
                if len(examples) < self.shots or any(not (p.question and p.answer) for p in examples):
                    raise InputError(f"--shots-file {source}: needs {self.shots} problems with 'question' and 'answer'")
                self._examples = examples
        return self._examples

    def shared_prefix(self, tokenizer: Any) -> str:
        """The text every rendered question prompt starts with (system turn, few-shot examples): the
        common prefix of two prompts that differ only in the question."""
        first = self.render_prompt(Problem(id="a", question="A"), tokenizer)
        second = self.render_prompt(Problem(id="b", question="B"), tokenizer)
        n = 0
        while n < min(len(first), len(second)) and first[n] == second[n]:
            n += 1
        return first[:n]

    def load(self, source: str | None = None, limit: int | None = None, strict: bool = True) -> list[Problem]:
        if source is None:
            raise InputError("task gsm8k needs an input file (--input FILE.jsonl)")
        if Path(source).exists() or source.endswith((".jsonl", ".json", ".gz")):
            return load_problems(source, limit, strict)
        return self._load_hub(source, limit)

    def _load_hub(self, name: str, limit: int | None) -> list[Problem]:
        """A Hugging Face dataset name such as `openai/gsm8k` (needs network)."""
        try:
            import datasets

            split = datasets.load_dataset(name, "main", split="test")
        except Exception as err:  # no network, unknown name
            raise InputError(f"{name}: not a local file, and loading it as a Hugging Face dataset failed: {err}") from None
        rows = split.select(range(min(limit or len(split), len(split))))
        return [Problem(id=f"{name}-{i}", question=row["question"], answer=row["answer"]) for i, row in enumerate(rows)]

    def render_prompt(self, problem: Problem, tokenizer: Any) -> str:
        if problem.prompt is not None:
            return problem.prompt
        if problem.question is None:
            raise InputError(f"problem {problem.id}: has neither 'question' nor 'prompt'")
        message = problem.question if not self.instruction else f"{problem.question}\n{self.instruction}"
        if not self.shots:
            return chat_prompt(tokenizer, message, self.system)
        turns = [(example.question, clean_solution(example.answer or "")) for example in self.examples()]
        if not getattr(tokenizer, "chat_template", None):  # a plain Question/Answer frame
            shown = "".join(f"Question: {question}\nAnswer: {answer}\n\n" for question, answer in turns)
            return f"{self.system}\n\n" * bool(self.system) + shown + f"Question: {message}\nAnswer:"
        messages = [{"role": "system", "content": self.system}] if self.system else []
        for question, answer in turns:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": message})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def answer(self, problem: Problem, response: str) -> str | None:
        return extract_answer(response)

    def is_correct(self, problem: Problem, response: str) -> bool:
        if problem.answer is None:
            return False
        truth = extract_answer(problem.answer)
        return truth is not None and extract_answer(response) == truth


@dataclass
class ToyTask(GSM8KTask):
    """The built-in toy world: GSM8K format, generated from a seed unless a file is given."""

    seed: int = 1
    """Seed of the generated problems (models were trained on seed 0; eval uses 2)."""
    num: int = 200
    """How many problems to generate when no file and no limit is given."""
    name: str = "toy"

    def load(self, source: str | None = None, limit: int | None = None, strict: bool = True) -> list[Problem]:
        if source is not None:
            return load_problems(source, limit, strict)
        from autojudge.toy.world import generate_problems

        records = generate_problems(limit if limit is not None else self.num, self.seed)
        return [Problem(id=r["id"], question=r["question"], answer=r["answer"]) for r in records]
