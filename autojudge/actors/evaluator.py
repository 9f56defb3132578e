"""The evaluation replica: one loaded pair that decodes whole settings, one at a time.

An evaluation decodes each setting (a rule and its parameter, over all the held-out problems)
independently of the others once `exact` has given the reference answers. With `workers` > 0
the driver (`pipeline/evaluate.py`) keeps one setting in flight on each `EvalActor`, so W
actors on W cores (or GPUs) decode W settings at once. The actor only holds the pair and calls
the function the driver ships with each task (`pipeline.evaluate.evaluate_setting`, pickled by
reference), so this layer does not import the pipeline. A setting is a pure function of its
inputs and only the driver stores results, so a retried task repeats no stored work.
"""

from __future__ import annotations

from typing import Any, Callable

import ray


@ray.remote(max_restarts=-1, max_task_retries=-1)
class EvalActor:
    """Holds one loaded target/draft pair; `run(fn, *args)` returns `fn(pair, *args)`."""

    def __init__(self, target: str, draft: str, device: str, threads: int) -> None:
        import torch

        from autojudge.models import load_pair

        torch.set_num_threads(max(1, int(threads)))
        self.pair = load_pair(target, draft, device=device)

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(pair, *args)` on this replica's pair."""
        return fn(self.pair, *args)
