"""ModelSpec: the shape facts of a loaded base model that adapters and the KV cache depend on."""

from __future__ import annotations

from dataclasses import dataclass

from gpu_engine.families.registry import FUSED_PROJECTIONS, LLAMA_ATTENTION, LLAMA_MLP, SUPPORTED_ARCHITECTURES

ATTENTION_PROJECTIONS = LLAMA_ATTENTION
MLP_PROJECTIONS = LLAMA_MLP
PROJECTIONS = ATTENTION_PROJECTIONS + MLP_PROJECTIONS
__all__ = ["ATTENTION_PROJECTIONS", "MLP_PROJECTIONS", "PROJECTIONS", "SUPPORTED_ARCHITECTURES", "ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """Architecture facts read from the checkpoint's config.json."""

    arch: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    sliding_windows: tuple[int | None, ...]  # per layer; None = full causal attention
    eos_token_ids: tuple[int, ...]
    attention_projections: tuple[str, ...] = ATTENTION_PROJECTIONS  # in `self_attn`, output projection last
    mlp_projections: tuple[str, ...] = MLP_PROJECTIONS  # in `mlp`, output projection last

    @property
    def projections(self) -> tuple[str, ...]:
        """The LoRA-targetable linear modules of one decoder layer."""
        return self.attention_projections + self.mlp_projections

    def block_of(self, proj: str) -> str:
        """The decoder-layer submodule holding `proj`: "self_attn" or "mlp"."""
        return "self_attn" if proj in self.attention_projections else "mlp"

    def projection_shape(self, proj: str) -> tuple[int, int]:
        """(in_features, out_features) of a LoRA-targetable projection; a fused one outputs its parts side by side."""
        q_out = self.num_heads * self.head_dim
        kv_out = self.num_kv_heads * self.head_dim
        shapes = {
            "q_proj": (self.hidden_size, q_out),
            "k_proj": (self.hidden_size, kv_out),
            "v_proj": (self.hidden_size, kv_out),
            "o_proj": (q_out, self.hidden_size),
            "dense": (q_out, self.hidden_size),
            "gate_proj": (self.hidden_size, self.intermediate_size),
            "up_proj": (self.hidden_size, self.intermediate_size),
            "fc1": (self.hidden_size, self.intermediate_size),
            "down_proj": (self.intermediate_size, self.hidden_size),
            "fc2": (self.intermediate_size, self.hidden_size),
        }
        if proj in FUSED_PROJECTIONS:
            parts = [shapes[part] for part in FUSED_PROJECTIONS[proj]]
            return parts[0][0], sum(out for _, out in parts)
        return shapes[proj]
