"""Final-answer extraction for GSM8K-format responses.

Order of preference: the number after `####`, then after "The final answer is",
then the last number in the text. Numbers are normalised so that "1,000", "$1,000",
"1000.0" and "1000" compare equal.
"""

from __future__ import annotations

import re

_NUMBER = r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\$?\s?\.\d+"
_HASH_MARKER = re.compile(r"####\s*(" + _NUMBER + ")")
_FINAL_MARKER = re.compile(r"final answer is\s*:?\s*(?:\*\*)?\s*(" + _NUMBER + ")", re.IGNORECASE)
_ANY_NUMBER = re.compile(_NUMBER)


def normalize_number(text: str) -> str | None:
    """Canonical string for a number: strip $ , spaces and trailing zeros ("18.0" -> "18")."""
    cleaned = text.replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    if not cleaned or cleaned in {"-", "."}:
        return None
    try:
        value = float(cleaned)
    except ValueError:
        return None
    if value == int(value) and abs(value) < 1e18:
        return str(int(value))
    return repr(value)


def extract_answer(response: str) -> str | None:
    """The normalised final numeric answer of a response, or None when it has no number."""
    for pattern in (_HASH_MARKER, _FINAL_MARKER):
        matches = pattern.findall(response)
        if matches:
            return normalize_number(matches[-1])
    numbers = _ANY_NUMBER.findall(response)
    for candidate in reversed(numbers):
        normalised = normalize_number(candidate)
        if normalised is not None:
            return normalised
    return None
