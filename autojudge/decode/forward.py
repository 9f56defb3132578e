"""Cached forward passes over batches of rows of different lengths.

This module is the one place that touches transformers' KV caches. The decode engine
and the label miner both build on it.

Layout. A `BatchCache` holds one model's `DynamicCache` (keys/values of shape
`[batch, heads, slots, head_dim]`) plus a boolean `valid` mask `[batch, slots]`
saying which cache slots hold real tokens of each row. Rows may have holes (left
padding, rejected speculative tokens); the mask turns them off in attention and
position ids count only valid slots, so a row's outputs do not depend on the other
rows in the batch. `truncate` rolls rows back to a per-row length and `compact`
re-packs the valid slots right-aligned (a plain slice when every row is already
contiguous, e.g. batch size 1), so holes never accumulate.

Positions. Position ids are logical: the i-th valid token of a row has position i,
whatever slot it sits in. This matches Hugging Face `generate` with left padding
(`attention_mask.cumsum(-1) - 1`).

Features. `cached_forward` returns the logits and the last hidden state as fed to
the LM head (after the final norm): `model.base_model(...).last_hidden_state`
followed by `model.get_output_embeddings()` (see .notes/CONTRACTS.md).

Typical use (prefill, then one token at a time):

    cache = BatchCache.empty(model, batch_size=2)
    ids, mask = left_pad([[5, 6, 7], [8, 9]], pad_id=0)
    out = cached_forward(model, cache, ids, mask, last=1)   # out.logits [2, 1, V]
    next_ids = out.logits[:, -1].argmax(-1, keepdim=True)   # [2, 1]
    out = cached_forward(model, cache, next_ids, last=1)
    cache.truncate(torch.tensor([3, 2]))                    # roll both rows back
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch


class CacheLayoutError(RuntimeError):
    """The model's cache type cannot be rolled back per row (e.g. sliding-window or linear-attention layers)."""


@dataclass
class ForwardOutput:
    """What one cached forward returns, for the last `n` input positions."""

    logits: torch.Tensor
    """LM-head logits, `[batch, n, vocab]` (the model's own, possibly padded, vocab width)."""
    hidden: torch.Tensor
    """Last hidden state after the final norm (the LM head's input), `[batch, n, hidden]`."""


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token rows to one width: (ids `[batch, width]` long, mask `[batch, width]` bool)."""
    width = max((len(row) for row in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for index, row in enumerate(rows):
        if row:
            ids[index, width - len(row) :] = torch.as_tensor(list(row), dtype=torch.long)
            mask[index, width - len(row) :] = True
    return ids.to(device), mask.to(device)


def _layers(cache: Any) -> list[Any]:
    """The per-layer key/value holders of a DynamicCache, checked to be plain full-attention layers."""
    from transformers.cache_utils import DynamicLayer

    layers = list(getattr(cache, "layers", []))
    for layer in layers:
        if type(layer) is not DynamicLayer:
            raise CacheLayoutError(
                f"cache layer {type(layer).__name__} cannot be rolled back per row; "
                "only full-attention DynamicLayer caches are supported (disable sliding windows)"
            )
    return layers


@dataclass
class BatchCache:
    """One model's KV cache for a batch of rows, with the mask of which slots are real tokens."""

    cache: Any
    """The transformers `DynamicCache` passed as `past_key_values`."""
    valid: torch.Tensor
    """`[batch, slots]` bool: slot j of row i holds a real token of row i."""

    @classmethod
    def empty(cls, model: Any, batch_size: int, device: torch.device | str | None = None) -> "BatchCache":
        """A cache with no tokens for `batch_size` rows of `model`."""
        from transformers import DynamicCache

        device = device if device is not None else next(model.parameters()).device
        cache = DynamicCache(config=model.config)
        _layers(cache)  # fail early on sliding-window / hybrid configs
        return cls(cache=cache, valid=torch.zeros((batch_size, 0), dtype=torch.bool, device=device))

    @property
    def batch_size(self) -> int:
        return self.valid.shape[0]

    @property
    def num_slots(self) -> int:
        """Physical cache length (columns), holes included."""
        return self.valid.shape[1]

    def lengths(self) -> torch.Tensor:
        """`[batch]` long: number of real tokens cached per row."""
        return self.valid.sum(-1)

    def truncate(self, lengths: torch.Tensor | Sequence[int]) -> None:
        """Keep only the first `lengths[i]` real tokens of each row (roll back), then compact.

        A length at or above a row's current length leaves that row unchanged.
        """
        lengths = torch.as_tensor(lengths, device=self.valid.device).view(-1, 1)  # [batch, 1]
        self.valid = self.valid & (self.valid.cumsum(-1) <= lengths)  # [batch, slots]
        self.compact()

    def compact(self) -> None:
        """Re-pack each row's real tokens right-aligned in `max(lengths)` slots, dropping holes.

        A stable sort of the mask lists each row's hole slots first, then its real slots in
        order; the last `max(lengths)` entries are the new layout. When that layout is one
        contiguous slot range for every row, the cache is sliced instead of gathered.
        """
        slots = self.num_slots
        width = int(self.lengths().max()) if self.batch_size else 0
        if width == slots and bool(self.valid.all()):
            return  # no holes
        order = torch.sort(self.valid.to(torch.int8), dim=-1, stable=True).indices[:, slots - width :]  # [batch, width]
        offsets = order - torch.arange(width, device=order.device)  # [batch, width]
        if width == 0 or bool((offsets == offsets[0, 0]).all()):
            first = int(offsets[0, 0]) if width else slots  # every row is the slice [first, first + width)
            self._apply(lambda t: t[:, :, first : first + width])
            self.valid = self.valid[:, first : first + width]
            return
        index = order[:, None, :, None]  # [batch, 1, width, 1]
        self._apply(lambda t: t.gather(2, index.expand(t.shape[0], t.shape[1], width, t.shape[3])))
        self.valid = self.valid.gather(1, order)

    def select_rows(self, rows: torch.Tensor | Sequence[int]) -> None:
        """Keep (or repeat, or reorder) rows by index: finished rows drop out, a row can be branched."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.valid.device)
        self._apply(lambda t: t.index_select(0, rows))
        self.valid = self.valid.index_select(0, rows)
        self.compact()

    def clone(self) -> "BatchCache":
        """An independent copy (new key/value tensors)."""
        from transformers import DynamicCache

        copy = DynamicCache()
        copy.layers = []
        for layer in _layers(self.cache):
            new = type(layer)()
            if layer.is_initialized:
                new.lazy_initialization(layer.keys, layer.values)
                new.keys, new.values = layer.keys.clone(), layer.values.clone()
            copy.layers.append(new)
        return BatchCache(cache=copy, valid=self.valid.clone())

    def _apply(self, fn: Any) -> None:
        """Replace every layer's keys and values `[batch, heads, slots, head_dim]` by `fn(tensor)`."""
        for layer in _layers(self.cache):
            if layer.is_initialized and layer.keys.numel():
                layer.keys = fn(layer.keys)
                layer.values = fn(layer.values)


