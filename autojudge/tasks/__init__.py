"""Tasks: problem sources and evaluators (toy world, GSM8K format, code with tests)."""

from __future__ import annotations

from typing import Any

from autojudge.tasks.base import Problem, Task, chat_prompt
from autojudge.tasks.gsm8k import GSM8KTask, ToyTask
from autojudge.tasks.jsonl import InputError, read_jsonl, write_jsonl

TASKS: dict[str, type[Task]] = {"gsm8k": GSM8KTask, "toy": ToyTask}


def get_task(name: str, **settings: Any) -> Task:
    """A task by name with its settings (unknown settings are an error)."""
    if name == "humaneval" and name not in TASKS:
        from autojudge.tasks.code import HumanEvalTask

        TASKS[name] = HumanEvalTask
    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; choose from {', '.join(sorted(TASKS) + ['humaneval'])}")
    return TASKS[name](**settings)


__all__ = ["Problem", "Task", "GSM8KTask", "ToyTask", "InputError", "get_task", "read_jsonl", "write_jsonl", "chat_prompt"]
