"""The built-in toy world (seeded arithmetic word problems) and its trained model pair.

`model_path("target")` / `model_path("draft")` give the shipped Hugging Face folders
(the specs `toy:target` and `toy:draft` resolve to them).
"""

from __future__ import annotations

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent / "weights"  # holds target/ and draft/
MODEL_NAMES = ("target", "draft")


def model_path(which: str) -> Path:
    """Absolute folder of the shipped `target` or `draft` model."""
    if which not in MODEL_NAMES:
        raise ValueError(f"unknown toy model {which!r}; expected one of {MODEL_NAMES}")
    return MODEL_DIR / which
