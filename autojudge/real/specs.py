"""Model specs of the real pair: `smollm2:target`, `smollm2:draft`, `smollm2:draft-L{N}[-fit][-v{V}]` -> folders.

A `-v{V}` suffix (V tokens, `8k` = 8192) names the draft before it with a reduced-vocabulary
head (`real/vocab.py`): `smollm2:draft-v8k` is the default draft proposing among 8,192 tokens.

Sits above `smollm2.py` (fetch, convert, truncate) and `fit.py` (distil a draft), building
what a spec names on first use.
"""

from __future__ import annotations

from pathlib import Path

from autojudge.real.fit import FitConfig, fit_draft
from autojudge.real.smollm2 import DEFAULT_DRAFT, RealModelUnavailable, build_draft, convert_target, is_hf_folder, model_root


def resolve_real_spec(spec: str, cache: Path | None = None, build: bool = True) -> Path:
    """Folder for `smollm2:target`, `smollm2:draft`, `smollm2:draft-L{N}` or
    `smollm2:draft-L{N}-fit`, each draft optionally with `-v{V}`, building it from the cache when
    `build` (fetching the weights if needed). Raises RealModelUnavailable when it cannot."""
    import re

    family, _, which = spec.partition(":")
    if family != "smollm2" or not which:
        raise ValueError(f"not a real-model spec: {spec!r} (use smollm2:target or smollm2:draft)")
    reduced = re.fullmatch(r"(draft.*)-v(\d+k?)", which)
    if reduced:
        from autojudge.real.vocab import build_reduced_draft, parse_vocab_size

        base = reduced.group(1)
        base = DEFAULT_DRAFT if base == "draft" else base
        name = f"{base}-v{reduced.group(2)}"
        if is_hf_folder(model_root(cache) / name):
            return model_root(cache) / name
        if not build:
            raise RealModelUnavailable(f"{spec}: {model_root(cache) / name} not built; run `autojudge real fetch`")
        size = parse_vocab_size(reduced.group(2))
        return build_reduced_draft(resolve_real_spec(f"smollm2:{base}", cache, build), size, name, cache)
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
        raise ValueError(f"unknown SmolLM2 model {spec!r}: use target, draft, draft-L<N> or draft-L<N>-fit (each draft optionally -v<V>)")
    if fitted:
        return fit_draft(FitConfig(num_layers=int(layers_text)), cache)
    return build_draft(int(layers_text), cache)
