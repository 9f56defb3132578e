"""The mining actor: one target/draft replica on one device, mining chunks of prompts.

Thin Ray glue over `autojudge.pipeline.mine.StreamingMiner`: the models load once in
`__init__`; the actor is threaded (`max_concurrency`), so the chunks the driver keeps in
flight feed one continuously batched search loop instead of draining the batch at each
chunk's end. Each `mine_chunk` call returns plain rows (one error row per bad prompt,
never a failed call for one prompt). Torch threads are set to the CPUs the actor
reserved (Ray also sets OMP_NUM_THREADS to that number), so W actors on W cores do not
oversubscribe the machine. `mine_chunk` is a pure function of its prompts (the driver
writes the shards), so a lost actor is restarted and its chunks retried (bounded, so a
crash that repeats does not loop forever).
"""

from __future__ import annotations

from typing import Any

import ray


# Restarts and task retries are unbounded: a chunk is a pure function of its prompts and
# only the driver writes shards, so a retry never duplicates work. A bounded count fails
# the job when a whole node goes away (the retries are spent while it is unreachable).
@ray.remote(max_concurrency=8, max_restarts=-1, max_task_retries=-1)
class MinerActor:
    """Holds a loaded pair and the task; mines chunks of problems."""

    def __init__(self, config: Any) -> None:
        import torch

        from autojudge.models import load_pair
        from autojudge.pipeline.mine import StreamingMiner, build_task

        torch.set_num_threads(max(1, int(config.cpus_per_worker)))
        self.config = config
        self.pair = load_pair(config.target, config.draft, config.device())
        self.miner = StreamingMiner(self.pair, build_task(config), config.max_new_tokens, config.batch_size)

    def describe(self) -> dict[str, Any]:
        """Tokenizer fingerprint and hidden sizes (for the manifest)."""
        from autojudge.pipeline.mine import describe_pair

        return describe_pair(self.pair)

    def mine_chunk(self, problems: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(label rows, response rows) for `problems`."""
        from autojudge.pipeline.mine import mine_problems

        if self.config.method == "plain":
            return mine_problems(self.pair, self.miner.task, problems, self.config.max_new_tokens, method="plain")
        return self.miner.mine(problems)

    def counters(self) -> dict[str, Any]:
        """The batched searcher's counters (forwards, tokens, seconds) for profiling."""
        from dataclasses import asdict

        return asdict(self.miner.searcher.counters)
