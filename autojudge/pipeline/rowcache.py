"""A batched KV cache where every row has its own length, and one batched forward over it.

The fast miner (`search_fast.py`) keeps many searches in flight on one model replica.
Each search owns one row of a `RowKVCache`; rows advance, and roll back, independently:

- storage per layer is static: keys/values `[rows, kv_heads, capacity, head_dim]`;
  the slot of a token is its position in its own sequence, so a row's valid cache is
  slots `[0, length)` and rolling back is `length = n` (no copy, no compaction);
- `forward_rows` feeds a chunk of new tokens to a subset of rows at once. Chunks are
  right-padded to the longest; a padded token writes its key/value to a trash slot
  (the last one, never attended) and its outputs are dropped. A custom 4-D additive
  mask lets query j of row r attend to slots `<= length_r + j` of its own row.

The object implements the `update(key, value, layer_idx)` protocol that Hugging Face
attention layers call on `past_key_values`, so any decoder that uses it (Llama,
Mistral, Qwen, ...) works. Positions are passed explicitly (`position_ids`), so RoPE
sees each row's own positions.

(A shared decode-engine helper, `autojudge/decode/forward.py`, was planned but had not
landed when the miner was written; this module is self-contained.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class RowOutput:
    """What one row gets back from a batched forward."""

    argmax: list[int]
    """Greedy next token after each fed token (len = number of fed tokens)."""
    hidden: torch.Tensor
    """Last hidden state (after the final norm) at each fed position, [n_fed, hidden_size]."""


class RowKVCache:
    """Static per-row KV cache for one model; see the module docstring."""

    def __init__(self, model: Any, num_rows: int, capacity: int) -> None:
        config = model.config
        param = next(model.parameters())
        num_layers = config.num_hidden_layers
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.capacity = capacity + 1  # + the trash slot
        self.trash_slot = capacity
        shape = (num_rows, kv_heads, self.capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=param.dtype, device=param.device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=param.dtype, device=param.device) for _ in range(num_layers)]
        self.lengths = [0] * num_rows
        """Valid cached tokens per row."""
        # state of the forward pass in progress (set by `forward_rows`)
        self._rows: torch.Tensor | None = None  # [b]
        self._row_range: slice | None = None  # set when the batch is a contiguous range of rows
        self._write_slots: torch.Tensor | None = None  # [b, C]
        self._write_index: torch.Tensor | None = None  # [b * kv_heads * C]: flat (row, head, slot) of each fed key
        self._kv_len = 0

    # -- the Hugging Face cache protocol -------------------------------------------------
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any):
        """Write this chunk's keys/values [b, kv_heads, C, head_dim]; return the rows' caches."""
        assert self._rows is not None and self._write_index is not None
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        head_dim = keys.shape[-1]
        # one flat index_copy_ per buffer (much cheaper than a broadcast advanced-index put)
        keys.view(-1, head_dim).index_copy_(0, self._write_index, key_states.reshape(-1, head_dim))
        values.view(-1, head_dim).index_copy_(0, self._write_index, value_states.reshape(-1, head_dim))
        if self._row_range is not None:  # a view, no copy
            return keys[self._row_range, :, : self._kv_len], values[self._row_range, :, : self._kv_len]
        # index_select on the sliced view: a gather of only the valid slots (faster than keys[rows, :, :S])
        return keys[:, :, : self._kv_len].index_select(0, self._rows), values[:, :, : self._kv_len].index_select(0, self._rows)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._kv_len

    # -- row management -------------------------------------------------------------------
    def grow(self, capacity: int) -> None:
        """Make room for sequences of `capacity` tokens (valid slots are copied over)."""
        if capacity + 1 <= self.capacity:
            return
        old_slots = self.trash_slot
        for buffers in (self.keys, self.values):
            for layer, old in enumerate(buffers):
                rows, heads, _, head_dim = old.shape
                new = torch.zeros((rows, heads, capacity + 1, head_dim), dtype=old.dtype, device=old.device)
                new[:, :, :old_slots] = old[:, :, :old_slots]
                buffers[layer] = new
        self.capacity = capacity + 1
        self.trash_slot = capacity

    def truncate(self, row: int, length: int) -> None:
        """Roll a row back to its first `length` tokens."""
        self.lengths[row] = min(self.lengths[row], length)

    def reset(self, row: int) -> None:
        """Free a row for a new sequence."""
        self.lengths[row] = 0


@torch.inference_mode()
def forward_rows(
    model: Any, cache: RowKVCache, rows: list[int], chunks: list[list[int]], pad_token_id: int = 0
) -> list[RowOutput]:
    """Feed `chunks[i]` to cache row `rows[i]` (appended after its valid length), all in one
    forward pass; return per row the greedy next tokens and last hidden states.

    When the rows span a range at most twice their number, the whole range runs (idle rows
    feed only padding) so attention reads the cache as a view instead of gathering rows."""
    requested = dict(zip(rows, chunks))
    low, high = min(rows), max(rows) + 1
    use_range = high - low <= 2 * len(rows)
    if use_range:
        rows = list(range(low, high))
        chunks = [requested.get(row, []) for row in rows]
    device = cache.keys[0].device
    lengths = [len(chunk) for chunk in chunks]
    row_starts = [cache.lengths[row] for row in rows]
    width = max(lengths)
    ends = [start + size for start, size in zip(row_starts, lengths) if size > 0]
    kv_len = max(ends, default=1)
    if kv_len > cache.trash_slot:
        raise ValueError(f"sequence longer than the cache capacity {cache.trash_slot}")
    sizes = torch.tensor(lengths, device=device)  # [b]
    starts = torch.tensor(row_starts, device=device)  # [b]
    padded = [chunk + [pad_token_id] * (width - len(chunk)) for chunk in chunks]
    input_ids = torch.tensor(padded, dtype=torch.long, device=device)  # [b, C]
    offsets = torch.arange(width, device=device)  # [C]
    positions = starts[:, None] + offsets[None, :]  # [b, C]
    real = offsets[None, :] < sizes[:, None]  # [b, C]
    slots = torch.arange(kv_len, device=device)  # [S]
    allowed = slots[None, None, :] <= positions[:, :, None]  # [b, C, S]
    dtype = cache.keys[0].dtype
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)

    cache._rows = torch.tensor(rows, device=device)
    cache._row_range = slice(low, high) if use_range else None
    cache._write_slots = torch.where(real, positions, torch.full_like(positions, cache.trash_slot))
    kv_heads = cache.keys[0].shape[1]
    heads = torch.arange(kv_heads, device=device)
    cache._write_index = (
        (cache._rows[:, None, None] * kv_heads + heads[None, :, None]) * cache.capacity + cache._write_slots[:, None, :]
    ).reshape(-1)  # [b, kv_heads, C] flattened, the order of key_states.reshape(-1, head_dim)
    cache._kv_len = kv_len
    try:
        out = model.base_model(
            input_ids=input_ids,
            attention_mask=mask[:, None],  # [b, 1, C, S]
            position_ids=torch.where(real, positions, starts[:, None]),
            past_key_values=cache,
            use_cache=True,
        )
    finally:
        cache._rows = cache._write_slots = cache._write_index = None
    hidden = out.last_hidden_state  # [b, C, H]
    real_hidden = hidden[real]  # [n_real, H], rows in order, each row's tokens in order
    argmax = model.get_output_embeddings()(real_hidden).argmax(-1).tolist()  # [n_real]
    results = {}
    offset = 0
    for i, row in enumerate(rows):
        n = len(chunks[i])
        if row in requested:
            cache.lengths[row] += n
            results[row] = RowOutput(argmax=argmax[offset : offset + n], hidden=real_hidden[offset : offset + n])
        offset += n
    return [results[row] for row in requested]
