"""A decode path for Llama-shaped models: the same arithmetic as transformers' LlamaForCausalLM, run on a
preallocated per-slot KV cache so that the sampler can batch continuously.

Why not the model's own forward: its cache grows by concatenation (every step copies the whole cache),
every row of a batch shares one write position (so a finished row cannot be refilled with a new prompt),
and each layer runs seven projections where two fused ones do (q|k|v and gate|up). Here each slot owns a
row of a [slots, kv_heads, max_len, head_dim] cache per layer and its own position; a step writes each
row's key/value at its position and attends over the positions written so far.

Weights: the policy's *effective* weights — a LoRA adapter's delta added in when the adapter is active,
nothing added when it is disabled (a reference) or merged — so the draws are from the policy being
trained. posttrain.models.fingerprint.weights_version says when they are stale.

Supported: `model_type` llama (SmolLM2 and the tiny test models), default RoPE, SiLU, optional biases.
Anything else takes the generic path of the sampler (`unsupported_reason`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from posttrain.models import unwrap


def _causal_lm(model):
    """The transformers CausalLM under a peft wrapper (LoRA layers stay in place inside it)."""
    model = unwrap(model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def unsupported_reason(model) -> str | None:
    lm = _causal_lm(model)
    cfg = getattr(lm, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) != "llama":
        return f"model_type {getattr(cfg, 'model_type', None)!r} (the fast path knows llama)"
    rope = getattr(cfg, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        return f"rope_type {rope.get('rope_type')!r}"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"hidden_act {cfg.hidden_act!r}"
    if not all(hasattr(lm, a) for a in ("model", "lm_head")) or not hasattr(lm.model, "rotary_emb"):
        return "not laid out as LlamaForCausalLM"
    return None


def _is_lora(module) -> bool:
    return hasattr(module, "base_layer") and hasattr(module, "lora_A")


def effective_linear(module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight [out, in], bias) that the module applies in eval mode."""
    if isinstance(module, torch.nn.Linear) and not _is_lora(module):
        return module.weight, module.bias
    if _is_lora(module):
        base = module.base_layer
        w = base.weight
        plain = all(not module.use_dora.get(a, False) for a in module.active_adapters)
        if plain:
            if not module.disable_adapters and not module.merged:
                for a in module.active_adapters:
                    if a in module.lora_A:
                        w = w + module.get_delta_weight(a).to(w.dtype)
            return w, base.bias
    # any other wrapper: read the map off the module itself (it is linear in eval mode)
    inner = module.base_layer if hasattr(module, "base_layer") else module
    n_in = inner.in_features
    p = next(inner.parameters())
    with torch.no_grad():
        b = module(torch.zeros(1, n_in, dtype=p.dtype, device=p.device))[0]
        w = (module(torch.eye(n_in, dtype=p.dtype, device=p.device)) - b).T.contiguous()
    return w, (b if inner.bias is not None else None)


class LlamaWeights:
    """Fused, effective weights of one policy, in `dtype` (None = the model's own)."""

    def __init__(self, model, dtype: torch.dtype | None = None, key=None):
        lm = _causal_lm(model)
        cfg = lm.config
        self.key = key  # the weights_version it was built from
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.rotary = lm.model.rotary_emb
        emb = lm.model.embed_tokens.weight
        self.dtype = dtype or emb.dtype
        self.device = emb.device
        cast = (lambda t: None if t is None else t.detach().to(self.dtype))  # noqa: E731
        # matmul weights are kept transposed ([in, out], contiguous): at decode batch sizes (M = 1..64 rows)
        # x @ W_t runs up to 3x faster on CPU than F.linear's x @ W.T (measured, docs/results/throughput.md)
        cast_t = (lambda t: t.detach().to(self.dtype).t().contiguous())  # noqa: E731
        self.embed = cast(emb)
        self.layers = []
        with torch.no_grad():
            for layer in lm.model.layers:
                att, mlp = layer.self_attn, layer.mlp
                (wq, bq), (wk, bk), (wv, bv) = (effective_linear(m)
                                                for m in (att.q_proj, att.k_proj, att.v_proj))
                wo, bo = effective_linear(att.o_proj)
                (wg, bg), (wu, bu) = effective_linear(mlp.gate_proj), effective_linear(mlp.up_proj)
                wd, bd = effective_linear(mlp.down_proj)
                bqkv = None if bq is None else torch.cat([bq, bk, bv])
                bgu = None if bg is None else torch.cat([bg, bu])
                self.layers.append({
                    "ln1": cast(layer.input_layernorm.weight),
                    "ln2": cast(layer.post_attention_layernorm.weight),
                    "wqkv": cast_t(torch.cat([wq, wk, wv])), "bqkv": cast(bqkv), "wo": cast_t(wo),
                    "bo": cast(bo),
                    "wgu": cast_t(torch.cat([wg, wu])), "bgu": cast(bgu), "wd": cast_t(wd), "bd": cast(bd)})
            self.norm = cast(lm.model.norm.weight)
            head_w, head_b = effective_linear(lm.lm_head)
            self.head = cast_t(head_w)
            self.head_b = cast(head_b)
        self.q_size = self.n_heads * self.head_dim
        self.kv_size = self.n_kv * self.head_dim
        self.inter = self.layers[0]["wgu"].shape[1] // 2 if self.layers else 0

    def new_cache(self, slots: int, max_len: int) -> "SlotCache":
        return SlotCache(len(self.layers), slots, self.n_kv, max_len, self.head_dim, self.dtype, self.device)


