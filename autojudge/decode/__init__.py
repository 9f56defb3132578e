"""Computation on models, no Ray: three subsystems, one subpackage each.

- `engine`: speculative decoding - the engine core (continuous batching), the per-row KV cache, the
  lean Llama-family forward, the acceptance rules, the window model and the metrics.
- `mining`: the semi-greedy label search (docs/design.md §1.1), the plain reference and the fast
  lossless lookahead search; it runs its forwards on the engine's cache.
- `hogwild`: Hogwild! inference, several workers of one model over one shared block cache, on the
  engine's lean forward.

`mining` and `hogwild` may import `engine`; `engine` imports neither, and they do not import each
other (tests/test_layout.py).
"""
