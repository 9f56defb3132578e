"""The speculative decode engine: cached forwards, acceptance rules, the engine loop, metrics.

Pure PyTorch + transformers (no Ray). See DESIGN.md §1.4 and .notes/CONTRACTS.md.

- `forward`: `cached_forward` (logits + final-norm hidden) and `BatchCache` (per-row roll-back).
- `acceptance`: `ExactRule`, `TopKRule`, `JudgeRule`, `build_rule` -> bool mask `[batch, k]`.
- `engine`: `SpeculativeEngine.generate(prompt_ids, max_new_tokens, ...) -> [GenerationResult]`.
- `metrics`: `RequestMetrics`, `aggregate`.
"""

from autojudge.decode.acceptance import AcceptanceRule, ExactRule, JudgeRule, TopKRule, accepted_lengths, build_rule
from autojudge.decode.engine import GenerationResult, SpeculativeEngine
from autojudge.decode.forward import BatchCache, CacheLayoutError, ForwardOutput, cached_forward, left_pad
from autojudge.decode.metrics import RequestMetrics, aggregate

__all__ = [
    "AcceptanceRule",
    "BatchCache",
    "CacheLayoutError",
    "ExactRule",
    "ForwardOutput",
    "GenerationResult",
    "JudgeRule",
    "RequestMetrics",
    "SpeculativeEngine",
    "TopKRule",
    "accepted_lengths",
    "aggregate",
    "build_rule",
    "cached_forward",
    "left_pad",
]
