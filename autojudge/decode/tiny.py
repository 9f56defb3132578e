"""Tiny randomly initialised causal LMs (Llama, Qwen2, GPT-2 style) for tests and smoke benches.

Seeded, float32, eval mode, eager-free (default sdpa attention). Vocab 96 by default so
argmax ties are rare; `vocab_size` can differ between a target and its draft to mimic
padded embedding matrices.
"""

from __future__ import annotations

from typing import Any

import torch

ARCHITECTURES = ("llama", "qwen2", "gpt2")


def tiny_model(arch: str = "llama", seed: int = 0, vocab_size: int = 96, hidden_size: int = 32, layers: int = 2) -> Any:
    """A random `arch` causal LM with `layers` blocks of width `hidden_size` (float32, eval)."""
    import transformers

    common = dict(vocab_size=vocab_size, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if arch == "llama":
        config = transformers.LlamaConfig(
            hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, **common,
        )
        cls = transformers.LlamaForCausalLM
    elif arch == "qwen2":
        config = transformers.Qwen2Config(
            hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, use_sliding_window=False,
            **common,
        )
        cls = transformers.Qwen2ForCausalLM
    elif arch == "gpt2":
        config = transformers.GPT2Config(n_embd=hidden_size, n_layer=layers, n_head=4, n_positions=512, **common)
        cls = transformers.GPT2LMHeadModel
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose from {ARCHITECTURES}")
    torch.manual_seed(seed)
    model = cls(config).eval()
    # Random init gives near-uniform logits; a larger LM-head scale makes argmax decisive (fewer float ties).
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    return model


def noisy_copy(model: Any, scale: float = 0.05, seed: int = 0) -> Any:
    """A copy of `model` with Gaussian noise (relative `scale`) on every weight: a draft that
    mostly agrees with its target and sometimes does not."""
    import copy

    generator = torch.Generator().manual_seed(seed)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in clone.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(noise * scale * parameter.std().clamp_min(1e-3))
    return clone.eval()
