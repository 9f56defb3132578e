"""Loading a target/draft pair from specs, and checking that they share a tokenizer.

A spec is `toy:target` / `toy:draft` (the shipped toy pair), a local model folder,
a Hugging Face id (needs network or a local cache), a `.gguf` file (needs the
`gguf` and `accelerate` packages), or `family:NAME` of a family another package registered
(`autojudge.model_specs`; `autojudge.real` registers `smollm2:`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autojudge.errors import ModelPairError
from autojudge.model_specs import spec_resolver

TOY_WEIGHTS = Path(__file__).parent / "toy" / "weights"


@dataclass
class ModelPair:
    """A loaded target and draft with their shared tokenizer."""

    target: Any
    """The large model T (a transformers causal LM, eval mode)."""
    draft: Any
    """The small model D (a transformers causal LM, eval mode)."""
    tokenizer: Any
    """The tokenizer both models use."""
    target_id: str
    """The spec the target was loaded from."""
    draft_id: str
    """The spec the draft was loaded from."""

    @property
    def device(self) -> torch.device:
        return next(self.target.parameters()).device


SPEC_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
               "fp32": torch.float32, "float32": torch.float32}
"""Suffixes `SPEC@NAME` that load a model in that dtype (e.g. `smollm2:draft-v8k@bf16`: a bfloat16 draft, whose
one-token steps are cheaper on a CPU with bfloat16 instructions; verification stays the target's)."""


def split_spec_dtype(spec: str) -> tuple[str, torch.dtype | None]:
    """(the spec without its `@dtype` suffix, that dtype or None)."""
    base, sep, name = spec.rpartition("@")
    if not sep:
        return spec, None
    if name.lower() not in SPEC_DTYPES:
        raise ModelPairError(f"{spec!r}: unknown dtype suffix @{name}; use one of {', '.join('@' + n for n in SPEC_DTYPES)}")
    return base, SPEC_DTYPES[name.lower()]


def resolve_spec(spec: str) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name or None) for a model spec (an `@dtype` suffix is ignored here)."""
    spec = split_spec_dtype(spec)[0]
    if spec.startswith("toy:"):
        which = spec.split(":", 1)[1]
        if which not in ("target", "draft"):
            raise ModelPairError(f"unknown toy model {spec!r}: use toy:target or toy:draft")
        return str(TOY_WEIGHTS / which), None
    resolver = spec_resolver(spec)  # a family registered by the package that knows it (`model_specs`)
    if resolver is not None:
        return resolver(spec), None
    if spec.endswith(".gguf"):
        path = Path(spec)
        if not path.exists():
            raise ModelPairError(f"{spec}: GGUF file not found")
        return str(path.parent), path.name
    return spec, None


def default_dtype(device: str | torch.device) -> torch.dtype:
    """float32 on CPU (exact and fast enough for small models), bfloat16 on GPUs."""
    return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16


def load_tokenizer(spec: str) -> Any:
    """The tokenizer of a model spec."""
    from transformers import AutoTokenizer

    location, gguf_file = resolve_spec(spec)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelPairError(f"cannot load the tokenizer of {spec!r}: {err}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(spec: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, reduced_head: bool = True) -> Any:
    """A causal LM from a spec, on `device`, in eval mode, in the spec's `@dtype` (else `dtype`, else
    `default_dtype(device)`). With `reduced_head`, a folder holding
    `draft_vocab.json` gets a head over only those tokens (`autojudge.draft_vocab`; drafts only:
    `load_pair` loads its target with the full head)."""
    from transformers import AutoModelForCausalLM

    from autojudge.draft_vocab import apply_draft_vocab, read_draft_vocab

    location, gguf_file = resolve_spec(spec)
    kwargs: dict[str, Any] = {"dtype": split_spec_dtype(spec)[1] or dtype or default_dtype(device)}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as err:  # missing folder/weights, unrecognised config
        raise ModelPairError(f"cannot load model {spec!r}: {err}") from None
    model = model.to(device).eval()
    draft_vocab = read_draft_vocab(location) if reduced_head and not gguf_file and Path(location).is_dir() else None
    if draft_vocab is not None:
        apply_draft_vocab(model, draft_vocab)
    return model


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash of the vocabulary and special tokens: equal iff tokenization agrees."""
    payload = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
    }
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


def check_same_tokenizer(target_tokenizer: Any, draft_tokenizer: Any, target_id: str, draft_id: str) -> None:
    """Raise ModelPairError when the two tokenizers differ."""
    target_print = tokenizer_fingerprint(target_tokenizer)
    draft_print = tokenizer_fingerprint(draft_tokenizer)
    if target_print != draft_print:
        raise ModelPairError(
            f"target {target_id!r} and draft {draft_id!r} use different tokenizers "
            f"(vocab sizes {len(target_tokenizer.get_vocab())} vs {len(draft_tokenizer.get_vocab())}, "
            f"fingerprints {target_print} vs {draft_print}); speculative decoding needs one shared tokenizer"
        )


def load_pair(
    target_spec: str, draft_spec: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
    tokenizer: Any = None,
) -> ModelPair:
    """Load target and draft, refusing a pair whose tokenizers differ. The target always keeps its
    full head; a draft folder with `draft_vocab.json` gets a reduced one. `tokenizer`: the target's,
    already read and found equal to the draft's (`setup.resolve`): neither is read again."""
    if tokenizer is None:
        tokenizer = load_tokenizer(target_spec)
        check_same_tokenizer(tokenizer, load_tokenizer(draft_spec), target_spec, draft_spec)
    target = load_model(target_spec, device, dtype, reduced_head=False)
    draft = load_model(draft_spec, device, dtype)
    return ModelPair(target, draft, tokenizer, target_spec, draft_spec)


def eos_token_ids(tokenizer: Any, *models: Any) -> list[int]:
    """EOS ids of the tokenizer and the models' generation configs, deduplicated
    (what `generate` stops on)."""
    ids: list[int] = []
    candidates: list[Any] = [tokenizer.eos_token_id]
    for model in models:
        candidates.append(getattr(getattr(model, "generation_config", None), "eos_token_id", None))
    for item in candidates:
        for token in item if isinstance(item, (list, tuple)) else [item]:
            if token is not None and int(token) not in ids:
                ids.append(int(token))
    return ids


CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")
"""Config fields that state a model's context length (the first one set counts)."""


def context_length(config: Any) -> int:
    """A model's context length from its (text) config; a very large number when it states none."""
    values = [getattr(config, key, None) for key in CONTEXT_KEYS]
    return next((value for value in values if isinstance(value, int) and value > 0), 1 << 30)


def model_context(model: Any) -> int:
    """Longest sequence a loaded model supports (`context_length` of its config)."""
    return context_length(model.config)


def load_text_config(spec: str) -> Any:
    """The (text) config of the model a spec names, without its weights; InputError when it
    cannot be read."""
    from transformers import AutoConfig

    from autojudge.errors import InputError

    location, gguf_file = resolve_spec(spec)
    try:
        config = AutoConfig.from_pretrained(location, **({"gguf_file": gguf_file} if gguf_file else {}))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the config of {spec!r}: {str(err).splitlines()[0]}") from None
    return config.get_text_config() if hasattr(config, "get_text_config") else config
