"""Real pretrained models for the pipeline (SmolLM2-135M-Instruct from PyPI) and their drafts."""

from autojudge.real.smollm2 import RealModelUnavailable, cache_root
from autojudge.real.specs import resolve_real_spec

__all__ = ["RealModelUnavailable", "cache_root", "resolve_real_spec"]
