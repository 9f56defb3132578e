"""Hogwild! inference (arXiv 2504.06261): N workers of one model generating over one shared KV cache.

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

One step (`HogwildSession.step`): every active worker feeds its new tokens (usually
its last generated token); one batched pass over the model's layers computes them
all. In each layer all workers' new keys/values are written first, then each worker
attends over its view: other blocks in full (so a worker sees the others' tokens of
this very step), its own block causally. The forward is written here over the model's
own modules (embeddings, RMS norms, q/k/v/o projections with their biases, rotary
embedding module, MLP, final norm, LM head) so that it can be checked against
transformers' own forward: Llama-style RoPE models only (Llama, Qwen2 without sliding
windows); anything else is refused with `UnsupportedModelError`.

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

import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from autojudge.errors import InputError, ModelPairError

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")
"""Model families whose decoder layer this module re-implements (checked against transformers in tests)."""
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
"""RoPE variants whose rotation is a fixed function of the position (no dynamic re-scaling by length)."""
WORKER_NAMES = ("Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi")


class UnsupportedModelError(ModelPairError):
    """The model has no Llama-style rotary position embedding that Hogwild! can rotate."""


# ---------------------------------------------------------------------------------------------
# The model: its modules, checked to be a Llama-style RoPE decoder
# ---------------------------------------------------------------------------------------------


@dataclass
class RopeDecoder:
    """The parts of a Llama/Qwen2 causal LM that the block forward uses."""

    model: Any
    """The transformers causal LM (eval mode)."""
    num_heads: int
    """Query heads per layer."""
    num_kv_heads: int
    """Key/value heads per layer (grouped-query attention when fewer than `num_heads`)."""
    head_dim: int
    """Width of one head."""
    scaling: float
    """Attention score scale (`head_dim ** -0.5` in both families)."""

    @classmethod
    def wrap(cls, model: Any, name: str = "model") -> "RopeDecoder":
        """Check that `model` is a supported RoPE decoder and collect its sizes."""
        check_supported(model, name)
        attention = model.model.layers[0].self_attn
        config = model.config
        return cls(
            model=model,
            num_heads=config.num_attention_heads,
            num_kv_heads=config.num_key_value_heads,
            head_dim=attention.head_dim,
            scaling=float(attention.scaling),
        )

    @property
    def layers(self) -> Any:
        return self.model.model.layers

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def rotation(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin `[rows, 1, n, head_dim]` of the model's own rotary module at `positions` `[rows, n]`."""
        probe = torch.empty(0, dtype=self.dtype, device=self.device)  # the module reads only dtype and device
        cos, sin = self.model.model.rotary_emb(probe, positions)  # [rows, n, head_dim] each
        return cos[:, None], sin[:, None]

    @staticmethod
    def rotate(x: torch.Tensor, rotation: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Apply a rotation from `rotation()` to `x` `[rows, heads, n, head_dim]` (transformers' apply_rotary_pos_emb)."""
        cos, sin = rotation
        half = x.shape[-1] // 2
        rotated_half = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated_half * sin

    def rope(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate `x` `[rows, heads, n, head_dim]` to `positions` `[rows, n]`."""
        return self.rotate(x, self.rotation(positions))


def check_supported(model: Any, name: str = "model") -> None:
    """Raise UnsupportedModelError unless `model` is a Llama/Qwen2 decoder with a fixed RoPE."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"{name}: hogwild needs a Llama-style rotary-position model ({', '.join(SUPPORTED_MODEL_TYPES)}); "
            f"got model_type {model_type!r}"
            + (" (learned absolute positions, no rotary embedding)" if model_type == "gpt2" else "")
        )
    rope = getattr(config, "rope_parameters", None) or {}
    rope_type = rope.get("rope_type", "default")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise UnsupportedModelError(
            f"{name}: RoPE type {rope_type!r} is not supported by hogwild (supported: {', '.join(SUPPORTED_ROPE_TYPES)})"
        )
    layer_types = getattr(config, "layer_types", None) or []
    if any(kind != "full_attention" for kind in layer_types) or getattr(config, "use_sliding_window", False):
        raise UnsupportedModelError(f"{name}: sliding-window attention layers are not supported by hogwild")
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "rotary_emb") or not hasattr(inner, "layers"):
        raise UnsupportedModelError(f"{name}: no rotary embedding module found (expected model.model.rotary_emb)")


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

    def __init__(self, decoder: RopeDecoder):
        self.decoder = decoder
        self.blocks: list[Block] = []

    def add_block(self, name: str) -> int:
        """A new empty block; returns its index."""
        d = self.decoder
        empty = torch.zeros((len(d.layers), d.num_kv_heads, 0, d.head_dim), dtype=d.dtype, device=d.device)
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
            keys.append(self.decoder.rope(stored, shift)[0])
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
    key_rotation = d.rotation(relative)  # computed once per step, shared by all layers (as transformers does)

    hidden = d.model.model.embed_tokens(ids)  # [rows, width, hidden]
    for layer_index, layer in enumerate(d.layers):
        attention = layer.self_attn
        x = layer.input_layernorm(hidden)
        q = attention.q_proj(x).view(rows, width, d.num_heads, d.head_dim).transpose(1, 2)  # [rows, H, width, hd]
        k = attention.k_proj(x).view(rows, width, d.num_kv_heads, d.head_dim).transpose(1, 2)  # [rows, KVH, width, hd]
        v = attention.v_proj(x).view(rows, width, d.num_kv_heads, d.head_dim).transpose(1, 2)
        k = d.rotate(k, key_rotation)  # keys at block-relative positions
        _write_keys_values(cache, feeds, starts, layer_index, k, v)
        context = _view_attention(cache, layout, layer_index, q, lengths_after)  # [rows, width, H * hd]
        hidden = hidden + attention.o_proj(context)
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    for feed in feeds:
        cache.blocks[feed.block].token_ids.extend(feed.token_ids)
    last = hidden[torch.arange(rows, device=d.device), counts - 1]  # [rows, hidden]
    logits = d.model.get_output_embeddings()(d.model.model.norm(last))  # [rows, vocab]
    return logits.float()


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
    rotations = [cache.decoder.rotation(shift) for shift in query_shift]
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
    one softmax over all key columns. Returns `[rows, width, H * hd]`."""
    d = cache.decoder
    rows, heads, width, head_dim = q.shape
    groups = heads // d.num_kv_heads
    scores, values = [], []
    for index, rotation in zip(layout.blocks, layout.query_rotation):
        block = cache.blocks[index]
        keys = block.keys[layer, :, : lengths_after[index]]  # [KVH, T_b, hd]
        rotated = d.rotate(q, rotation).view(rows, d.num_kv_heads, groups, width, head_dim)  # [rows, KVH, G, width, hd]
        scores.append(torch.einsum("rkgwd,ktd->rkgwt", rotated, keys))  # [rows, KVH, G, width, T_b]
        values.append(block.values[layer, :, : lengths_after[index]])
    score = torch.cat(scores, dim=-1) * d.scaling + layout.bias  # [rows, KVH, G, width, T]
    weights = torch.softmax(score, dim=-1, dtype=torch.float32).to(q.dtype)
    context = torch.einsum("rkgwt,ktd->rkgwd", weights, torch.cat(values, dim=1))  # [rows, KVH, G, width, hd]
    return context.reshape(rows, heads, width, head_dim).transpose(1, 2).reshape(rows, width, heads * head_dim)


# ---------------------------------------------------------------------------------------------
# Workers, the collaboration prompt, and the generation loop
# ---------------------------------------------------------------------------------------------


@dataclass
class HogwildConfig:
    """Settings of one Hogwild! generation."""

    workers: int = 2
    """Number of workers (instances of the model) generating in parallel, >= 1."""
    max_new_tokens: int = 256
    """Budget of generated tokens per worker (injected prompts do not count)."""
    collaborate: bool = True
    """Use the collaboration system prompt and name each worker's block ("**Alice:** ").
    Off: the prompt is used as given and worker blocks start empty (one worker = plain greedy)."""
    separator: str = "\n\n"
    """Text at the start of every worker block, before its header (collaborate mode)."""
    header: str = "**{name}:** "
    """The header that introduces a worker's block; `{name}` is the worker's name (the paper: "**Alice [1]:** ")."""
    check_every: int | None = None
    """Every this many generated tokens (at the next line break), insert `check_prompt` into the worker's text."""
    check_prompt: str = "Quick check: is another worker already doing this? (yes/no): "
    """The periodic question a worker answers about redundant work (the paper's s1 prompt)."""
    stop_on_answer: bool = False
    """Stop all workers as soon as one has written a final answer."""

    def validate(self) -> None:
        if not isinstance(self.workers, int) or self.workers < 1:
            raise InputError(f"hogwild needs at least 1 worker, got {self.workers}")
        if self.workers > len(WORKER_NAMES):
            raise InputError(f"hogwild supports at most {len(WORKER_NAMES)} workers, got {self.workers}")
        if self.max_new_tokens < 1:
            raise InputError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if "{name}" not in self.header:
            raise InputError(f"the worker header must contain {{name}}, got {self.header!r}")
        if self.check_every is not None and self.check_every < 1:
            raise InputError(f"check_every must be >= 1 when given, got {self.check_every}")


def collaboration_system_prompt(names: Sequence[str]) -> str:
    """The system prompt that tells the workers they share their work (after the paper's rules, shortened)."""
    if len(names) == 1:
        return (
            f"You are {names[0]}, an assistant. Your text appears after your name; continue it. "
            'When the problem is solved, write "The final answer is N".'
        )
    others = ", ".join(names[:-1]) + f" and {names[-1]}"
    return (
        f"You are one of {len(names)} assistants ({others}) solving the same problem together, at the same time. "
        "You all write in parallel and see each other's work as it is written: the other assistants' text "
        "comes first, each under its writer's name, then your own text, which you continue. "
        "Split the work: take different parts of the problem or check another assistant's result, "
        "and do not repeat what someone else is already doing. If you notice that you are doing the "
        "same as another assistant, stop and do something else. "
        'When the problem is solved, one of you writes "The final answer is N".'
    )


def render_prompt(tokenizer: Any, user_message: str, config: HogwildConfig) -> str:
    """The prompt text for a question (no model needed): the collaboration system prompt of
    `config.workers` workers and the question in the chat template."""
    from autojudge.tasks.base import chat_prompt

    names = list(WORKER_NAMES[: config.workers])
    return chat_prompt(tokenizer, user_message, collaboration_system_prompt(names) if config.collaborate else None)


def worker_header(name: str, separator: str, header: str = "**{name}:** ") -> str:
    """The text that opens a worker's block: the separator, then the header with the worker's name."""
    return separator + header.replace("{name}", name)


_MARKER = re.compile(r"(?:final answer is|####)\s*:?\s*(?:\*\*)?\s*(-?\$?\s?[\d,]*\.?\d+)", re.IGNORECASE)


def marked_final_answer(text: str, finished: bool = False) -> str | None:
    """The GSM8K answer hook: the number after the first "The final answer is" / "####" of `text`,
    once it is complete (followed by a non-number character, or the worker has finished)."""
    from autojudge.tasks.answers import normalize_number

    for match in _MARKER.finditer(text):
        rest = text[match.end() :]
        if not finished and (not rest or (rest[0] in ".," and len(rest) < 2)):
            continue  # the number may still grow
        if rest and rest[0] in ".," and rest[1:2].isdigit():
            continue  # regex stopped inside a number
        answer = normalize_number(match.group(1))
        if answer is not None:
            return answer
    return None


@dataclass
class WorkerResult:
    """What one worker produced."""

    name: str
    """The worker's name ("Alice", ...)."""
    token_ids: list[int]
    """Generated tokens (EOS excluded; injected check prompts excluded)."""
    text: str
    """The worker's text: its generated tokens and any injected check prompts, in order."""
    new_tokens: int
    """Number of generated tokens."""
    stop_reason: str
    """"eos", "length" or "answer" (stopped because a final answer was written)."""


@dataclass
class HogwildResult:
    """One prompt's Hogwild! generation."""

    workers: list[WorkerResult]
    """Per worker, in index order."""
    transcript: str
    """The shared cache as a reader sees it: every worker block in order, headers included."""
    steps: int
    """Batched forwards after the prompt (each gives at most one token per active worker)."""
    forwards: int
    """All model forwards: prompt prefill + worker headers + steps."""
    new_tokens: int
    """Tokens generated by all workers together."""
    wall_s: float
    """Wall time of the whole generation, prefill included."""
    answer: str | None = None
    """The final answer read by the answer hook (first worker to write one), or None."""
    answer_worker: str | None = None
    """Name of the worker whose answer was taken."""
    answer_step: int | None = None
    """Step at which that answer was complete."""
    answer_wall_s: float | None = None
    """Seconds from the start until that answer was complete."""

    @property
    def tokens_per_forward(self) -> float:
        return self.new_tokens / max(self.steps, 1)


@dataclass
class _Worker:
    """Loop state of one worker."""

    name: str
    block: int
    view: list[int]
    token_ids: list[int] = field(default_factory=list)
    text_ids: list[int] = field(default_factory=list)
    since_check: int = 0
    stop_reason: str | None = None


class HogwildGenerator:
    """Greedy Hogwild! generation with one model: `generate(prompt_ids) -> HogwildResult`."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        config: HogwildConfig,
        eos_token_ids: Sequence[int] = (),
        answer_hook: Callable[[str, bool], str | None] | None = marked_final_answer,
    ):
        config.validate()
        self.decoder = RopeDecoder.wrap(model)
        self.tokenizer = tokenizer
        self.config = config
        self.eos = set(int(token) for token in eos_token_ids)
        self.answer_hook = answer_hook
        self.names = list(WORKER_NAMES[: config.workers])

    def render_prompt(self, user_message: str) -> str:
        """The prompt text for a question: the collaboration system prompt and the question in the chat template."""
        return render_prompt(self.tokenizer, user_message, self.config)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def generate(self, prompt_ids: Sequence[int]) -> HogwildResult:
        """Run all workers on one prompt until each stops (EOS, budget, or an answer with stop_on_answer)."""
        if len(prompt_ids) == 0:
            raise InputError("hogwild: empty prompt (no tokens)")
        config, started = self.config, time.perf_counter()
        cache = SharedCache(self.decoder)
        prompt_block = cache.add_block("prompt")
        blocks = [cache.add_block(name) for name in self.names]
        workers = [
            _Worker(name=name, block=block, view=[prompt_block] + [b for b in blocks if b != block] + [block])
            for name, block in zip(self.names, blocks)
        ]
        logits = forward_feeds(cache, [Feed(prompt_block, list(prompt_ids), [prompt_block])])  # [1, vocab]
        forwards = 1
        if config.collaborate:
            headers = [self._encode(worker_header(w.name, config.separator, config.header)) for w in workers]
            logits = forward_feeds(cache, [Feed(w.block, h, w.view) for w, h in zip(workers, headers)])
            forwards += 1
        else:
            logits = logits.expand(len(workers), -1)
        result = HogwildResult(workers=[], transcript="", steps=0, forwards=0, new_tokens=0, wall_s=0.0)
        active = list(range(len(workers)))
        while True:
            next_tokens = logits.argmax(-1).tolist()  # one per active worker
            feeds, still_active = [], []
            for worker_index, token in zip(active, next_tokens):
                worker = workers[worker_index]
                feed = self._accept_token(worker, int(token))
                if feed is not None:
                    feeds.append(feed)
                    still_active.append(worker_index)
            self._read_answer(result, workers, started)
            if result.answer is not None and config.stop_on_answer:
                for worker_index in still_active:
                    workers[worker_index].stop_reason = "answer"
                still_active, feeds = [], []
            if not feeds:
                break
            logits = forward_feeds(cache, feeds)
            active = still_active
            result.steps += 1
            forwards += 1
        result.forwards = forwards
        result.wall_s = time.perf_counter() - started
        result.workers = [
            WorkerResult(w.name, w.token_ids, self._decode(w.text_ids), len(w.token_ids), w.stop_reason or "length")
            for w in workers
        ]
        result.new_tokens = sum(len(w.token_ids) for w in workers)
        result.transcript = "".join(self._header_text(w.name) + r.text for w, r in zip(workers, result.workers))
        return result

    def _header_text(self, name: str) -> str:
        """A worker's block header as shown in the transcript (a plain label without the collaboration prompt)."""
        if self.config.collaborate:
            return worker_header(name, self.config.separator, self.config.header)
        return f"\n\n[{name}]\n"

    def _accept_token(self, worker: _Worker, token: int) -> Feed | None:
        """Record a worker's new token; return what it feeds next step, or None when it stops."""
        config = self.config
        if token in self.eos:
            worker.stop_reason = "eos"
            return None
        worker.token_ids.append(token)
        worker.text_ids.append(token)
        worker.since_check += 1
        if len(worker.token_ids) >= config.max_new_tokens:
            worker.stop_reason = "length"
            return None
        feed = [token]
        if config.check_every is not None and worker.since_check >= config.check_every and "\n" in self._decode([token]):
            check = self._encode(config.check_prompt)
            feed += check
            worker.text_ids.extend(check)
            worker.since_check = 0
        return Feed(worker.block, feed, worker.view)

    def _read_answer(self, result: HogwildResult, workers: list[_Worker], started: float) -> None:
        """Apply the answer hook to each worker's text; keep the first answer found."""
        if self.answer_hook is None or result.answer is not None:
            return
        for worker in workers:
            answer = self.answer_hook(self._decode(worker.text_ids), worker.stop_reason is not None)
            if answer is not None:
                result.answer, result.answer_worker = answer, worker.name
                result.answer_step, result.answer_wall_s = result.steps, time.perf_counter() - started
                return

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


__all__ = [
    "Block",
    "Feed",
    "HogwildConfig",
    "HogwildGenerator",
    "HogwildResult",
    "RopeDecoder",
    "SharedCache",
    "UnsupportedModelError",
    "WorkerResult",
    "check_supported",
    "collaboration_system_prompt",
    "forward_feeds",
    "marked_final_answer",
    "worker_header",
]
