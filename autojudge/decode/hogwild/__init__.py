"""Hogwild! inference (arXiv 2504.06261, docs/hogwild.md): N workers of one model over one shared KV cache.

- `blocks`: the shared cache of blocks (keys stored at block-relative positions, re-used at any offset
  by rotating the queries) and `forward_feeds`, one batched step of all workers on the engine's lean
  forward; `check_supported` refuses models that forward does not compute.
- `generator`: the workers, the collaboration prompt, the answer hook and the generation loop
  (`HogwildGenerator`).
"""
