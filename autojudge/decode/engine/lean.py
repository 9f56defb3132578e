"""The lean step: a hand-written forward of Llama-family decoders over the per-row cache.

At batch 1 on a CPU a small model's forward is dominated by fixed per-call cost: the
Hugging Face forward runs a few hundred small operators and Python layers (mask creation,
attention dispatch, output dataclasses) around matrix products that take microseconds. The
speculative engine calls the draft once per proposed token, so that cost decides whether
speculation beats plain greedy decoding. `LeanDecoder` computes the same function as the
model's own `base_model` forward with fewer operators:

- q, k and v are one matrix product (their weights concatenated into one tensor; the
  model's own `q_proj` / `k_proj` / `v_proj` weights become views into it, so memory does
  not grow and the Hugging Face path keeps working), and so are the MLP's gate and up;
- rotary cos/sin come from a table over positions (the model's own inverse frequencies and
  scaling, the same elementwise formula), rotated on q and k together;
- attention is one `scaled_dot_product_attention` over the rows' caches with the additive
  mask `forward_rows` builds (grouped-query heads without copies);
- rows fed chunks of different lengths: embeddings, norms, projections and MLP run on the real
  tokens only, and only attention sees the padded grid (`decode_layers(real=...)`), so a long
  verification among one-token rows costs its own tokens, not rows x its length, in those layers;
- RMSNorm is the same float32 computation as the model's (`F.rms_norm` on float32 inputs);
- on a CPU, a single row's logits come from a transposed copy of a plain LM head (a one-row
  product with `[H, V]` is about twice as fast as with `[V, H]`);
- on a CPU, large weight matrices (at least `PACK_MIN_ELEMENTS`, the LM head included) are
  multiplied through oneDNN's prepacked kernel (`torch.ops.mkldnn._linear_pointwise` on a copy
  reordered once into oneDNN's blocked layout, the kernel inductor's CPU freezing uses). For the
  2-9 rows of a speculative verification it is 1.8-2.8x faster than `F.linear` (whose MKL
  kernel repacks the weight on every call) on SmolLM2's shapes, so a verification costs closer to
  a one-token step. The packed copies cost one more copy of those weights in memory; they are
  re-made when a weight changes in place (its version counter moves). Small matrices (the toy
  pair's) keep `F.linear`, which is faster there.

Supported: decoders whose layers are Llama's (Llama, Mistral without sliding windows,
Qwen2 with its q/k/v biases): SiLU-gated MLP without biases, RMSNorm, rotary positions that
are a fixed rotation per position (`FIXED_ROPE_TYPES`), full attention in every layer.
`lean_unsupported_reason` is the package's one check of that; anything else (`lean_decoder`
returns None) runs the model's own forward in the engine, and Hogwild! refuses it.
`set_lean(model, False)` turns it off for one model (benchmarks compare both).

This is the package's one hand-written Llama-family forward. `LeanDecoder.decode_layers` runs
embeddings, decoder layers and final norm with the attention of each layer left to a callback
(`Attend`: it gets the layer's q/k stacked before rotation and its v, places the keys/values in
its cache and returns the attention output). The engine's forward over the per-row cache
(`eager_forward`) is one such callback; Hogwild!'s shared block cache (`decode/hogwild/blocks.py`)
is another.

`compile_lean(model)` (optional, the `--compile` path) wraps the decoder's forward in
`torch.compile(dynamic=True)`; the chunk and cache lengths vary per call, so shapes are
marked dynamic instead of compiled per size, and the number of compiled graphs is reported by
`compiled_graphs()`. On CUDA, `mode="reduce-overhead"` adds CUDA graphs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

LEAN_MODEL_TYPES = ("llama", "mistral", "qwen2")
"""`config.model_type` values whose decoder layers the lean forward reproduces."""
FIXED_ROPE_TYPES = ("default", "linear", "llama3")
"""RoPE variants whose rotation is a fixed function of the position (no re-scaling by sequence length,
as `dynamic` and `longrope` do): a position's cos/sin come from one table, and a rotation by a + b is
a rotation by a then by b (what Hogwild!'s block offsets rely on)."""

Attend = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
"""One layer's attention for `LeanDecoder.decode_layers`: (layer index, q and k stacked before rotation
`[b, heads + kv_heads, C, d]`, v `[b, kv_heads, C, d]`) -> attention output `[b, heads, C, d]`."""


PACK_MIN_ELEMENTS = 1 << 18
"""Weights with at least this many elements use oneDNN's prepacked kernel on a CPU (SmolLM2's smallest,
576 x 576, is above it; the toy pair's are below: there the extra call cost outweighs the gain)."""
NO_PACKING = 1 << 62
"""A threshold no weight reaches: every weight on `F.linear` (`set_lean(model, True, NO_PACKING)`)."""


def pack_weight(weight: torch.Tensor, min_elements: int = PACK_MIN_ELEMENTS) -> torch.Tensor | None:
    """oneDNN's prepacked copy of a linear weight `[out, in]` for `linear`, or None (not a CPU tensor,
    smaller than `min_elements`, or no oneDNN in this build of torch)."""
    if weight.device.type != "cpu" or weight.numel() < min_elements or not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach())
    except (AttributeError, RuntimeError):  # pragma: no cover - a build without the operator
        return None


