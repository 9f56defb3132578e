"""The speculative decoding engine: draft k tokens, verify them in one target forward, accept, roll back.

- `cache`: `RowKVCache` (one static slot per row) and `forward_rows` (one batched forward).
- `lean`: `LeanDecoder`, the hand-written forward of Llama-family decoders (the one in the package),
  and `lean_unsupported_reason`, the one check of which models it supports.
- `acceptance`: the rules (`ExactRule`, `TopKRule`, `JudgeRule`, `build_rule`) -> bool mask `[batch, k]`,
  and `accepted_lengths` / `greedy_prefix`, the one greedy-acceptance reduction.
- `core`: `EngineCore` (`add_request` / `step` / `abort`, continuous batching; `generate` loops over it).
- `window`: the window model (expected tokens per cycle and per second, `best_window`).
- `metrics`: `RequestMetrics`, `aggregate`.
"""

from autojudge.decode.engine.acceptance import AcceptanceRule, ExactRule, JudgeRule, TopKRule, accepted_lengths, build_rule
from autojudge.decode.engine.cache import CacheLayoutError, RowKVCache, RowOutput, forward_rows
from autojudge.decode.engine.core import EngineCore, GenerationResult, RequestSettings, RowUpdate, StepOutput
from autojudge.decode.engine.metrics import RequestMetrics, aggregate

__all__ = [
    "AcceptanceRule",
    "CacheLayoutError",
    "EngineCore",
    "ExactRule",
    "GenerationResult",
    "JudgeRule",
    "RequestMetrics",
    "RequestSettings",
    "RowKVCache",
    "RowOutput",
    "RowUpdate",
    "StepOutput",
    "TopKRule",
    "accepted_lengths",
    "aggregate",
    "build_rule",
    "forward_rows",
]
