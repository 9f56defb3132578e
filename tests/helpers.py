"""Shared helpers for tests (and `bench/decode.py --tiny`): tiny model pairs and a synthetic mining folder.

They live beside the tests, outside the `autojudge` package (the wheel does not ship them), and are
imported as `tests.helpers` from the repository root (pytest's `pythonpath`, pyproject.toml).

- `tiny_model` / `noisy_copy`: tiny randomly initialised causal LMs (Llama, Qwen2, GPT-2 style),
  seeded, float32, eval mode (default sdpa attention). Vocab 96 by default so argmax ties are
  rare; `vocab_size` can differ between a target and its draft to mimic padded embedding matrices.
- `save_pair`: a target and draft saved as model folders with the toy tokenizer, loadable by
  every command like any model spec.
- `tree_checksums`: a checksum of everything under a folder (tests compare them before and after a command).
- `write_mining_folder`: a mining folder of committed shards (written through the one store,
  `pipeline/shards.py`) whose features carry the label, for judge/train/export/run tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
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


def greedy_reference(model: Any, prompts: list[list[int]], max_new_tokens: int, eos: int | None = 2, pad_token_id: int = 0) -> list[list[int]]:
    """Hugging Face greedy `generate` per prompt (batch 1, KV cache), each row cut after its first
    EOS: the reference that exact decoding must equal."""
    rows = []
    for prompt in prompts:
        with torch.no_grad():
            out = model.generate(
                input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad_token_id, eos_token_id=eos,
            )  # fmt: skip
        row = out[0, len(prompt) :].tolist()
        rows.append(row[: row.index(eos) + 1] if eos is not None and eos in row else row)
    return rows


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


def save_pair(folder: Path, target: Any, draft: Any) -> tuple[Path, Path]:
    """(target_dir, draft_dir): both models saved under `folder` with the toy tokenizer
    (their vocab must be at least the toy tokenizer's)."""
    from autojudge.models import TOY_WEIGHTS

    paths = []
    for name, model in (("target", target), ("draft", draft)):
        path = Path(folder) / name
        model.save_pretrained(path)
        for item in (TOY_WEIGHTS / "target").iterdir():
            if item.name.startswith("tokenizer") or item.name.endswith(".jinja"):
                shutil.copy(item, path / item.name)
        paths.append(path)
    return paths[0], paths[1]


def toy_vocab_size() -> int:
    """Tokens of the toy tokenizer (a tiny model saved with it needs at least this vocab)."""
    from autojudge.models import load_tokenizer

    return len(load_tokenizer("toy:target"))


SYNTHETIC_MANIFEST = {
    "task": "toy",
    "target": "synthetic:target",
    "draft": "synthetic:draft",
    "tokenizer_fingerprint": "0123456789abcdef",
    "target_hidden_size": 16,
    "draft_hidden_size": 8,
    "settings": {},
}


def write_mining_folder(
    folder: Path, num_prompts: int = 80, important_rate: float = 0.25, signal: float = 1.5, seed: int = 0,
    shards: int = 2, manifest_overrides: dict | None = None,
) -> Path:
    """A mining folder of `shards` committed shards whose features carry the label (important rows
    are shifted along a random direction by `signal`), and its manifest."""
    import numpy as np

    from autojudge.pipeline import shards as store

    manifest = dict(SYNTHETIC_MANIFEST, **(manifest_overrides or {}))
    target_hidden, draft_hidden = manifest["target_hidden_size"], manifest["draft_hidden_size"]
    rng = np.random.default_rng(seed)
    direction_t = rng.normal(size=target_hidden).astype(np.float32)
    direction_d = rng.normal(size=draft_hidden).astype(np.float32)
    labels: dict[str, list[dict]] = {}
    for prompt in range(num_prompts):
        prompt_id = f"toy-1-{prompt}"
        labels[prompt_id] = []
        for position in sorted(rng.choice(60, size=int(rng.integers(2, 7)), replace=False)):
            important = bool(rng.random() < important_rate)
            h_t = rng.normal(size=target_hidden).astype(np.float32) + signal * important * direction_t
            h_d = rng.normal(size=draft_hidden).astype(np.float32) + signal * important * direction_d
            labels[prompt_id].append({
                "prompt_id": prompt_id, "position": int(position), "target_token": int(rng.integers(100)),
                "draft_token": int(rng.integers(100)), "important": important,
                "h_target": h_t.tolist(), "h_draft": h_d.tolist(),
            })  # fmt: skip
    prompt_ids = list(labels)
    per_shard = (num_prompts + shards - 1) // shards
    for shard in range(shards):
        chunk = prompt_ids[shard * per_shard : (shard + 1) * per_shard]
        responses = [
            {"prompt_id": p, "prompt_token_ids": [1, 2], "initial_response_ids": [3], "final_response_ids": [3],
             "target_answer": "3", "num_labels": len(labels[p]), "error": None}
            for p in chunk
        ]  # fmt: skip
        store.write_shard(folder, f"part-{shard:05d}", [row for p in chunk for row in labels[p]], responses)
    manifest["counts"] = store.count_rows(folder)
    manifest["status"] = "complete"
    (Path(folder) / store.MANIFEST).write_text(json.dumps(manifest))
    return Path(folder)


def save_word_level_model(folder: Path, words: list[str]) -> Path:
    """A 1-layer Llama with a word-level tokenizer over `words`, saved as an HF folder (two such
    folders with different words make a pair whose tokenizers differ)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(["<unk>", "<eos>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, eos_token_id=1,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tree_checksums(folder: Path) -> dict[str, str]:
    """Every entry under `folder` (any depth, links not followed) -> its SHA-256 ('dir' for a folder,
    'link -> TARGET' for a symbolic link): compare before and after a command to prove it changed
    and removed nothing there."""
    import hashlib
    import os

    sums = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink():
                sums[relative] = f"link -> {os.readlink(path)}"
            elif path.is_dir():
                sums[relative] = "dir"
            else:
                sums[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


def wait_until(predicate: Any, timeout: float, interval: float = 0.5) -> Any:
    """Call `predicate` until it returns something true or `timeout` seconds pass; its last value."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