class SlotCache:
    def __init__(self, layers: int, slots: int, n_kv: int, max_len: int, head_dim: int, dtype, device):
        shape = (layers, slots, n_kv, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy slot `src`'s first `length` positions into slot `dst` (compaction, prefix sharing)."""
        self.k[:, dst, :, :length] = self.k[:, src, :, :length]
        self.v[:, dst, :, :length] = self.v[:, src, :, :length]


def _linear(x: torch.Tensor, w_t: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    y = torch.matmul(x, w_t)
    return y if b is None else y + b


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm (statistics in float32, then the weight in the model's dtype) in one fused op."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), w, eps)
    return w * F.rms_norm(x.float(), (x.shape[-1],), None, eps).to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin


@torch.no_grad()
def forward(w: LlamaWeights, cache: SlotCache, ids: torch.Tensor, pos: torch.Tensor, first_slot: int,
            last: torch.Tensor | None = None) -> torch.Tensor:
    """Run `ids` [A, T] at positions `pos` [A, T] for the slots first_slot .. first_slot + A - 1, writing
    their keys/values into the cache. Returns float32 logits [A, V] at index `last` [A] of each row
    (default: the last column). Every position p attends to the slot's positions 0..p, which must be
    written (by this call or an earlier one)."""
    A, T = ids.shape
    H, KV, D = w.n_heads, w.n_kv, w.head_dim
    g = H // KV
    rows = torch.arange(first_slot, first_slot + A, device=ids.device)
    span = int(pos.max()) + 1
    allowed = torch.arange(span, device=ids.device)[None, None, :] <= pos[:, :, None]  # [A, T, S]
    mask = allowed[:, None, None].expand(A, 1, g, T, span).reshape(A, 1, g * T, span)
    x = F.embedding(ids, w.embed)
    cos, sin = w.rotary(x, pos)
    cos, sin = cos[:, :, None].to(w.dtype), sin[:, :, None].to(w.dtype)  # [A, T, 1, D]: all heads at once
    for i, L in enumerate(w.layers):
        h = _rms(x, L["ln1"], w.eps)
        qkv = _linear(h, L["wqkv"], L["bqkv"])
        qk = _rotate(qkv[..., :w.q_size + w.kv_size].view(A, T, H + KV, D), cos, sin)  # one RoPE for q and k
        q = qk[:, :, :H].transpose(1, 2)
        cache.k[i][rows[:, None], :, pos] = qk[:, :, H:]
        cache.v[i][rows[:, None], :, pos] = qkv[..., w.q_size + w.kv_size:].view(A, T, KV, D)
        keys = cache.k[i, first_slot:first_slot + A, :, :span]
        vals = cache.v[i, first_slot:first_slot + A, :, :span]
        q = q.reshape(A, KV, g * T, D)
        o = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask, scale=D ** -0.5)
        o = o.view(A, KV, g, T, D).permute(0, 3, 1, 2, 4).reshape(A, T, H * D)
        x = x + _linear(o, L["wo"], L["bo"])
        h = _rms(x, L["ln2"], w.eps)
        gate, up = _linear(h, L["wgu"], L["bgu"]).split(w.inter, -1)
        x = x + _linear(F.silu(gate) * up, L["wd"], L["bd"])
    idx = torch.full((A,), T - 1, device=ids.device) if last is None else last
    x = x[torch.arange(A, device=ids.device), idx]
    return _linear(_rms(x, w.norm, w.eps), w.head, w.head_b).float()
