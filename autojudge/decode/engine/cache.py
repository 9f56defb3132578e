"""The KV cache: one static slot per row, each row with its own length, and one batched forward over it.

This is the project's one cache. The engine core (`core.py`) and the semi-greedy search
(`search.py`) both keep many sequences in flight on one model replica; each sequence owns
one row (a *slot*) of a `RowKVCache`, and rows advance, roll back, join and leave
independently:

- storage per layer is static: keys/values `[rows, kv_heads, capacity, head_dim]`; the slot
  of a token is its position in its own sequence, so a row's valid cache is slots
  `[0, length)`, rolling back is `length = n` and freeing a row is `length = 0` (no copy,
  no compaction, nothing else in the batch moves);
- `forward_rows` feeds a chunk of new tokens to a subset of rows at once. Chunks are
  right-padded to the longest; a padded token writes its key/value to a trash slot (the
  last one, never attended) and its outputs are dropped. A 4-D additive mask lets query j
  of row r attend to slots `<= length_r + j` of its own row only, so a row's outputs do
  not depend on the other rows in the batch.

The object implements the `update(key, value, layer_idx)` protocol that Hugging Face
attention layers call on their `cache` argument, so decoders that use it (Llama, Mistral,
Qwen2, GPT-2, ...) work. Positions are passed explicitly (`position_ids`), so rotary and
learned position embeddings see each row's own positions. Sliding-window and hybrid
(linear-attention) layers are refused: a static full-attention layout is what makes
per-row roll-back free.

Outputs (`RowOutput`) are the last hidden state after the final norm (the LM head's input,
the judge's features), the greedy next token at each fed position, and optionally the logits.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from autojudge.decode.engine.lean import lean_decoder, write_and_read_rows


class CacheLayoutError(RuntimeError):
    """The model cannot use a static full-attention per-row cache (sliding window, linear attention)."""


@dataclass
class RowOutput:
    """What one row gets back from a batched forward, for its last `n` fed positions."""

    argmax: list[int]
    """Greedy next token after each returned position (len n)."""
    hidden: torch.Tensor
    """Last hidden state (after the final norm) at each returned position, `[n, hidden_size]`."""
    logits: torch.Tensor | None = None
    """LM-head logits at each returned position, `[n, vocab]`, when asked for."""


def check_cache_layout(config: Any) -> None:
    """Raise `CacheLayoutError` for configs whose layers are not all plain full attention."""
    layer_types = getattr(config, "layer_types", None) or []
    odd = sorted({str(kind) for kind in layer_types if kind != "full_attention"})
    sliding = getattr(config, "use_sliding_window", False) and getattr(config, "sliding_window", None)
    if odd or sliding:
        raise CacheLayoutError(
            f"{getattr(config, 'model_type', 'this model')}: layers of type {odd or ['sliding_attention']} cannot use "
            "a static per-row cache; only full-attention decoders are supported (disable sliding windows)"
        )


class RowKVCache:
    """Static per-row KV cache for one model; see the module docstring."""

    def __init__(self, model: Any, num_rows: int, capacity: int) -> None:
        config = model.config
        check_cache_layout(config)
        param = next(model.parameters())
        num_layers = config.num_hidden_layers
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        self.capacity = capacity + 1  # + the trash slot
        self.trash_slot = capacity
        shape = (num_rows, kv_heads, self.capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=param.dtype, device=param.device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=param.dtype, device=param.device) for _ in range(num_layers)]
        self.lengths = [0] * num_rows
        """Valid cached tokens per row."""
        self.shared: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        """Keys and values per layer `[kv_heads, P, head_dim]` of a prefix rows share (`SharedPrefix`), or None."""
        self.shared_rows = [False] * num_rows
        """Per row: its first `shared_length` slots hold the shared prefix (attention reads it once for all such rows)."""
        # state of the forward pass in progress (set by `forward_rows`)
        self._rows: torch.Tensor | None = None  # [b]
        self._row_range: slice | None = None  # set when the batch is a contiguous range of rows
        self._write_index: torch.Tensor | None = None  # [b * kv_heads * C]: flat (row, head, slot) of each fed key
        self._kv_len = 0
        self._shared_active = False  # this forward reads the shared prefix once (set by `forward_rows`)

    @property
    def num_rows(self) -> int:
        return len(self.lengths)

    # -- the Hugging Face cache protocol -------------------------------------------------
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any):
        """Write this chunk's keys/values `[b, kv_heads, C, head_dim]`; return the rows' caches."""
        assert self._rows is not None and self._write_index is not None, "update() outside forward_rows()"
        low, high = self.row_span()
        return write_and_read_rows(
            self.keys[layer_idx], self.values[layer_idx], key_states, value_states, self._write_index, self._rows, low, high, self._kv_len
        )

    def row_span(self) -> tuple[int, int]:
        """The forward's rows as a range `(low, high)`, or `(-1, -1)` when they are gathered by index."""
        return (self._row_range.start, self._row_range.stop) if self._row_range is not None else (-1, -1)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._kv_len

    # -- row management -------------------------------------------------------------------
    def grow(self, capacity: int, num_rows: int | None = None) -> None:
        """Make room for sequences of `capacity` tokens and for `num_rows` rows (what is cached is kept)."""
        num_rows = self.num_rows if num_rows is None else max(num_rows, self.num_rows)
        if capacity + 1 <= self.capacity and num_rows == self.num_rows:
            return
        capacity = max(capacity, self.trash_slot)
        old_rows, old_slots = self.num_rows, self.trash_slot
        for buffers in (self.keys, self.values):
            for layer, old in enumerate(buffers):
                _, heads, _, head_dim = old.shape
                new = torch.zeros((num_rows, heads, capacity + 1, head_dim), dtype=old.dtype, device=old.device)
                new[:old_rows, :, :old_slots] = old[:, :, :old_slots]
                buffers[layer] = new
        self.lengths += [0] * (num_rows - old_rows)
        self.shared_rows += [False] * (num_rows - old_rows)
        self.capacity = capacity + 1
        self.trash_slot = capacity

    def truncate(self, row: int, length: int) -> None:
        """Roll a row back to its first `length` tokens (a longer `length` changes nothing)."""
        self.lengths[row] = min(self.lengths[row], length)
        if self.lengths[row] < self.shared_length:
            self.shared_rows[row] = False

    def reset(self, row: int) -> None:
        """Free a row for a new sequence."""
        self.lengths[row] = 0
        self.shared_rows[row] = False

    @property
    def shared_length(self) -> int:
        """Tokens of the shared prefix (0: none)."""
        return 0 if self.shared is None else int(self.shared[0][0].shape[1])

    def snapshot_row(self, row: int, length: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Copies of a row's first `length` keys and values per layer, `[kv_heads, length, head_dim]`."""
        return [k[row, :, :length].clone() for k in self.keys], [v[row, :, :length].clone() for v in self.values]

    def load_row(self, row: int, snapshot: tuple[list[torch.Tensor], list[torch.Tensor]], length: int, shared: bool = False) -> None:
        """Make a row hold the first `length` tokens of a snapshot (`snapshot_row`), nothing after. With
        `shared` (the whole snapshot), the row is marked as starting with the cache's shared prefix, which
        becomes this snapshot: forwards whose rows all start with it attend to it once (`lean.prefix_attention`)."""
        for buffers, stored in zip((self.keys, self.values), snapshot):
            for layer, tensor in zip(buffers, stored):
                layer[row, :, :length] = tensor[:, :length]
        self.lengths[row] = length
        self.shared_rows[row] = False
        if shared and length == int(snapshot[0][0].shape[1]):
            if self.shared is not snapshot:
                self.shared = snapshot
                self.shared_rows = [False] * self.num_rows
            self.shared_rows[row] = True


@torch.inference_mode()
def forward_rows(
    model: Any,
    cache: RowKVCache,
    rows: Sequence[int],
    chunks: Sequence[Sequence[int]],
    pad_token_id: int = 0,
    last: Sequence[int] | None = None,
    with_logits: bool = False,
    vocab_size: int | None = None,
    overhead_tokens: int | None = None,
) -> list[RowOutput]:
    """Feed `chunks[i]` to cache row `rows[i]` (appended after its valid length), all in one
    forward pass; return per row the outputs at its last `last[i]` fed positions (all of them
    when `last` is None): greedy next tokens, hidden states and, with `with_logits`, logits.
    `vocab_size` drops padded vocabulary columns (a draft's) before the argmax.

    With `overhead_tokens` (the fixed cost of one forward call in fed tokens, e.g.
    `FORWARD_OVERHEAD_TOKENS`), rows are grouped by chunk length (`group_by_length`) and each
    group runs in a forward of its own: a new row's prompt does not pad every one-token row of
    the batch to its length. Outputs stay in the order of `rows` either way.

    When the rows span a range at most twice their number, the whole range runs (idle rows
    feed only padding) so attention reads the cache as a view instead of gathering rows."""
    if overhead_tokens is not None:
        groups = group_by_length(list(range(len(rows))), [len(chunk) for chunk in chunks], overhead_tokens)
        if len(groups) > 1:
            outputs: dict[int, RowOutput] = {}
            for group in groups:
                picked = forward_rows(
                    model, cache, [rows[i] for i in group], [chunks[i] for i in group], pad_token_id,
                    None if last is None else [last[i] for i in group], with_logits, vocab_size,
                )  # fmt: skip
                outputs.update(zip(group, picked))
            return [outputs[i] for i in range(len(rows))]
    requested = {row: (list(chunk), len(chunk) if last is None else min(last[i], len(chunk))) for i, (row, chunk) in enumerate(zip(rows, chunks))}
    if not requested:
        return []
    low, high = min(requested), max(requested) + 1
    use_range = high - low <= 2 * len(requested)
    batch_rows = list(range(low, high)) if use_range else list(requested)
    batch_chunks = [requested[row][0] if row in requested else [] for row in batch_rows]
    device = cache.keys[0].device
    lengths = [len(chunk) for chunk in batch_chunks]
    row_starts = [cache.lengths[row] for row in batch_rows]
    width = max(max(lengths), 1)
    kv_len = max((start + size for start, size in zip(row_starts, lengths) if size > 0), default=1)
    if kv_len > cache.trash_slot:
        raise ValueError(f"sequence of {kv_len} tokens is longer than the cache capacity {cache.trash_slot}")
    # per-row positions (padding: the row's start) and cache slots (padding: the trash slot), built as lists
    positions = [[start + j if j < size else start for j in range(width)] for start, size in zip(row_starts, lengths)]
    slots = [[start + j if j < size else cache.trash_slot for j in range(width)] for start, size in zip(row_starts, lengths)]
    input_ids = torch.tensor([chunk + [pad_token_id] * (width - len(chunk)) for chunk in batch_chunks], device=device)  # [b, C]
    position_ids = torch.tensor(positions, device=device)  # [b, C]
    lean = lean_decoder(model)
    if lean is not None and len(batch_rows) == 1 and width == 1:
        mask = None  # one query at the end of one row attends to every valid slot: no mask needed
    else:
        dtype = cache.keys[0].dtype
        allowed = torch.arange(kv_len, device=device)[None, None, :] <= position_ids[:, :, None]  # [b, C, S]
        mask = torch.where(allowed, 0.0, torch.finfo(dtype).min).to(dtype)[:, None]  # additive, [b, 1, C, S]

    cache._rows = torch.tensor(batch_rows, device=device)
    cache._row_range = slice(low, high) if use_range else None
    kv_heads = cache.keys[0].shape[1]
    heads = torch.arange(kv_heads, device=device)
    cache._write_index = (
        (cache._rows[:, None, None] * kv_heads + heads[None, :, None]) * cache.capacity + torch.tensor(slots, device=device)[:, None, :]
    ).reshape(-1)  # [b, kv_heads, C] flattened, the order of key_states.reshape(-1, head_dim)
    cache._kv_len = kv_len
    # rows that all start with the shared prefix, fed after it: attention reads the prefix once for all of them
    cache._shared_active = (
        cache.shared is not None and lean is not None and len(batch_rows) > 1
        and all(cache.shared_rows[row] for row in requested)
        and min(cache.lengths[row] for row in requested) >= cache.shared_length
    )  # fmt: skip
    # with padding, the lean forward runs the position-wise layers on the real tokens only (packed)
    packed = lean is not None and sum(lengths) < len(batch_rows) * width
    try:
        if lean is not None:  # the same function with fewer operators (`lean.py`)
            real = torch.tensor([index * width + j for index, size in enumerate(lengths) for j in range(size)], device=device) if packed else None
            hidden = lean(cache, input_ids, position_ids, mask, max(max(p) for p in positions), real)
        else:
            hidden = model.base_model(
                input_ids=input_ids,
                attention_mask=mask,  # [b, 1, C, S]
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
            ).last_hidden_state  # [b, C, H]
    finally:
        cache._rows = cache._write_index = None
        cache._shared_active = False
    # the positions whose outputs are returned: the last n of each requested row's chunk
    starts = list(itertools.accumulate(lengths, initial=0)) if packed else [index * width for index in range(len(batch_rows))]
    picks = [
        starts[index] + position
        for index, row in enumerate(batch_rows)
        if row in requested
        for position in range(lengths[index] - requested[row][1], lengths[index])
    ]
    flat = hidden.reshape(-1, hidden.shape[-1])  # [b * C, H], or [real tokens, H] when packed
    picked = flat[picks[0] : picks[0] + 1] if len(picks) == 1 else flat.index_select(0, torch.tensor(picks, device=device))
    logits = (lean.head if lean is not None else model.get_output_embeddings())(picked)  # [n_returned, V]
    if vocab_size is not None:
        logits = truncate_logits(logits, vocab_size)
    argmax = logits.argmax(-1).tolist()
    results: dict[int, RowOutput] = {}
    offset = 0
    for index, row in enumerate(batch_rows):
        if row not in requested:
            continue
        cache.lengths[row] += lengths[index]
        n = requested[row][1]
        results[row] = RowOutput(
            argmax=argmax[offset : offset + n],
            hidden=picked[offset : offset + n],
            logits=logits[offset : offset + n] if with_logits else None,
        )
        offset += n
    return [results[row] for row in rows]


class SharedPrefix:
    """Keys and values of a token prefix that many sequences start with (a few-shot header),
    computed once per model and copied into each new row instead of being recomputed.

    `load` makes a fresh row hold the longest common prefix of `tokens` and the row's prompt
    (at most the prompt minus its last token, so the row still feeds one token and gets the
    outputs at the prompt's end). The copy is the same computation as a row's own prefill up
    to float rounding (the prefix runs in a forward of its own shape)."""

    def __init__(self, tokens: Sequence[int]) -> None:
        self.tokens = [int(token) for token in tokens]
        self._snapshots: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        self.loaded_tokens = 0
        """Prompt tokens not fed because they were copied (for profiling)."""

    def length_for(self, prompt: Sequence[int]) -> int:
        """How many leading tokens of `prompt` can be copied."""
        limit = min(len(self.tokens), len(prompt) - 1)
        n = 0
        while n < limit and self.tokens[n] == prompt[n]:
            n += 1
        return n

    def load(self, model: Any, cache: RowKVCache, row: int, prompt: Sequence[int], pad_token_id: int = 0) -> int:
        """Reset `row` and copy the shared part of `prompt` into it; returns its length (0: nothing shared)."""
        cache.reset(row)
        n = self.length_for(prompt)
        if n == 0:
            return 0
        snapshot = self._snapshots.get(id(model))
        if snapshot is None:  # first use on this model: one forward of the prefix on this row
            forward_rows(model, cache, [row], [self.tokens], pad_token_id, last=[1])
            snapshot = self._snapshots[id(model)] = cache.snapshot_row(row, len(self.tokens))
        cache.load_row(row, snapshot, n, shared=True)
        self.loaded_tokens += n
        return n


def group_by_length(rows: list[int], lengths: list[int], overhead_tokens: int) -> list[list[int]]:
    """Split rows into forward groups minimising sum(overhead + rows x longest chunk):
    one long chunk (a verification) should not pad many one-token steps to its length."""
    order = sorted(range(len(rows)), key=lambda i: lengths[i])
    best = [0.0] + [float("inf")] * len(order)  # best[j]: cost of grouping the j shortest
    cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        longest = lengths[order[end - 1]]
        for begin in range(end):
            cost = best[begin] + overhead_tokens + (end - begin) * longest
            if cost < best[end]:
                best[end], cut[end] = cost, begin
    groups = []
    end = len(order)
    while end > 0:
        groups.append(sorted(rows[i] for i in order[cut[end] : end]))
        end = cut[end]
    return groups[::-1]


FORWARD_OVERHEAD_TOKENS = 64
"""Default fixed cost of one forward call, in fed tokens (`forward_rows(overhead_tokens=...)`, `group_by_length`):
a batch splits where padding every row to the longest chunk would cost more than one more call."""


def truncate_logits(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Drop padded vocabulary columns beyond `vocab_size` (models may pad their embedding matrix)."""
    return logits[..., :vocab_size] if logits.shape[-1] > vocab_size else logits


__all__ = [
    "FORWARD_OVERHEAD_TOKENS",
    "CacheLayoutError",
    "RowKVCache",
    "RowOutput",
    "SharedPrefix",
    "check_cache_layout",
    "forward_rows",
    "group_by_length",
    "truncate_logits",
]
