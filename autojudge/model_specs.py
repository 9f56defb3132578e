"""Model families named by a prefix (`family:NAME`), resolved by the package that knows them.

The generic loader (`autojudge.models`) knows model folders, hub ids, `.gguf` files and the
shipped toy pair; a family that is built or fetched on first use registers a resolver here
(`register_spec_resolver`), and `models.resolve_spec` asks it for the folder. `autojudge.real`
registers `smollm2:` (SmolLM2-135M-Instruct and its drafts); the package registers its
families when it is imported (`autojudge/__init__.py`). Torch-free, so that registering costs
nothing at start-up.
"""

from __future__ import annotations

from typing import Callable

SpecResolver = Callable[[str], str]
"""`resolver(spec) -> model folder or hub id` for a spec of its family (without an `@dtype`
suffix); raises `autojudge.errors.ModelPairError` naming what is missing when it cannot."""

_RESOLVERS: dict[str, SpecResolver] = {}


def register_spec_resolver(family: str, resolver: SpecResolver) -> None:
    """Resolve specs `family:NAME` with `resolver` (a second registration of a family replaces the first)."""
    if not family or ":" in family:
        raise ValueError(f"a model family is a name without ':', got {family!r}")
    _RESOLVERS[family] = resolver


def spec_resolver(spec: str) -> SpecResolver | None:
    """The resolver registered for a spec's family prefix, or None (a folder, a hub id, a file)."""
    family, sep, _ = spec.partition(":")
    return _RESOLVERS.get(family) if sep else None


def families() -> list[str]:
    """The registered family prefixes."""
    return sorted(_RESOLVERS)
