"""Computation on models, no Ray: the engine core, the cache, acceptance rules, metrics, the search.

- `cache`: `RowKVCache` (one static slot per row) and `forward_rows` (one batched forward).
- `acceptance`: the rules (`ExactRule`, `TopKRule`, `JudgeRule`, `build_rule`) -> bool mask `[batch, k]`,
  and `accepted_lengths` / `greedy_prefix`, the one greedy-acceptance reduction.
- `core`: `EngineCore` (`add_request` / `step` / `abort`, continuous batching; `generate` loops over it).
- `metrics`: `RequestMetrics`, `aggregate`.
- `search` / `lookahead`: the semi-greedy label search (docs/design.md §1.1), plain and fast.
- `hogwild`: Hogwild! inference, several workers of one model over one shared block cache.
"""

from autojudge.decode.acceptance import AcceptanceRule, ExactRule, JudgeRule, TopKRule, accepted_lengths, build_rule
from autojudge.decode.cache import CacheLayoutError, RowKVCache, RowOutput, forward_rows
from autojudge.decode.core import EngineCore, GenerationResult, RequestSettings, RowUpdate, StepOutput
from autojudge.decode.metrics import RequestMetrics, aggregate

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
