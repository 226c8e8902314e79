"""One forward function per decoder-block shape, over one packed step of T rows.

Every projection runs once over all rows (base weights, dense or NF4), then the segmented LoRA
delta is added to its output in place — for a fused projection (Phi-3's `qkv_proj`), to the
fused output, before it is split. What differs between families arrived here as data (norm
functions, projection names, scales) chosen by the loader; these functions do not branch on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from gpu_engine.attention import AttentionPlan, attend
from gpu_engine.families.layers import apply_rotary
from gpu_engine.kv_cache import KVCache
from gpu_engine.lora_ops import LoraStep
from gpu_engine.model_loader import BaseModel, LayerWeights


@dataclass
class Step:
    """What every layer of one step shares: the cache, the attention plan, the LoRA layout, rotary rows."""

    kv_cache: KVCache
    plan: AttentionPlan
    lora: LoraStep
    rope: dict[str, tuple[torch.Tensor, torch.Tensor]]  # rope kind -> (cos, sin) [T, R] at the step's positions

    def project(self, layer: LayerWeights, index: int, name: str, x: torch.Tensor) -> torch.Tensor:
        """x: [T, in] -> base projection plus this step's LoRA deltas [T, out]."""
        y = layer.projections[name](x)
        self.lora.apply(y, x, index, name)
        return y

    def project_parts(
        self, layer: LayerWeights, index: int, names: tuple[str, ...], sizes: tuple[int, ...], x: torch.Tensor
    ) -> list[torch.Tensor] | tuple[torch.Tensor, ...]:
        """The parts (q, k, v or gate, up) computed by projections `names`: one per name, or one fused output split."""
        outputs = [self.project(layer, index, name, x) for name in names]
        if len(outputs) == len(sizes):
            return outputs
        return torch.split(outputs[0], sizes, dim=-1)


def attention(model: BaseModel, index: int, layer: LayerWeights, x: torch.Tensor, step: Step) -> torch.Tensor:
    """x: [T, H] (normed) -> attention output projected back to [T, H]."""
    spec, shape = model.spec, model.shape
    num_rows = x.shape[0]
    q, k, v = step.project_parts(layer, index, shape.attention_inputs, shape.qkv_sizes, x)
    q = layer.q_norm(q.reshape(num_rows, spec.num_heads, spec.head_dim))  # [T, H, D]
    k = layer.k_norm(k.reshape(num_rows, spec.num_kv_heads, spec.head_dim))  # [T, KVH, D]
    v = v.reshape(num_rows, spec.num_kv_heads, spec.head_dim)
    cos, sin = step.rope[layer.rope]
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    o = attend(q, k, v, step.kv_cache, index, step.plan, spec.sliding_windows[index], shape.attention_scale,
               shape.attn_softcap)  # [T, H, D]
    return step.project(layer, index, shape.attention_output, o.reshape(num_rows, -1))


def mlp(model: BaseModel, index: int, layer: LayerWeights, x: torch.Tensor, step: Step) -> torch.Tensor:
    """x: [T, H] (normed) -> [T, H]: act(gate) * up, or act(fc1), then the down projection."""
    shape = model.shape
    parts = step.project_parts(layer, index, shape.mlp_inputs, shape.mlp_sizes, x)  # [T, I] each
    hidden = shape.activation(parts[0])
    if shape.gated_mlp:
        hidden = hidden * parts[1]
    return step.project(layer, index, shape.mlp_output, hidden)


def prenorm_block(model: BaseModel, index: int, layer: LayerWeights, h: torch.Tensor, step: Step) -> torch.Tensor:
    """Llama, Qwen, Gemma, Phi-3: attention then MLP, each on a normed residual (Gemma 2/3 also norm the outputs)."""
    h = h + layer.attn_out_norm(attention(model, index, layer, layer.input_norm(h), step))
    return h + layer.mlp_out_norm(mlp(model, index, layer, layer.pre_mlp_norm(h), step))


def parallel_block(model: BaseModel, index: int, layer: LayerWeights, h: torch.Tensor, step: Step) -> torch.Tensor:
    """Phi-2: attention and MLP read the same normed input; both add to the residual."""
    x = layer.input_norm(h)
    return attention(model, index, layer, x, step) + mlp(model, index, layer, x, step) + h


BLOCKS: dict[str, Callable[..., torch.Tensor]] = {"prenorm": prenorm_block, "parallel": parallel_block}