@dataclass
class LeanLinear:
    """A bias-optional linear map over a weight view, with oneDNN's prepacked copy when `pack` made one."""

    weight: torch.Tensor
    """`[out, in]`, a view of the model's parameters."""
    bias: torch.Tensor | None = None
    """`[out]`, or None."""
    sources: tuple[torch.Tensor, ...] = ()
    """The model's parameters `weight` stacks (empty: `weight` itself). They share its memory but not its
    version counter (`_stack` sets their `.data`), so an in-place change of one is seen only on them."""
    packed: torch.Tensor | None = None
    """oneDNN's blocked copy of `weight` (`pack_weight`), or None: then `F.linear` computes it."""
    version: tuple[int, ...] = ()
    """The sources' version counters when `packed` was made (an in-place change moves one)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)

    def pack(self, min_elements: int = PACK_MIN_ELEMENTS) -> None:
        """Make (or re-make) the packed copy; a weight below `min_elements` keeps `F.linear`."""
        with torch.inference_mode(False):
            self.packed, self.version = pack_weight(self.weight, min_elements), self.versions()

    def versions(self) -> tuple[int, ...]:
        """The sources' version counters (-1 for an inference tensor, which has none and cannot change
        outside inference mode)."""
        return tuple(-1 if t.is_inference() else t._version for t in self.sources or (self.weight,))

    def stale(self) -> bool:
        """Whether the packed copy predates an in-place change of the weight."""
        return self.packed is not None and self.versions() != self.version


@dataclass
class LeanLayer:
    """One decoder layer's weights (views of the model's parameters, no copies)."""

    input_norm: torch.Tensor
    """RMSNorm weight before attention `[H]`."""
    qkv: LeanLinear
    """q, k and v projections stacked `[(heads + 2 * kv_heads) * head_dim, H]`, with their biases (Qwen2)."""
    o: LeanLinear
    """Attention output projection `[H, heads * head_dim]`."""
    post_norm: torch.Tensor
    """RMSNorm weight before the MLP `[H]`."""
    gate_up: LeanLinear
    """MLP gate and up projections stacked `[2 * I, H]`."""
    down: LeanLinear
    """MLP down projection `[H, I]`."""

    def linears(self) -> tuple[LeanLinear, ...]:
        return (self.qkv, self.o, self.gate_up, self.down)


def lean_unsupported_reason(model: Any) -> str | None:
    """Why `model` cannot use the lean forward, or None when it can (the package's one check of which
    models its hand-written forward computes: the engine's lean step and Hogwild! both ask it)."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in LEAN_MODEL_TYPES:
        return (f"model type {model_type!r} is not one of {LEAN_MODEL_TYPES}"
                + (" (learned absolute positions, no rotary embedding)" if model_type == "gpt2" else ""))
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r} is not silu"
    if getattr(config, "mlp_bias", False):
        return "MLP biases"
    base = model.base_model
    layer = base.layers[0]
    if getattr(layer.self_attn.o_proj, "bias", None) is not None:
        return "an attention output bias"
    rope_types = {(getattr(config, "rope_parameters", None) or {}).get("rope_type", "default"),
                  getattr(base.rotary_emb, "rope_type", "default")}  # the config's and the module's
    unsupported = sorted(rope_types - set(FIXED_ROPE_TYPES))
    if unsupported:
        return f"RoPE type {unsupported[0]!r} is not a fixed rotation per position (supported: {', '.join(FIXED_ROPE_TYPES)})"
    layer_types = getattr(config, "layer_types", None) or []
    sliding = (
        any(kind != "full_attention" for kind in layer_types)
        or (getattr(config, "use_sliding_window", False) and getattr(config, "sliding_window", None))
        or any(getattr(each.self_attn, "sliding_window", None) for each in base.layers)
    )
    if sliding:
        return "sliding-window attention layers"
    return None