def position_ids_for(cache: BatchCache, input_mask: torch.Tensor) -> torch.Tensor:
    """`[batch, q]` logical positions of new inputs: cached real tokens + running count (holes get 0)."""
    positions = cache.lengths()[:, None] + input_mask.long().cumsum(-1) - 1  # [batch, q]
    return positions.clamp_min(0)


@torch.no_grad()
def cached_forward(
    model: Any,
    cache: BatchCache,
    input_ids: torch.Tensor,
    input_mask: torch.Tensor | None = None,
    last: int | None = None,
) -> ForwardOutput:
    """Run `model` on new tokens after the cached ones and append them to the cache.

    input_ids: `[batch, q]` new tokens; input_mask: `[batch, q]` bool, False for padding
    (None = all real). last: return outputs for the last `last` positions only (None = all q).
    The LM head runs only on those positions.
    """
    batch, width = input_ids.shape  # [batch, q]
    if input_mask is None:
        input_mask = torch.ones((batch, width), dtype=torch.bool, device=input_ids.device)
    positions = position_ids_for(cache, input_mask)  # [batch, q]
    valid = torch.cat([cache.valid, input_mask], dim=1)  # [batch, slots + q]
    # Without holes the plain causal mask is right; passing None lets attention skip building one.
    attention_mask = None if bool(valid.all()) else valid.long()
    hidden = model.base_model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        past_key_values=cache.cache,
        use_cache=True,
    ).last_hidden_state  # [batch, q, hidden]
    cache.valid = valid
    if last is not None:
        hidden = hidden[:, width - last :]  # [batch, last, hidden]
    logits = model.get_output_embeddings()(hidden)  # [batch, last, vocab]
    return ForwardOutput(logits=logits, hidden=hidden)


def truncate_logits(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Drop padded vocabulary columns beyond `vocab_size` (models may pad their embedding matrix)."""
    return logits[..., :vocab_size] if logits.shape[-1] > vocab_size else logits


__all__ = [
    "BatchCache",
    "CacheLayoutError",
    "ForwardOutput",
    "cached_forward",
    "left_pad",
    "position_ids_for",
    "truncate_logits",
]
