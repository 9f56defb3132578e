"""HumanEval-format code task: loading, program extraction, pass/fail outcomes through the sandbox."""

from __future__ import annotations

import gzip
import json

import pytest

from autojudge.errors import InputError
from autojudge.tasks import get_task
from autojudge.tasks.code import HumanEvalTask, build_program, default_humaneval_path, extract_code
from autojudge.tasks.sandbox import SandboxLimits

needs_data = pytest.mark.skipif(not default_humaneval_path().exists(), reason="HumanEval.jsonl.gz not found [required in CI]")

STUB = 'def add(a: int, b: int) -> int:\n    """Sum of a and b."""\n'
RECORD = {
    "task_id": "Mini/0",
    "prompt": STUB,
    "entry_point": "add",
    "canonical_solution": "    return a + b\n",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
}


@pytest.fixture
def mini(tmp_path):
    path = tmp_path / "mini.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(json.dumps(RECORD) + "\n")
    task = HumanEvalTask(limits=SandboxLimits(timeout_s=3.0, cpu_s=3))
    return task, task.load(str(path))[0]


def test_extract_code_prefers_a_block_defining_the_entry_point():
    response = "First:\n```python\nimport math\n```\nThen:\n```python\ndef add(a, b):\n    return a + b\n```\nbye"
    assert extract_code(response, "add") == "def add(a, b):\n    return a + b\n"
    assert extract_code("```\nx = 1\n```", "add") == "x = 1\n"
    assert extract_code("    return a + b\n", "add") == "    return a + b\n"  # no fence: the whole text
    assert extract_code("```python\ndef add(a, b):\n    return a + b\n", "add").startswith("def add")  # unclosed


def test_build_program_body_or_full_function(mini):
    _, problem = mini
    assert build_program(problem, "    return a + b\n") == STUB + "    return a + b\n"
    program = build_program(problem, "```python\ndef add(a, b):\n    return b + a\n```")
    assert program.startswith(STUB) and program.rstrip().endswith("return b + a")


def test_outcomes_and_same(mini):
    task, problem = mini
    right = "```python\ndef add(a, b):\n    return a + b\n```"
    wrong = "```python\ndef add(a, b):\n    return a - b\n```"
    also_wrong = "```python\ndef add(a, b):\n    return 0\n```"
    assert task.answer(problem, problem.answer) == "pass" and task.is_correct(problem, problem.answer)
    assert task.answer(problem, right) == "pass"
    assert task.answer(problem, wrong) == "fail" and not task.is_correct(problem, wrong)
    assert task.same(problem, also_wrong, task.answer(problem, wrong))  # both fail: same outcome
    assert not task.same(problem, right, task.answer(problem, wrong))
    assert task.answer(problem, "I don't know.") == "fail"


def test_hostile_solutions_fail_and_are_contained(mini):
    task, problem = mini
    for body in (
        "    while True:\n        pass\n",
        "    import os\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n",
        "    while True:\n        print('spam' * 1000)\n",
        "    import sys\n    sys.exit(0)\n",  # status 0 before the tests finish
        "    import os\n    os._exit(0)\n",
    ):
        outcome = task.run_tests(problem, body)
        assert not outcome.passed, (body, outcome.status)
        assert task.answer(problem, body) == "fail"


def test_render_prompt_uses_the_chat_template(mini):
    from autojudge.models import load_tokenizer

    task, problem = mini
    tokenizer = load_tokenizer("toy:target")
    text = task.render_prompt(problem, tokenizer)
    assert STUB in text and "```python" in text
    assert text == tokenizer.apply_chat_template(
        [{"role": "user", "content": task.instruction.replace("{prompt}", STUB)}], tokenize=False, add_generation_prompt=True
    )


def test_bad_records(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"task_id": "X/1", "prompt": "def f():\n"}) + "\nnot json\n")
    task = HumanEvalTask()
    with pytest.raises(InputError, match="entry_point"):
        task.load(str(path))
    problems = task.load(str(path), strict=False)
    assert [p.id for p in problems] == ["X/1", "line-2"] and all(p.error for p in problems)
    with pytest.raises(InputError, match="not found"):
        task.load(str(tmp_path / "missing.jsonl.gz"))


@needs_data
def test_default_file_loads_and_first_canonical_solutions_pass():
    task = get_task("humaneval")
    problems = task.load(limit=5)
    assert [p.id for p in problems] == [f"HumanEval/{i}" for i in range(5)]
    assert all(task.answer(p, p.answer) == "pass" for p in problems)


@needs_data
@pytest.mark.slow
def test_every_canonical_solution_passes():
    task = get_task("humaneval")
    problems = task.load()
    assert len(problems) == 164
    failing = [p.id for p in problems if task.answer(p, p.answer) != "pass"]
    assert failing == []
