"""Model specs of the real pair: `smollm2:target`, `smollm2:draft`, `smollm2:draft-L{N}[-fit]` -> folders.

Sits above `smollm2.py` (fetch, convert, truncate) and `fit.py` (distil a draft), building
what a spec names on first use.
"""

from __future__ import annotations

from pathlib import Path

from autojudge.real.fit import FitConfig, fit_draft
from autojudge.real.smollm2 import DEFAULT_DRAFT, RealModelUnavailable, build_draft, convert_target, is_hf_folder, model_root


def resolve_real_spec(spec: str, cache: Path | None = None, build: bool = True) -> Path:
    """Folder for `smollm2:target`, `smollm2:draft`, `smollm2:draft-L{N}` or
    `smollm2:draft-L{N}-fit`, building it from the cache when `build` (fetching
    the weights if needed). Raises RealModelUnavailable when it cannot."""
    family, _, which = spec.partition(":")
    if family != "smollm2" or not which:
        raise ValueError(f"not a real-model spec: {spec!r} (use smollm2:target or smollm2:draft)")
    if which == "draft":
        which = DEFAULT_DRAFT
    folder = model_root(cache) / which
    if is_hf_folder(folder):
        return folder
    if not build:
        raise RealModelUnavailable(f"{spec}: {folder} not built; run `autojudge real fetch`")
    if which == "target":
        return convert_target(cache)
    name = which.removeprefix("draft-L")
    fitted = name.endswith("-fit")
    layers_text = name.removesuffix("-fit")
    if not which.startswith("draft-L") or not layers_text.isdigit():
        raise ValueError(f"unknown SmolLM2 model {spec!r}: use target, draft, draft-L<N> or draft-L<N>-fit")
    if fitted:
        return fit_draft(FitConfig(num_layers=int(layers_text)), cache)
    return build_draft(int(layers_text), cache)
