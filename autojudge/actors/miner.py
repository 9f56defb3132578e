"""The mining actor: one target/draft replica on one device, mining chunks of prompts.

Thin Ray glue over `autojudge.pipeline.mine.mine_problems`: the models load once in
`__init__`; each `mine_chunk` call returns plain rows (one error row per bad prompt,
never a failed call for one prompt). Torch threads are set to the CPUs the actor
reserved (Ray also sets OMP_NUM_THREADS to that number), so W actors on W cores do not
oversubscribe the machine.
"""

from __future__ import annotations

from typing import Any

import ray


@ray.remote
class MinerActor:
    """Holds a loaded pair and the task; mines chunks of problems."""

    def __init__(self, config: Any) -> None:
        import torch

        from autojudge.models import load_pair
        from autojudge.pipeline.mine import build_task
        from autojudge.pipeline.search import eos_token_ids
        from autojudge.pipeline.search_fast import BatchedSearcher

        torch.set_num_threads(max(1, int(config.cpus_per_worker)))
        self.config = config
        self.pair = load_pair(config.target, config.draft, config.device())
        self.task = build_task(config)
        tokenizer = self.pair.tokenizer
        eos_ids = eos_token_ids(tokenizer, self.pair.target)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
        self.searcher = BatchedSearcher(self.pair.target, self.pair.draft, eos_ids, pad_id, config.batch_size)

    def describe(self) -> dict[str, Any]:
        """Tokenizer fingerprint and hidden sizes (for the manifest)."""
        from autojudge.pipeline.mine import describe_pair

        return describe_pair(self.pair)

    def mine_chunk(self, problems: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(label rows, response rows) for `problems`."""
        from autojudge.pipeline.mine import mine_problems

        config = self.config
        return mine_problems(
            self.pair, self.task, problems, config.max_new_tokens, config.batch_size, config.method, self.searcher
        )

    def counters(self) -> dict[str, Any]:
        """The batched searcher's counters (forwards, tokens, seconds) for profiling."""
        from dataclasses import asdict

        return asdict(self.searcher.counters)
