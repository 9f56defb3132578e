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
- RMSNorm is the same float32 computation as the model's (`F.rms_norm` on float32 inputs);
- on a CPU, a single row's logits come from a transposed copy of a plain LM head (a one-row
  product with `[H, V]` is about twice as fast as with `[V, H]`; several rows use the model's head).

Supported: decoders whose layers are Llama's (Llama, Mistral without sliding windows,
Qwen2 with its q/k/v biases): SiLU-gated MLP without biases, RMSNorm, rotary positions with
static frequencies. Anything else (`lean_decoder` returns None) runs the model's own forward.
`set_lean(model, False)` turns it off for one model (benchmarks compare both).

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


@dataclass
class LeanLayer:
    """One decoder layer's weights (views of the model's parameters, no copies)."""

    input_norm: torch.Tensor
    """RMSNorm weight before attention `[H]`."""
    qkv: torch.Tensor
    """q, k and v projections stacked `[(heads + 2 * kv_heads) * head_dim, H]`."""
    qkv_bias: torch.Tensor | None
    """Their biases (Qwen2), or None."""
    o: torch.Tensor
    """Attention output projection `[H, heads * head_dim]`."""
    post_norm: torch.Tensor
    """RMSNorm weight before the MLP `[H]`."""
    gate_up: torch.Tensor
    """MLP gate and up projections stacked `[2 * I, H]`."""
    down: torch.Tensor
    """MLP down projection `[H, I]`."""


