"""A reduced-vocabulary draft head (FR-Spec): the draft proposes only among a frequent subset of tokens.

In a small draft the LM head is a large share of the weights read per token (SmolLM2's
tied 49k x 576 head is half of an 8-layer self-draft). A draft that only scores the N
tokens the target emits most often reads N / V of that. Verification stays over the
target's full vocabulary, so exact mode stays exact: a token outside the subset is
simply never proposed, and the target's own token replaces it.

One mechanism: a model folder that holds `draft_vocab.json` (the kept token ids and how
they were chosen) gets a `ReducedHead` in place of its output embeddings whenever
`models.load_model` loads it. The head returns full-vocabulary logits (`finfo.min`
outside the subset), so every consumer - the engine's `forward_rows` argmax, the
miner's teacher-forced passes, Hugging Face `generate` - sees an ordinary causal LM,
and the draft's hidden states (the judge's features) are untouched.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

DRAFT_VOCAB_FILE = "draft_vocab.json"
"""The file in a model folder that makes `load_model` give the model a reduced head."""


class ReducedHead(torch.nn.Module):
    """An LM head over a subset of the vocabulary, returning full-vocabulary logits.

    `weight_t` holds the kept rows of the original head, transposed (`[H, N]`, contiguous: on the
    CPU a one-row `hidden @ weight_t` is about 2x faster than `F.linear` over `[N, H]` rows, measured
    in docs/real-models.md); `forward` scatters its N logits into a `[..., vocab_size]` tensor filled with the dtype's
    lowest value, so an argmax over the result is the argmax over the subset mapped back
    to full-vocabulary ids (ties resolve to the lowest id, as over the full head, because
    `token_ids` is ascending)."""

    def __init__(self, head: torch.nn.Module, token_ids: Sequence[int]) -> None:
        super().__init__()
        weight = getattr(head, "weight", None)
        if weight is None or getattr(head, "bias", None) is not None:
            raise ValueError("a reduced head needs a bias-free linear output embedding")
        ids = sorted({int(token) for token in token_ids})
        vocab_size = weight.shape[0]
        if not ids or ids[0] < 0 or ids[-1] >= vocab_size:
            raise ValueError(f"draft vocabulary ids must be in [0, {vocab_size}), got {len(ids)} ids")
        self.vocab_size = vocab_size
        self.register_buffer("token_ids", torch.tensor(ids, dtype=torch.long, device=weight.device), persistent=False)
        rows = weight.detach().index_select(0, self.token_ids)  # [N, H]
        self.weight_t = torch.nn.Parameter(rows.t().contiguous(), requires_grad=False)  # [H, N]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """`[..., H]` -> full-vocabulary logits `[..., vocab_size]`."""
        reduced = hidden @ self.weight_t  # [..., N]
        logits = reduced.new_full((*reduced.shape[:-1], self.vocab_size), torch.finfo(reduced.dtype).min)
        return logits.index_copy_(-1, self.token_ids, reduced)


def apply_draft_vocab(model: Any, token_ids: Sequence[int]) -> Any:
    """Give `model` a `ReducedHead` over `token_ids` (in place; returns the model). The input
    embeddings (and with them a tied head's storage) are left as they are."""
    head = model.get_output_embeddings()
    if isinstance(head, ReducedHead):
        raise ValueError("the model already has a reduced head")
    model.set_output_embeddings(ReducedHead(head, token_ids))
    return model


def read_draft_vocab(folder: str | Path) -> list[int] | None:
    """The token ids of `folder/draft_vocab.json`, or None when the folder has none."""
    path = Path(folder) / DRAFT_VOCAB_FILE
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    ids = record.get("token_ids") if isinstance(record, dict) else None
    if not isinstance(ids, list) or not ids or not all(isinstance(token, int) for token in ids):
        raise ValueError(f"{path}: 'token_ids' must be a non-empty list of ints")
    return ids


def write_draft_vocab(folder: str | Path, token_ids: Sequence[int], **meta: Any) -> Path:
    """Write `folder/draft_vocab.json`: the sorted token ids plus `meta` (how they were chosen)."""
    ids = sorted({int(token) for token in token_ids})
    path = Path(folder) / DRAFT_VOCAB_FILE
    path.write_text(json.dumps({"size": len(ids), **meta, "token_ids": ids}))
    return path


def select_draft_vocab(
    weighted_sources: Iterable[tuple[float, Iterable[Sequence[int]]]], size: int, vocab_size: int, always: Iterable[int] = ()
) -> list[int]:
    """The `size` most frequent token ids (sorted ascending).

    weighted_sources: (weight, token sequences) pairs; a token's score is the weighted sum of
    its counts (e.g. the target's own greedy outputs weighted far above plain task text).
    Tokens no source scores fill the rest in ascending id order (in a BPE vocabulary, earlier
    merges are the more frequent pieces). `always` (EOS, chat-template specials) is kept
    whatever its count."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    scores: Counter[int] = Counter()
    for weight, sequences in weighted_sources:
        for sequence in sequences:
            for token in sequence:
                if 0 <= int(token) < vocab_size:
                    scores[int(token)] += weight
    forced = {int(token) for token in always if 0 <= int(token) < vocab_size}
    chosen = set(forced)
    for token, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0])):
        if len(chosen) >= size:
            break
        chosen.add(token)
    for token in range(vocab_size):
        if len(chosen) >= size:
            break
        chosen.add(token)
    return sorted(chosen)


def coverage(token_ids: Iterable[int], sequences: Iterable[Sequence[int]]) -> float:
    """Share of the tokens of `sequences` that lie in the draft vocabulary `token_ids`: an upper
    bound on how often a draft with that vocabulary can propose the target's token."""
    kept = set(int(token) for token in token_ids)
    total = hits = 0
    for sequence in sequences:
        total += len(sequence)
        hits += sum(int(token) in kept for token in sequence)
    return hits / total if total else 1.0


__all__ = [
    "DRAFT_VOCAB_FILE",
    "ReducedHead",
    "apply_draft_vocab",
    "coverage",
    "read_draft_vocab",
    "select_draft_vocab",
    "write_draft_vocab",
]
