"""Tasks: problem sources and evaluators (toy world, GSM8K format, code with tests)."""

from __future__ import annotations

from typing import Any

from autojudge.tasks.base import Problem, Task, chat_prompt
from autojudge.tasks.gsm8k import GSM8KTask, ToyTask
from autojudge.errors import InputError
from autojudge.tasks.jsonl import read_jsonl, write_jsonl

TASKS: dict[str, type[Task]] = {"gsm8k": GSM8KTask, "toy": ToyTask}


def get_task(name: str, **settings: Any) -> Task:
    """A task by name with its settings (unknown settings are an error)."""
    if name == "humaneval" and name not in TASKS:
        from autojudge.tasks.code import HumanEvalTask

        TASKS[name] = HumanEvalTask
    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; choose from {', '.join(sorted(TASKS) + ['humaneval'])}")
    return TASKS[name](**settings)


def build_task(name: str, seed: int | None = None, instruction: str | None = None, shots: int = 0,
               shots_file: str | None = None) -> Task:
    """A task from command-line settings: `seed` applies to the toy world, `instruction`
    (text added to every question, e.g. "End with 'The final answer is N'.") to any task,
    `shots` / `shots_file` (few-shot examples as earlier chat turns) to gsm8k."""
    settings: dict[str, Any] = {}
    if name == "toy" and seed is not None:
        settings["seed"] = seed
    if instruction is not None:
        settings["instruction"] = instruction
    if shots or shots_file:
        if name != "gsm8k":
            raise InputError(f"--shots/--shots-file apply to task gsm8k, not {name!r}")
        settings.update(shots=shots, shots_file=shots_file)
    return get_task(name, **settings)


def add_task_arguments(parser: Any, default: str = "toy", seed: int | None = 1, shots: bool = True) -> None:
    """`--task`, `--instruction`, with `shots` `--shots` and `--shots-file`, and, unless `seed` is None,
    `--seed` (with that default)."""
    parser.add_argument("--task", default=default, choices=["toy", "gsm8k", "humaneval"],
                        help="task that formats questions and judges answers")
    parser.add_argument("--instruction", default=None,
                        help="text appended to every question in the user turn (default: none for toy/gsm8k, the task's own for humaneval)")
    if shots:
        parser.add_argument("--shots", type=int, default=0,
                            help="task gsm8k: solved examples shown first as earlier chat turns (few-shot; default 0)")
        parser.add_argument("--shots-file", default=None, metavar="FILE",
                            help="task gsm8k: JSONL whose first --shots problems are the examples (default: the shared GSM8K train file)")
    if seed is not None:
        parser.add_argument("--seed", type=int, default=seed,
                            help="seed of generated toy problems (1 = mining, 2 = held-out evaluation)")


__all__ = ["build_task", "add_task_arguments", "Problem", "Task", "GSM8KTask", "ToyTask", "get_task", "read_jsonl", "write_jsonl", "chat_prompt"]
