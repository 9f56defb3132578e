"""Hogwild!'s shared KV cache (arXiv 2504.06261): blocks of keys and values, and one forward over them.

Design. The cache is a list of *blocks*: the prompt, then one block per worker (its
header, e.g. "\\n\\n**Alice:** ", then its own tokens). Every token's keys and values
are computed once, by the worker that fed it, and stored once, in its block, with the
keys rotated (RoPE) at their position *relative to the block start*. A worker's *view*
is an ordering of the blocks - the paper's layout: prompt, the other workers' blocks,
its own block last, so its text stays contiguous with its next token. A block placed at
offset `off` in a view has its tokens at positions `off + rel`.

Rotation instead of recomputation. RoPE scores depend only on relative positions:
`<R(p) q, R(s) k> = <R(p - off) q, R(s - off) k>`. With keys stored as `R(rel) k`, a
query at view position p attends block b (at offset off_b) with the query rotated by
`p - off_b`: one small rotation of the queries per block and step, no key is touched
when the layout changes (blocks grow, workers finish). `SharedCache.view_keys_values`
does the other (equivalent) thing - rotates a block's stored keys by its offset - to
materialise a view for the tests' reference forward.

One step (`forward_feeds`): every active worker feeds its new tokens (usually its last
generated token); one batched pass over the model's layers computes them all. In each
layer all workers' new keys/values are written first, then each worker attends over its
view: other blocks in full (so a worker sees the others' tokens of this very step), its
own block causally. The layers are the engine's lean forward (`decode.engine.lean`, the
package's one hand-written Llama-family forward) with this attention in place of the
per-row cache's; the models it supports are the lean forward's (`lean_unsupported_reason`:
Llama, Mistral and Qwen2 decoders with a fixed RoPE and no sliding windows); anything else
is refused with `UnsupportedModelError`.

What is exact. With one worker a step is an ordinary cached forward: the logits equal a
from-scratch forward and greedy output equals `generate`. With several workers, each
token's keys/values at layers >= 1 depend on the view of the worker that computed them
(that is the method: nothing is recomputed), so a from-scratch forward over another
worker's view differs - except in a one-layer model, where keys/values depend on the
token alone and every worker's logits equal a from-scratch forward over its view. For
deeper models the tests check the logits against transformers' forward over the view
laid out contiguously with the stored keys/values (see tests/test_hogwild.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from autojudge.decode.engine.lean import LeanDecoder, lean_forward, lean_unsupported_reason, rotate
from autojudge.errors import ModelPairError


class UnsupportedModelError(ModelPairError):
    """The model is not a decoder the lean forward computes (a Llama-family model with a fixed RoPE)."""


def check_supported(model: Any, name: str = "model") -> None:
    """Raise UnsupportedModelError unless the lean forward supports `model` (`lean_unsupported_reason`)."""
    reason = lean_unsupported_reason(model)
    if reason is not None:
        raise UnsupportedModelError(f"{name}: hogwild needs a Llama-family decoder with rotary positions: {reason}")


def hogwild_decoder(model: Any, name: str = "model") -> LeanDecoder:
    """The lean forward of `model` (checked first) that a `SharedCache` runs its steps with."""
    check_supported(model, name)
    return lean_forward(model)


# ---------------------------------------------------------------------------------------------
# The shared cache: blocks of keys (rotated at block-relative positions) and values
# ---------------------------------------------------------------------------------------------


@dataclass
class Block:
    """One contiguous run of tokens in the shared cache (the prompt, or one worker's text)."""

    name: str
    """What the block holds ("prompt", a worker's name)."""
    keys: torch.Tensor
    """`[layers, kv_heads, capacity, head_dim]`: keys rotated to their block-relative position."""
    values: torch.Tensor
    """`[layers, kv_heads, capacity, head_dim]`."""
    token_ids: list[int] = field(default_factory=list)
    """The tokens cached in this block, in order (its length is the block's length)."""

    @property
    def length(self) -> int:
        return len(self.token_ids)

    def reserve(self, extra: int) -> None:
        """Grow the storage (doubling) so that `extra` more tokens fit."""
        needed = self.length + extra
        capacity = self.keys.shape[2]
        if needed <= capacity:
            return
        new_capacity = max(needed, 2 * capacity, 16)
        shape = (self.keys.shape[0], self.keys.shape[1], new_capacity, self.keys.shape[3])
        for attribute in ("keys", "values"):
            old = getattr(self, attribute)
            grown = old.new_zeros(shape)
            grown[:, :, :capacity] = old
            setattr(self, attribute, grown)


class SharedCache:
    """All blocks of one Hogwild! generation; views are lists of block indices."""

    def __init__(self, decoder: LeanDecoder):
        self.decoder = decoder
        self.blocks: list[Block] = []

    def add_block(self, name: str) -> int:
        """A new empty block; returns its index."""
        d = self.decoder
        empty = torch.zeros((len(d.layers), d.kv_heads, 0, d.head_dim), dtype=d.dtype, device=d.device)
        self.blocks.append(Block(name=name, keys=empty, values=empty.clone()))
        return len(self.blocks) - 1

    def offsets(self, view: Sequence[int]) -> dict[int, int]:
        """Start position of each block of `view` when the view is laid out contiguously."""
        offsets, position = {}, 0
        for index in view:
            if index in offsets:
                raise ValueError(f"block {index} appears twice in view {list(view)}")
            offsets[index] = position
            position += self.blocks[index].length
        return offsets

    def view_token_ids(self, view: Sequence[int]) -> list[int]:
        """The tokens of `view` laid out contiguously (what a from-scratch forward would read)."""
        return [token for index in view for token in self.blocks[index].token_ids]

    def view_keys_values(self, view: Sequence[int], layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys `[kv_heads, T, head_dim]` at contiguous view positions (each block's stored keys
        rotated by its offset: R(off) R(rel) = R(off + rel)) and values, for a reference forward."""
        keys, values = [], []
        offsets = self.offsets(view)
        for index in view:
            block = self.blocks[index]
            stored = block.keys[layer, :, : block.length][None]  # [1, kv_heads, T_b, head_dim]
            shift = torch.full((1, block.length), offsets[index], dtype=torch.long, device=stored.device)
            keys.append(rotate(stored, *self.decoder.rotation(shift, stored.dtype))[0])
            values.append(block.values[layer, :, : block.length])
        return torch.cat(keys, dim=1), torch.cat(values, dim=1)


@dataclass
class Feed:
    """New tokens of one block for one step, and the view they attend over."""

    block: int
    """Index of the block the tokens are appended to (the feeding worker's own block)."""
    token_ids: list[int]
    """The tokens (at least one)."""
    view: list[int]
    """Block order of the feeding worker's view; must end with `block`."""

# ---------------------------------------------------------------------------------------------
# The block forward: one batched pass over the layers for all feeds
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def forward_feeds(cache: SharedCache, feeds: Sequence[Feed]) -> torch.Tensor:
    """Append every feed's tokens to its block and return the logits after each feed's last
    token, `[len(feeds), vocab]` (float32)."""
    d = cache.decoder
    for feed in feeds:
        if not feed.token_ids:
            raise ValueError(f"feed for block {feed.block} has no tokens")
        if not feed.view or feed.view[-1] != feed.block:
            raise ValueError(f"the view of block {feed.block} must end with that block, got {feed.view}")
    if len({feed.block for feed in feeds}) != len(feeds):
        raise ValueError("two feeds write to the same block in one step")
    rows, width = len(feeds), max(len(feed.token_ids) for feed in feeds)
    counts = torch.tensor([len(feed.token_ids) for feed in feeds], device=d.device)  # [rows]
    starts = [cache.blocks[feed.block].length for feed in feeds]  # block-relative position of each feed's first token
    ids = torch.zeros((rows, width), dtype=torch.long, device=d.device)
    for row, feed in enumerate(feeds):
        ids[row, : len(feed.token_ids)] = torch.as_tensor(feed.token_ids, device=d.device)
    # Padded query slots repeat the row's last real position, so they never see an empty row.
    slot = torch.minimum(torch.arange(width, device=d.device)[None, :], counts[:, None] - 1)  # [rows, width]
    relative = torch.as_tensor(starts, device=d.device)[:, None] + slot  # [rows, width] block-relative positions
    for feed in feeds:
        cache.blocks[feed.block].reserve(len(feed.token_ids))
    lengths_after = [block.length for block in cache.blocks]
    for feed in feeds:
        lengths_after[feed.block] += len(feed.token_ids)
    layout = _view_layout(cache, feeds, lengths_after, relative)
    key_cos, key_sin = d.rotation(relative, d.dtype)  # computed once per step, shared by all layers
    heads = d.heads

    def attend(layer: int, qk: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        k = rotate(qk[:, heads:], key_cos, key_sin)  # keys at block-relative positions
        _write_keys_values(cache, feeds, starts, layer, k, v)
        return _view_attention(cache, layout, layer, qk[:, :heads], lengths_after)  # [rows, H, width, hd]

    hidden = d.forward_attending(ids, attend)  # [rows, width, hidden], after the final norm
    for feed in feeds:
        cache.blocks[feed.block].token_ids.extend(feed.token_ids)
    last = hidden[torch.arange(rows, device=d.device), counts - 1]  # [rows, hidden]
    return d.head(last).float()  # [rows, vocab]


@dataclass
class _Layout:
    """Per step: which blocks each row sees, at which offsets, and the attention mask."""

    blocks: list[int]
    """Blocks visible to at least one row (the order of the key columns)."""
    query_rotation: list[tuple[torch.Tensor, torch.Tensor]]
    """Per visible block, cos/sin that rotate the queries to (query position - block offset)."""
    bias: torch.Tensor
    """`[rows, 1, 1, width, total_keys]`: 0 where the query may attend to the key column, -inf elsewhere."""


def _view_layout(cache: SharedCache, feeds: Sequence[Feed], lengths_after: list[int], relative: torch.Tensor) -> _Layout:
    """Offsets of every block in every row's view (with this step's tokens appended) and the mask."""
    device = relative.device
    rows, width = relative.shape
    visible = sorted({index for feed in feeds for index in feed.view})
    query_shift, masks = [], []
    for index in visible:
        shift = torch.zeros((rows, width), dtype=torch.long, device=device)
        mask = torch.zeros((rows, width, lengths_after[index]), dtype=torch.bool, device=device)
        key_positions = torch.arange(lengths_after[index], device=device)  # [T_b]
        for row, feed in enumerate(feeds):
            if index not in feed.view:
                continue
            place = feed.view.index(index)  # the view's layout with this step's lengths
            offset = sum(lengths_after[other] for other in feed.view[:place])
            own_offset = sum(lengths_after[other] for other in feed.view[:-1])
            query_position = own_offset + relative[row]  # [width] view positions of the row's queries
            shift[row] = query_position - offset
            if index == feed.block:
                mask[row] = key_positions[None, :] <= relative[row][:, None]  # own block: causal
            else:
                mask[row] = True  # another block of the view: all of it, this step's tokens included
        query_shift.append(shift)
        masks.append(mask)
    rotations = [cache.decoder.rotation(shift, cache.decoder.dtype) for shift in query_shift]
    mask = torch.cat(masks, dim=-1)  # [rows, width, total_keys]
    bias = torch.zeros(mask.shape, dtype=cache.decoder.dtype, device=device).masked_fill(~mask, float("-inf"))
    return _Layout(blocks=visible, query_rotation=rotations, bias=bias[:, None, None])


def _write_keys_values(
    cache: SharedCache, feeds: Sequence[Feed], starts: list[int], layer: int, k: torch.Tensor, v: torch.Tensor
) -> None:
    """Store each row's real (unpadded) new keys/values `[rows, KVH, width, hd]` in its block at `layer`."""
    for row, feed in enumerate(feeds):
        block, n = cache.blocks[feed.block], len(feed.token_ids)
        block.keys[layer, :, starts[row] : starts[row] + n] = k[row, :, :n]
        block.values[layer, :, starts[row] : starts[row] + n] = v[row, :, :n]


def _view_attention(
    cache: SharedCache, layout: _Layout, layer: int, q: torch.Tensor, lengths_after: list[int]
) -> torch.Tensor:
    """Attention of the queries `[rows, H, width, hd]` over their views: per block, rotate the
    queries by (query position - block offset), score against the block's stored keys; then
    one softmax over all key columns. Returns `[rows, H, width, hd]`."""
    d = cache.decoder
    rows, heads, width, head_dim = q.shape
    groups = heads // d.kv_heads
    scores, values = [], []
    for index, rotation in zip(layout.blocks, layout.query_rotation):
        block = cache.blocks[index]
        keys = block.keys[layer, :, : lengths_after[index]]  # [KVH, T_b, hd]
        rotated = rotate(q, *rotation).view(rows, d.kv_heads, groups, width, head_dim)  # [rows, KVH, G, width, hd]
        scores.append(torch.einsum("rkgwd,ktd->rkgwt", rotated, keys))  # [rows, KVH, G, width, T_b]
        values.append(block.values[layer, :, : lengths_after[index]])
    score = torch.cat(scores, dim=-1) * d.scaling + layout.bias  # [rows, KVH, G, width, T]
    weights = torch.softmax(score, dim=-1, dtype=torch.float32).to(q.dtype)
    context = torch.einsum("rkgwt,ktd->rkgwd", weights, torch.cat(values, dim=1))  # [rows, KVH, G, width, hd]
    return context.reshape(rows, heads, width, head_dim)


__all__ = [
    "Block",
    "Feed",
    "SharedCache",
    "UnsupportedModelError",
    "check_supported",
    "forward_feeds",
    "hogwild_decoder",
]
