"""The semi-greedy label search (docs/design.md §1.1) that mining runs per prompt.

- `search`: the shared types (`Label`, `SearchResult`, `Evaluator`, `TaskEvaluator`) and `plain_search`,
  the reference algorithm followed literally (slow on purpose; the oracle of the tests).
- `lookahead`: the fast search with the same labels - prefix reuse on the engine's row cache, lossless
  lookahead regeneration, many searches batched per forward (`BatchedSearcher`).
"""
