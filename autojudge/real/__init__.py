"""Real pretrained models for the pipeline (SmolLM2-135M-Instruct from PyPI) and their drafts.

Importing this package registers the `smollm2:` model specs with the generic loader
(`autojudge.model_specs`): `smollm2:target`, `smollm2:draft`, `smollm2:draft-L{N}[-fit][-v{V}]`
resolve to cached folders, built on first use (`specs.resolve_real_spec`). Kept light: the
set-up modules load only when a spec is resolved.
"""

from autojudge.errors import ModelPairError
from autojudge.model_specs import register_spec_resolver

FAMILY = "smollm2"
"""The spec prefix of the real pair."""


def resolve_smollm2_spec(spec: str) -> str:
    """The folder of a `smollm2:` spec (`specs.resolve_real_spec`), ModelPairError when it cannot be built."""
    from autojudge.real.smollm2 import RealModelUnavailable
    from autojudge.real.specs import resolve_real_spec

    try:
        return str(resolve_real_spec(spec))
    except (RealModelUnavailable, ValueError) as err:
        raise ModelPairError(str(err)) from None


register_spec_resolver(FAMILY, resolve_smollm2_spec)