def _stack(weights: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate weights along dim 0 and make each original parameter a view into the result."""
    stacked = torch.cat([w.detach() for w in weights], dim=0)
    offset = 0
    for weight in weights:
        rows = weight.shape[0]
        weight.data = stacked[offset : offset + rows]
        offset += rows
    return stacked


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE: `x` `[b, heads, C, d]` rotated by the angles whose cos/sin `[b, 1, C, d]` are given
    (`LeanDecoder.rotation`; transformers' `apply_rotary_pos_emb`)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def write_and_read_rows(
    keys: torch.Tensor,
    values: torch.Tensor,
    key_states: torch.Tensor,
    value_states: torch.Tensor,
    write_index: torch.Tensor,
    rows: torch.Tensor | None,
    low: int,
    high: int,
    kv_len: int,
    start: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's step on the per-row cache (`cache.RowKVCache`, whose `update` calls this too): write
    the chunk's keys/values `[b, kv_heads, C, d]` to the flat `write_index` of the buffers `[rows,
    kv_heads, capacity, d]`, then return slots `[start, kv_len)` of rows `low:high` (a view) or, when
    `low < 0`, of the gathered `rows` (a copy: a shared header's slots are not copied)."""
    head_dim = keys.shape[-1]
    keys.view(-1, head_dim).index_put_((write_index,), key_states.reshape(-1, head_dim))
    values.view(-1, head_dim).index_put_((write_index,), value_states.reshape(-1, head_dim))
    if low >= 0:
        return keys[low:high, :, start:kv_len], values[low:high, :, start:kv_len]
    assert rows is not None
    return keys[:, :, start:kv_len].index_select(0, rows), values[:, :, start:kv_len].index_select(0, rows)


class LeanDecoder:
    """The lean forward of one model; see the module docstring."""

    def __init__(self, model: Any, pack_min_elements: int = PACK_MIN_ELEMENTS) -> None:
        reason = lean_unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"no lean forward for this model: {reason}")
        config = model.config
        base = model.base_model
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scaling = self.head_dim**-0.5
        self.grouped = self.kv_heads != self.heads
        """Grouped-query attention (fewer key/value heads than query heads)."""
        self.eps = float(base.norm.variance_epsilon)
        self.embed = base.embed_tokens.weight
        self.norm = base.norm.weight
        self.rotary = base.rotary_emb
        self.layers: list[LeanLayer] = []
        with torch.inference_mode(False), torch.no_grad():  # normal tensors even when built inside inference mode
            for layer in base.layers[: config.num_hidden_layers]:
                attn, mlp = layer.self_attn, layer.mlp
                projections = (attn.q_proj, attn.k_proj, attn.v_proj)
                qkv_weights = tuple(p.weight for p in projections)
                gate_up_weights = (mlp.gate_proj.weight, mlp.up_proj.weight)
                biases = [p.bias for p in projections]
                self.layers.append(
                    LeanLayer(
                        input_norm=layer.input_layernorm.weight,
                        qkv=LeanLinear(
                            _stack(list(qkv_weights)),
                            _stack(biases) if all(b is not None for b in biases) else None,  # type: ignore[misc]
                            sources=qkv_weights,
                        ),
                        o=LeanLinear(attn.o_proj.weight),
                        post_norm=layer.post_attention_layernorm.weight,
                        gate_up=LeanLinear(_stack(list(gate_up_weights)), sources=gate_up_weights),
                        down=LeanLinear(mlp.down_proj.weight),
                    )
                )
        self.pack_min_elements = pack_min_elements
        """Weights at least this large use oneDNN's prepacked kernel on a CPU (`PACK_MIN_ELEMENTS`)."""
        self.linears = [linear for layer in self.layers for linear in layer.linears()]
        for linear in self.linears:
            linear.pack(pack_min_elements)
        self._model_modules = model._modules  # live: a head replaced later (a reduced draft head) is seen
        self.head_module: Any = None
        self.head_t: torch.Tensor | None = None
        """The LM head stored transposed `[H, V]` (CPU, a plain bias-free float32 Linear): a one-row product with
        it takes about half the time of `F.linear` over the `[V, H]` rows on a CPU (no gain at several rows)."""
        self.head_linear: LeanLinear | None = None
        """The same head prepacked (`LeanLinear`; several rows, or any in bfloat16), or None: the model's head."""
        self._set_head(model.get_output_embeddings())
        self._cos = self._sin = torch.empty(0)
        self.forward: Callable[..., torch.Tensor] = self.eager_forward
        self.compiled = False
        self.calls = 0
        """Forward passes run (benchmarks count target calls with it: the lean path calls no module)."""

    def __call__(self, cache: Any, input_ids: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor | None, max_position: int,
                 real: torch.Tensor | None = None) -> torch.Tensor:
        """Last hidden state `[b, C, H]` after the final norm, for `input_ids` `[b, C]` at `position_ids`
        `[b, C]` (all <= `max_position`), attending through the additive `mask` `[b, 1, C, S]` (None: one
        row, one token) to the rows of `cache` that `forward_rows` set up (its write index, rows, length).
        With `real`, only the real positions' states `[len(real), H]` (`decode_layers`)."""
        self._start_call()
        cos, sin = self.rotation(position_ids, cache.keys[0].dtype, max_position)
        low, high = cache.row_span()
        shared = cache.shared if cache._shared_active else None
        return self.forward(input_ids, cos, sin, mask, cache.keys, cache.values, cache._write_index, cache._rows, low, high,
                            cache._kv_len, shared, real)

    def __deepcopy__(self, memo: dict[int, Any]) -> None:
        """A copied model builds its own lean forward on first use (oneDNN's packed tensors cannot be
        copied, and the copy's weights are other tensors anyway)."""
        return None

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return type(None), ()  # pickled as None, for the same reason

    def forward_attending(self, input_ids: torch.Tensor, attend: Attend) -> torch.Tensor:
        """Last hidden state `[b, C, H]` after the final norm for `input_ids` `[b, C]`, each layer's
        attention computed by `attend` (which owns the positions and the cache: Hogwild!'s blocks)."""
        self._start_call()
        return self.decode_layers(input_ids, attend)

    def _start_call(self) -> None:
        """Count the forward; re-make the packed copies of weights changed in place since the last one."""
        self.calls += 1
        for linear in self.linears:
            if linear.stale():
                linear.pack(self.pack_min_elements)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.dtype

    @property
    def device(self) -> torch.device:
        return self.embed.device

    @property
    def packed(self) -> bool:
        """Whether any weight uses oneDNN's prepacked kernel."""
        return any(linear.packed is not None for linear in self.linears)

    def unpack(self) -> None:
        """Drop the prepacked copies (the compiled path traces `F.linear`; inductor packs by itself)."""
        self.pack_min_elements = NO_PACKING
        for linear in self.linears:
            linear.pack(self.pack_min_elements)
        self.head_linear = None

    def _set_head(self, output: Any) -> None:
        self.head_module, self.head_t, self.head_linear = output, None, None
        if type(output) is torch.nn.Linear and output.bias is None and output.weight.device.type == "cpu":
            if output.weight.dtype == torch.float32:  # bfloat16's one-row product is faster prepacked
                self.head_t = output.weight.detach().t().contiguous()
            self.head_linear = LeanLinear(output.weight)
            self.head_linear.pack(self.pack_min_elements)
            if self.head_linear.packed is None:
                self.head_linear = None

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits `[n, V]` of hidden states `[n, H]`: for one row the head's transposed copy, for several its
        prepacked copy, else the model's own head."""
        current = self._model_modules.get("lm_head", self.head_module)
        if current is not self.head_module or (self.head_linear is not None and self.head_linear.stale()):
            self._set_head(current)
        if self.head_t is not None and hidden.shape[0] == 1:
            return hidden @ self.head_t
        if self.head_linear is not None:
            return self.head_linear(hidden)
        return self.head_module(hidden)

    # -- pieces ---------------------------------------------------------------------------
    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The model's RMSNorm (computed in float32; one fused operator when x is float32)."""
        if x.dtype == torch.float32:
            return F.rms_norm(x, weight.shape, weight, self.eps)
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * x.to(dtype)

    def rotary_table(self, positions: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin `[positions, head_dim]` (at least), the model's rotary embedding over positions 0.."""
        if self._cos.shape[0] < positions or self._cos.dtype != dtype:
            size = max(positions, 2 * self._cos.shape[0], 256)
            inv_freq = self.rotary.inv_freq
            freqs = torch.arange(size, device=inv_freq.device, dtype=torch.float32)[:, None] * inv_freq.float()[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            scale = self.rotary.attention_scaling
            self._cos, self._sin = (emb.cos() * scale).to(dtype), (emb.sin() * scale).to(dtype)
        return self._cos, self._sin

    def rotation(self, position_ids: torch.Tensor, dtype: torch.dtype, max_position: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin `[b, 1, C, d]` of the rotation to `position_ids` `[b, C]` (all >= 0 and, when given,
        <= `max_position`), for `rotate`."""
        top = int(position_ids.max()) if max_position is None else max_position
        cos_table, sin_table = self.rotary_table(top + 1, dtype)
        return cos_table[position_ids][:, None], sin_table[position_ids][:, None]

    # -- the forward ----------------------------------------------------------------------
    def decode_layers(self, input_ids: torch.Tensor, attend: Attend, real: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings, the decoder layers and the final norm: hidden states `[b, C, H]` for `input_ids`
        `[b, C]`. Each layer's attention is `attend(layer index, qk, v)` (see `Attend`): the caller
        rotates q and k to their positions, stores the keys/values and attends over its cache.

        With `real` (the ascending flat indices into the `b x C` grid of the positions that hold real
        tokens), the position-wise parts (embeddings, norms, projections, MLP) run on those positions
        only, and padding costs only attention (whose inputs are scattered back into the grid with zeros
        at the padding): the hidden states are `[len(real), H]`."""
        b, c = input_ids.shape
        heads, kv_heads, d = self.heads, self.kv_heads, self.head_dim
        if real is None:
            x = F.embedding(input_ids, self.embed)
        else:
            x = F.embedding(input_ids.reshape(-1).index_select(0, real), self.embed)  # [n, H]
        for index, layer in enumerate(self.layers):
            h = self.rms_norm(x, layer.input_norm)
            qkv = layer.qkv(h)
            if real is not None:
                qkv = qkv.new_zeros(b * c, qkv.shape[-1]).index_copy_(0, real, qkv)
            qkv = qkv.view(b, c, heads + 2 * kv_heads, d).transpose(1, 2)
            attn = attend(index, qkv[:, : heads + kv_heads], qkv[:, heads + kv_heads :])  # [b, heads, C, d]
            attn = attn.transpose(1, 2).reshape(b, c, heads * d)
            if real is not None:
                attn = attn.reshape(b * c, heads * d).index_select(0, real)
            x = x + layer.o(attn)
            gate, up = layer.gate_up(self.rms_norm(x, layer.post_norm)).chunk(2, dim=-1)
            x = x + layer.down(F.silu(gate) * up)
        return self.rms_norm(x, self.norm)

    def eager_forward(
        self,
        input_ids: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        write_index: torch.Tensor,
        rows: torch.Tensor,
        low: int,
        high: int,
        kv_len: int,
        shared: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None,
        real: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The forward over the per-row cache: a function of tensors and ints only (what `torch.compile`
        traces). Each layer rotates q and k by `cos`/`sin` `[b, 1, C, d]`, writes its new keys/values
        `[b, kv_heads, C, d]` to the flat `write_index` of the cache buffers `keys[i]`/`values[i]` `[rows,
        kv_heads, capacity, d]`, then attends to slots `[0, kv_len)` of rows `low:high` (a view) or, when
        `low < 0`, of the gathered `rows`. With `shared` (keys and values `[kv_heads, P, d]` per layer that
        every row's first P slots hold), the first P slots are read once for all rows (`prefix_attention`)
        instead of once per row. With `real`, padding runs through attention only (`decode_layers`)."""
        heads = self.heads

        def attend(index: int, qk: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            qk = rotate(qk, cos, sin)  # q and k in one operation
            if shared is not None and mask is not None:  # the header's slots are read once, not per row
                prefix_k, prefix_v = shared[0][index], shared[1][index]
                after_k, after_v = write_and_read_rows(
                    keys[index], values[index], qk[:, heads:], v, write_index, rows, low, high, kv_len, prefix_k.shape[1]
                )
                return prefix_attention(qk[:, :heads], prefix_k, prefix_v, after_k, after_v, mask, self.scaling)
            cached_k, cached_v = write_and_read_rows(keys[index], values[index], qk[:, heads:], v, write_index, rows, low, high, kv_len)
            return F.scaled_dot_product_attention(
                qk[:, :heads], cached_k, cached_v, attn_mask=mask, scale=self.scaling, enable_gqa=self.grouped
            )  # [b, heads, C, d]

        return self.decode_layers(input_ids, attend, real)


def prefix_attention(
    q: torch.Tensor,
    prefix_k: torch.Tensor,
    prefix_v: torch.Tensor,
    after_k: torch.Tensor,
    after_v: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Attention of queries `q` `[b, heads, C, d]` over rows whose caches `[b, kv_heads, S, d]` all start
    with the same P slots, given once as `prefix_k`/`prefix_v` `[kv_heads, P, d]`; `after_k`/`after_v`
    `[b, kv_heads, S - P, d]` are each row's slots after them (`mask` `[b, 1, C, S]` additive over all S
    slots, every query at a position >= P). The same function as attending to each row's whole cache:

    - the prefix part is one matrix product per key/value head over every query of every row (a dense
      product instead of b memory-bound ones: a few-shot header of hundreds of tokens is read once);
    - the part after it (slots P..S) is per row, as usual;
    - the two partial softmaxes are merged with their maxima and sums (as cascade / shared-prefix
      attention kernels do), in float32."""
    b, heads, c, d = q.shape
    kv_heads, prefix_len = prefix_k.shape[0], prefix_k.shape[1]
    group = heads // kv_heads
    queries = q.reshape(b, kv_heads, group * c, d)  # heads h = kv * group + g share key/value head kv
    flat = queries.transpose(0, 1).reshape(kv_heads, b * group * c, d)
    scores = torch.bmm(flat, prefix_k.transpose(1, 2)).float() * scale  # [kv, b*g*C, P]
    top = scores.amax(-1, keepdim=True)
    weights = torch.exp(scores - top)
    total = weights.sum(-1, keepdim=True)
    out1 = torch.bmm(weights.to(prefix_v.dtype), prefix_v).float() / total  # [kv, b*g*C, d]
    lse1 = (top + total.log()).reshape(kv_heads, b, heads // kv_heads * c).transpose(0, 1).reshape(b, heads, c)
    out1 = out1.reshape(kv_heads, b, group * c, d).transpose(0, 1).reshape(b, heads, c, d)
    # the rest of each row's cache: the fused kernel, which also returns its log-sum-exp
    out2, lse2 = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, after_k, after_v, 0.0, False, attn_mask=mask[..., prefix_len:], scale=scale
    ) if q.device.type == "cpu" else _attention_with_lse(q, after_k, after_v, mask[..., prefix_len:], scale)
    lse = torch.logaddexp(lse1, lse2)
    out = out1 * torch.exp(lse1 - lse)[..., None] + out2.float() * torch.exp(lse2 - lse)[..., None]
    return out.to(q.dtype).reshape(b, heads, c, d)


def _attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(attention output `[b, heads, C, d]`, float32 log-sum-exp of the scores `[b, heads, C]`), unfused
    (devices without the CPU kernel that returns both); grouped-query heads share key/value heads."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale + mask.float()
    lse = torch.logsumexp(scores, dim=-1)
    return torch.matmul(torch.exp(scores - lse[..., None]).to(v.dtype), v), lse


def lean_decoder(model: Any) -> LeanDecoder | None:
    """The model's lean forward for the engine's `forward_rows` (built on first use), or None when
    unsupported or turned off (`set_lean`)."""
    if model.__dict__.get("_autojudge_lean_off"):
        return None
    lean = model.__dict__.get("_autojudge_lean")
    if lean is None and lean_unsupported_reason(model) is None:
        lean = lean_forward(model)
    return lean


def lean_forward(model: Any) -> LeanDecoder:
    """The model's lean forward, built on first use and kept on the model (whether or not `set_lean`
    turned the engine's use of it off: a caller with no other forward, like Hogwild!, needs it);
    ValueError when the model is not supported (`lean_unsupported_reason`)."""
    lean = model.__dict__.get("_autojudge_lean")
    if lean is None:
        lean = LeanDecoder(model)
        model.__dict__["_autojudge_lean"] = lean
    return lean


def set_lean(model: Any, enabled: bool, pack_min_elements: int | None = None) -> None:
    """Use (default) or bypass the lean forward for `model` in `forward_rows`; `pack_min_elements`
    rebuilds it with that prepacking threshold (0: every weight; a huge number: none)."""
    model.__dict__["_autojudge_lean_off"] = not enabled
    if not enabled or pack_min_elements is not None:
        model.__dict__.pop("_autojudge_lean", None)
    if enabled and pack_min_elements is not None and lean_unsupported_reason(model) is None:
        model.__dict__["_autojudge_lean"] = LeanDecoder(model, pack_min_elements)


_COMPILED: list[Any] = []


def compile_lean(model: Any, mode: str | None = None) -> bool:
    """Compile the model's lean forward with `torch.compile(dynamic=True)` (CUDA: CUDA graphs
    with mode "reduce-overhead"); False when the model has no lean forward."""
    lean = lean_decoder(model)
    if lean is None:
        return False
    if not lean.compiled:
        lean.unpack()
        compiled = torch.compile(lean.eager_forward, dynamic=True, mode=mode)
        lean.forward = compiled
        lean.compiled = True
        _COMPILED.append(compiled)
    return True


def compiled_graphs() -> int:
    """Graphs compiled so far by torch.compile across the lean forwards (recompilations included)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except Exception:  # pragma: no cover - private API moved
        return -1


__all__ = [
    "FIXED_ROPE_TYPES",
    "LEAN_MODEL_TYPES",
    "NO_PACKING",
    "PACK_MIN_ELEMENTS",
    "Attend",
    "LeanDecoder",
    "LeanLinear",
    "compile_lean",
    "compiled_graphs",
    "lean_decoder",
    "lean_forward",
    "lean_unsupported_reason",
    "pack_weight",
    "prefix_attention",
    "rotate",
    "set_lean",
    "write_and_read_rows",
]
