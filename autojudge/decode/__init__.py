"""The speculative decode engine: cached forwards, acceptance rules, the engine loop, metrics.

Pure PyTorch + transformers (no Ray). See DESIGN.md §1.4 and .notes/CONTRACTS.md.
"""
