"""The decode actor: a callable class for `Dataset.map_batches` that holds one loaded pair.

Ray Data creates `concurrency` instances (each with `num_gpus` / `num_cpus` of its own);
`__init__` loads the target, the draft, the rule (and judge) once, and every call
decodes one batch of rows through `autojudge.pipeline.infer.decode_rows`, which puts
each row's failure in its own `error` field instead of failing the batch.
"""

from __future__ import annotations

from typing import Any

from autojudge.pipeline.infer import DecodeStageConfig, decode_rows, load_decode_state


class Decoder:
    """One decode replica (models stay loaded for the actor's life)."""

    def __init__(self, config: DecodeStageConfig, num_gpus: float = 0.0):
        self.state = load_decode_state(config, num_gpus=num_gpus)

    def __call__(self, batch: Any) -> Any:
        """pyarrow Table of corpus rows -> pyarrow Table of outputs (same rows, same order)."""
        return decode_rows(self.state, batch.to_pylist())