def lean_unsupported_reason(model: Any) -> str | None:
    """Why `model` cannot use the lean forward, or None when it can."""
    config = model.config
    if getattr(config, "model_type", None) not in LEAN_MODEL_TYPES:
        return f"model type {getattr(config, 'model_type', None)!r} is not one of {LEAN_MODEL_TYPES}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r} is not silu"
    if getattr(config, "mlp_bias", False):
        return "MLP biases"
    base = model.base_model
    layer = base.layers[0]
    if getattr(layer.self_attn.o_proj, "bias", None) is not None:
        return "an attention output bias"
    if getattr(base.rotary_emb, "rope_type", "default") == "dynamic":
        return "dynamic rotary scaling"
    if getattr(layer.self_attn, "sliding_window", None):
        return "sliding-window attention"
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's step on the per-row cache (`cache.RowKVCache`, whose `update` calls this too): write
    the chunk's keys/values `[b, kv_heads, C, d]` to the flat `write_index` of the buffers `[rows,
    kv_heads, capacity, d]`, then return slots `[0, kv_len)` of rows `low:high` (a view) or, when
    `low < 0`, of the gathered `rows`."""
    head_dim = keys.shape[-1]
    keys.view(-1, head_dim).index_put_((write_index,), key_states.reshape(-1, head_dim))
    values.view(-1, head_dim).index_put_((write_index,), value_states.reshape(-1, head_dim))
    if low >= 0:
        return keys[low:high, :, :kv_len], values[low:high, :, :kv_len]
    assert rows is not None
    return keys[:, :, :kv_len].index_select(0, rows), values[:, :, :kv_len].index_select(0, rows)


class LeanDecoder:
    """The lean forward of one model; see the module docstring."""

    def __init__(self, model: Any) -> None:
        reason = lean_unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"no lean forward for this model: {reason}")
        config = model.config
        base = model.base_model
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scaling = self.head_dim**-0.5
        self.eps = float(base.norm.variance_epsilon)
        self.embed = base.embed_tokens.weight
        self.norm = base.norm.weight
        self.rotary = base.rotary_emb
        self.layers: list[LeanLayer] = []
        with torch.no_grad():
            for layer in base.layers[: config.num_hidden_layers]:
                attn, mlp = layer.self_attn, layer.mlp
                projections = (attn.q_proj, attn.k_proj, attn.v_proj)
                biases = [p.bias for p in projections]
                self.layers.append(
                    LeanLayer(
                        input_norm=layer.input_layernorm.weight,
                        qkv=_stack([p.weight for p in projections]),
                        qkv_bias=_stack(biases) if all(b is not None for b in biases) else None,  # type: ignore[misc]
                        o=attn.o_proj.weight,
                        post_norm=layer.post_attention_layernorm.weight,
                        gate_up=_stack([mlp.gate_proj.weight, mlp.up_proj.weight]),
                        down=mlp.down_proj.weight,
                    )
                )
        self._model_modules = model._modules  # live: a head replaced later (a reduced draft head) is seen
        self.head_module: Any = None
        self.head_t: torch.Tensor | None = None
        """The LM head stored transposed `[H, V]` (CPU, a plain bias-free Linear): a one-row product with it
        takes about half the time of `F.linear` over the `[V, H]` rows on a CPU (no gain at several rows)."""
        self._set_head(model.get_output_embeddings())
        self._cos = self._sin = torch.empty(0)
        self.forward: Callable[..., torch.Tensor] = self.eager_forward
        self.compiled = False
        self.calls = 0
        """Forward passes run (benchmarks count target calls with it: the lean path calls no module)."""

    def __call__(self, cache: Any, input_ids: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor | None, max_position: int) -> torch.Tensor:
        """Last hidden state `[b, C, H]` after the final norm, for `input_ids` `[b, C]` at `position_ids`
        `[b, C]` (all <= `max_position`), attending through the additive `mask` `[b, 1, C, S]` (None: one
        row, one token) to the rows of `cache` that `forward_rows` set up (its write index, rows, length)."""
        self.calls += 1
        cos_table, sin_table = self.rotary_table(max_position + 1, cache.keys[0].dtype)
        cos, sin = cos_table[position_ids][:, None], sin_table[position_ids][:, None]  # [b, 1, C, d]
        low, high = cache.row_span()
        return self.forward(input_ids, cos, sin, mask, cache.keys, cache.values, cache._write_index, cache._rows, low, high, cache._kv_len)

    def _set_head(self, output: Any) -> None:
        self.head_module, self.head_t = output, None
        if type(output) is torch.nn.Linear and output.bias is None and output.weight.device.type == "cpu":
            self.head_t = output.weight.detach().t().contiguous()

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits `[n, V]` of hidden states `[n, H]`: the model's own head, or for one row its transposed copy."""
        current = self._model_modules.get("lm_head", self.head_module)
        if current is not self.head_module:
            self._set_head(current)
        if self.head_t is not None and hidden.shape[0] == 1:
            return hidden @ self.head_t
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

    # -- the forward ----------------------------------------------------------------------
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
    ) -> torch.Tensor:
        """The decoder layers and final norm: a function of tensors and ints only (what `torch.compile`
        traces). Each layer writes its new keys/values `[b, kv_heads, C, d]` to the flat `write_index` of
        the cache buffers `keys[i]`/`values[i]` `[rows, kv_heads, capacity, d]`, then attends to slots
        `[0, kv_len)` of rows `low:high` (a view) or, when `low < 0`, of the gathered `rows`."""
        b, c = input_ids.shape
        x = F.embedding(input_ids, self.embed)
        heads, kv_heads, d = self.heads, self.kv_heads, self.head_dim
        half = d // 2
        for index, layer in enumerate(self.layers):
            h = self.rms_norm(x, layer.input_norm)
            qkv = F.linear(h, layer.qkv, layer.qkv_bias).view(b, c, heads + 2 * kv_heads, d).transpose(1, 2)
            qk, v = qkv[:, : heads + kv_heads], qkv[:, heads + kv_heads :]
            rotated = torch.cat((-qk[..., half:], qk[..., :half]), dim=-1)
            qk = qk * cos + rotated * sin
            cached_k, cached_v = write_and_read_rows(keys[index], values[index], qk[:, heads:], v, write_index, rows, low, high, kv_len)
            attn = F.scaled_dot_product_attention(
                qk[:, :heads], cached_k, cached_v, attn_mask=mask, scale=self.scaling, enable_gqa=kv_heads != heads
            )  # [b, heads, C, d]
            x = x + F.linear(attn.transpose(1, 2).reshape(b, c, heads * d), layer.o)
            gate, up = F.linear(self.rms_norm(x, layer.post_norm), layer.gate_up).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, layer.down)
        return self.rms_norm(x, self.norm)


def lean_decoder(model: Any) -> LeanDecoder | None:
    """The model's lean forward (built on first use), or None when unsupported or turned off."""
    lean = model.__dict__.get("_autojudge_lean")
    if lean is None:
        if model.__dict__.get("_autojudge_lean_off") or lean_unsupported_reason(model) is not None:
            return None
        lean = LeanDecoder(model)
        model.__dict__["_autojudge_lean"] = lean
    return lean


def set_lean(model: Any, enabled: bool) -> None:
    """Use (default) or bypass the lean forward for `model` in `forward_rows`."""
    model.__dict__["_autojudge_lean_off"] = not enabled
    if not enabled:
        model.__dict__.pop("_autojudge_lean", None)


_COMPILED: list[Any] = []


def compile_lean(model: Any, mode: str | None = None) -> bool:
    """Compile the model's lean forward with `torch.compile(dynamic=True)` (CUDA: CUDA graphs
    with mode "reduce-overhead"); False when the model has no lean forward."""
    lean = lean_decoder(model)
    if lean is None:
        return False
    if not lean.compiled:
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


__all__ = ["LEAN_MODEL_TYPES", "LeanDecoder", "compile_lean", "compiled_graphs", "lean_decoder", "lean_unsupported_reason", "set_lean", "write_and_read_rows"]
