"""Code tasks in HumanEval format, judged by running the task's tests in a sandbox.

A record: `task_id`, `prompt` (signature + docstring), `entry_point`,
`canonical_solution` (the body), `test` (defines `check(candidate)`). The outcome
of a response is "pass" or "fail": the program extracted from the response, plus
the tests and `check(entry_point)`, run in `autojudge.tasks.sandbox`. `same()`
therefore says whether two responses have the same pass/fail outcome (docs/design.md §1.1).

Program extraction: the first fenced code block that defines the entry point (else
the first fenced block, else the whole response). A block that defines
`entry_point` is appended after the task prompt (so the prompt's imports and helper
functions are there; the new definition replaces the stub); otherwise the text is
taken as the function body and appended to the prompt (completion style).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autojudge.tasks.base import Problem, Task, chat_prompt
from autojudge.errors import InputError
from autojudge.tasks.jsonl import scan_jsonl
from autojudge.tasks.sandbox import SandboxLimits, SandboxResult, run_python

HUMANEVAL_FILE = Path("humaneval") / "HumanEval.jsonl.gz"
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_REQUIRED = ("task_id", "prompt", "entry_point", "test")

DEFAULT_INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function, "
    "including the signature, in one ```python code block.\n\n```python\n{prompt}```"
)


def default_humaneval_path() -> Path:
    """`$AUTOJUDGE_DATA/humaneval/HumanEval.jsonl.gz`, else `../shared/data/...` next to the repo."""
    if os.environ.get("AUTOJUDGE_DATA"):
        return Path(os.environ["AUTOJUDGE_DATA"]) / HUMANEVAL_FILE
    repo = Path(__file__).resolve().parents[2]
    return repo.parent / "shared" / "data" / HUMANEVAL_FILE


def extract_code(response: str, entry_point: str | None = None) -> str:
    """The code in a response: a fenced block (preferring one that defines `entry_point`), else all of it."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(response)]
    blocks = [(lang, body) for lang, body in blocks if lang in ("", "python", "py", "python3")] or blocks
    if not blocks:
        return response
    if entry_point:
        for _, body in blocks:
            if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", body, re.MULTILINE):
                return body
    return blocks[0][1]


def build_program(problem: Problem, response: str) -> str:
    """The full program for a response: task prompt + extracted code (see module docstring)."""
    stub = problem.meta.get("prompt", problem.question or "")
    entry_point = problem.meta.get("entry_point")
    code = extract_code(response, entry_point)
    if entry_point and re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE):
        return f"{stub}\n    pass\n\n{code}" if stub.strip() else code
    return stub + code


def build_test_program(problem: Problem, response: str, sentinel: str | None = None) -> str:
    """The program plus the task's tests and the call `check(entry_point)`; with a sentinel,
    a last line prints it, so a program that exits early with status 0 is not a pass."""
    program = f"{build_program(problem, response)}\n\n{problem.meta['test']}\n\ncheck({problem.meta['entry_point']})\n"
    return program + (f"print({sentinel!r}, flush=True)\n" if sentinel else "")


@dataclass
class HumanEvalTask(Task):
    """HumanEval-format code generation; the outcome of a response is "pass" or "fail"."""

    instruction: str = DEFAULT_INSTRUCTION
    """User message template; `{prompt}` is replaced by the task's function stub."""
    system: str | None = None
    """Optional system message for the chat template."""
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    """Sandbox limits for each test run."""
    cache_size: int = 4096
    """Outcomes kept per program text (mining asks about the same programs repeatedly)."""
    name: str = "humaneval"

    def __post_init__(self) -> None:
        if isinstance(self.limits, dict):
            self.limits = SandboxLimits(**self.limits)
        self._outcomes: dict[str, str] = {}

    def load(self, source: str | None = None, limit: int | None = None, strict: bool = True) -> list[Problem]:
        path = Path(source) if source else default_humaneval_path()
        if not path.exists():
            raise InputError(f"{path}: HumanEval file not found (give --input, or set AUTOJUDGE_DATA)")
        problems: list[Problem] = []
        for line_number, record, error in scan_jsonl(path):
            if limit is not None and len(problems) >= limit:
                break
            if error is None:
                assert record is not None
                missing = [key for key in _REQUIRED if not isinstance(record.get(key), str)]
                if missing:
                    error = f"{path}:{line_number}: missing string field(s) {', '.join(map(repr, missing))}"
            if error is not None:
                if strict:
                    raise InputError(error)
                record_id = (record or {}).get("task_id", f"line-{line_number}")
                problems.append(Problem(id=str(record_id), error=error))
                continue
            assert record is not None
            meta = {key: record[key] for key in ("prompt", "entry_point", "test")}
            problems.append(
                Problem(id=record["task_id"], question=record["prompt"], answer=record.get("canonical_solution"), meta=meta)
            )
        return problems

    def render_prompt(self, problem: Problem, tokenizer: Any) -> str:
        if problem.prompt is not None:
            return problem.prompt
        if problem.question is None:
            raise InputError(f"problem {problem.id}: has neither 'question' nor 'prompt'")
        return chat_prompt(tokenizer, self.instruction.replace("{prompt}", problem.question), self.system)

    def run_tests(self, problem: Problem, response: str) -> SandboxResult:
        """Run the task's tests on the program in `response` (uncached, full result). A run
        passes only if it exits 0 *and* prints a per-run random sentinel after `check(...)`
        (so `sys.exit(0)` inside the solution is a failure)."""
        if "test" not in problem.meta or "entry_point" not in problem.meta:
            raise InputError(f"problem {problem.id}: no tests (HumanEval records need 'test' and 'entry_point')")
        sentinel = f"autojudge-tests-done-{secrets.token_hex(8)}"
        result = run_python(build_test_program(problem, response, sentinel), self.limits)
        if result.status == "ok" and sentinel not in result.stdout:
            result.status = "failed"
            result.notes.append("exited with status 0 before the tests finished")
        return result

    def answer(self, problem: Problem, response: str) -> str:
        key = hashlib.sha256(build_test_program(problem, response).encode()).hexdigest()
        if key not in self._outcomes:
            if len(self._outcomes) >= self.cache_size:
                self._outcomes.pop(next(iter(self._outcomes)))
            self._outcomes[key] = "pass" if self.run_tests(problem, response).passed else "fail"
        return self._outcomes[key]

    def is_correct(self, problem: Problem, response: str) -> bool:
        return self.answer(problem, response) == "pass"
