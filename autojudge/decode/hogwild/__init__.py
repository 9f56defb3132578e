"""Hogwild! inference (arXiv 2504.06261, docs/hogwild.md): N workers of one model over one shared KV cache.

- `generator`: the shared block cache, its forward, the workers and the generation loop (`HogwildGenerator`).
"""
