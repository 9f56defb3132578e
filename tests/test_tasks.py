"""Tasks: answer extraction (on real GSM8K answers), JSONL errors, prompt formatting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autojudge.errors import InputError
from autojudge.tasks import Problem, get_task
from autojudge.tasks.answers import extract_answer, normalize_number
from autojudge.tasks.gsm8k import load_problems

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("So she makes 9 * 2 = 18.\n#### 18", "18"),
        ("The final answer is 42.", "42"),
        ("The final answer is $1,000.", "1000"),
        ("It costs $18.00 in total", "18"),
        ("18.0", "18"),
        ("#### -5", "-5"),
        ("first 3 then 7 then 12 apples", "12"),
        ("#### 12\nwait, 13", "12"),
        ("The final answer is 0.5", "0.5"),
        ("no number here", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_normalize_number_equivalents() -> None:
    assert normalize_number("1,000") == normalize_number("$1000") == normalize_number("1000.0") == "1000"
    assert normalize_number("abc") is None


@pytest.mark.skipif(not GSM8K.exists(), reason="shared GSM8K data not present [required in CI]")
def test_real_gsm8k_reference_answers() -> None:
    """Every real reference answer parses to the number after ####, commas removed."""
    for split in ("train", "test"):
        rows = [json.loads(line) for line in (GSM8K / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
        for row in rows:
            final = row["answer"].split("####")[-1].strip().replace(",", "")
            assert extract_answer(row["answer"]) == normalize_number(final), row["answer"]
        # The "final answer is" form of the same solution gives the same number.
        body, final = rows[0]["answer"].rsplit("####", 1)
        assert extract_answer(f"{body}The final answer is {final.strip()}.") == extract_answer(rows[0]["answer"])


@pytest.mark.skipif(not GSM8K.exists(), reason="shared GSM8K data not present [required in CI]")
def test_gsm8k_task_loads_real_file_and_scores() -> None:
    task = get_task("gsm8k")
    problems = task.load(str(GSM8K / "test.jsonl"), limit=5)
    assert len(problems) == 5 and all(p.question and p.answer for p in problems)
    assert problems[0].id == "test-0"
    assert task.is_correct(problems[0], problems[0].answer)
    assert not task.is_correct(problems[0], "The final answer is 123456789.")


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", ['{"id": "a", "question": "q"}', "{not json", '{"id": "c", "question": "q"}'])
    with pytest.raises(InputError, match=r"bad\.jsonl:2: not valid JSON"):
        get_task("gsm8k").load(str(path))


def test_missing_question_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "missing.jsonl", ['{"id": "a", "question": "q"}', '{"id": "b", "answer": "#### 3"}'])
    with pytest.raises(InputError, match=r"missing\.jsonl:2: missing field 'question'"):
        get_task("gsm8k").load(str(path))


def test_lenient_load_keeps_good_rows_and_marks_bad_ones(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "mixed.jsonl",
        ['{"id": "a", "question": "q1"}', "[1, 2]", '{"id": "c", "question": "   "}', '{"id": "d", "prompt": "raw"}'],
    )
    problems = load_problems(path, strict=False)
    assert [p.id for p in problems] == ["a", "line-2", "c", "d"]
    assert [p.error is None for p in problems] == [True, False, False, True]
    assert "expected a JSON object" in problems[1].error and "empty question" in problems[2].error
    assert problems[3].prompt == "raw" and problems[3].question is None


def test_missing_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        get_task("gsm8k").load(str(tmp_path / "nope.jsonl"))


def test_unknown_task() -> None:
    with pytest.raises(InputError, match="unknown task 'nope'"):
        get_task("nope")


class TemplateTokenizer:
    chat_template = "x"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):  # noqa: ANN001
        assert tokenize is False and add_generation_prompt is True
        return "|".join(f"{m['role']}:{m['content']}" for m in messages) + "|assistant:"


def test_render_prompt_uses_chat_template_and_instruction() -> None:
    task = get_task("gsm8k", instruction="End with 'The final answer is N'.")
    problem = Problem(id="1", question="What is 2+2?")
    assert task.render_prompt(problem, TemplateTokenizer()) == (
        "user:What is 2+2?\nEnd with 'The final answer is N'.|assistant:"
    )
    raw = Problem(id="2", prompt="2+2=")
    assert task.render_prompt(raw, TemplateTokenizer()) == "2+2="
