"""One `Family` per served `model_type`: every way a family differs from Llama, in one table.

Pure data, no torch. The loader reads a checkpoint through its family (which HF module is which
norm, which projections exist); the forward only sees what the loader built from it. Values that
vary between checkpoints of one family (soft-capping, sliding windows, rotary fraction, biases,
attention scale) are read from config.json at load time, not listed here.
"""

from __future__ import annotations

from dataclasses import dataclass

LLAMA_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
LLAMA_MLP = ("gate_proj", "up_proj", "down_proj")
# a fused projection's output is its parts' outputs side by side, in this order
FUSED_PROJECTIONS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
BLOCK_SHAPES = ("prenorm", "parallel")
NORM_KINDS = ("rms", "rms_offset", "layer")


@dataclass(frozen=True)
class Family:
    """How to read and run one architecture.

    The last name of `attention_projections` / `mlp_projections` is the output projection; the
    ones before it are the input projections (one fused or several). A norm name is the module
    name inside a decoder layer; None means no such norm.
    """

    model_type: str
    covers: str  # the LoRA Land base or current model this family serves (documentation)
    block: str = "prenorm"  # "prenorm": h += attn(norm(h)); h += mlp(norm(h)). "parallel": h += attn(x) + mlp(x)
    norm: str = "rms"  # "rms": w * x_hat; "rms_offset": (1 + w) * x_hat in fp32; "layer": LayerNorm with bias
    attention_projections: tuple[str, ...] = LLAMA_ATTENTION
    mlp_projections: tuple[str, ...] = LLAMA_MLP
    input_norm: str = "input_layernorm"
    attn_out_norm: str | None = None  # applied to the attention output before the residual add
    pre_mlp_norm: str | None = "post_attention_layernorm"
    mlp_out_norm: str | None = None  # applied to the MLP output before the residual add
    qk_norms: tuple[str, str] | None = None  # per-head norms of q and k (before rotary), if the layer has them
    final_norm: str = "norm"
    activation_key: str = "hidden_act"  # the config.json key naming the MLP activation (transformers' ACT2FN)
    scaled_embeddings: bool = False  # embeddings times sqrt(hidden_size), rounded to the model dtype
    rope_per_layer_type: bool = False  # one rotary table per layer type (local/global bases)

    def __post_init__(self) -> None:
        if self.block not in BLOCK_SHAPES:
            raise ValueError(f"{self.model_type}: block must be one of {BLOCK_SHAPES}")
        if self.norm not in NORM_KINDS:
            raise ValueError(f"{self.model_type}: norm must be one of {NORM_KINDS}")
        if len(self.attention_projections) < 2 or len(self.mlp_projections) < 2:
            raise ValueError(f"{self.model_type}: needs input and output projections")

    @property
    def projections(self) -> tuple[str, ...]:
        return self.attention_projections + self.mlp_projections

    @property
    def gated_mlp(self) -> bool:
        """act(gate) * up (two input parts, fused or not) rather than act(fc1)."""
        return len(unfused_parts(self.mlp_projections[:-1])) == 2


_GEMMA_SANDWICH = dict(
    norm="rms_offset",
    attn_out_norm="post_attention_layernorm",
    pre_mlp_norm="pre_feedforward_layernorm",
    mlp_out_norm="post_feedforward_layernorm",
    activation_key="hidden_activation",
    scaled_embeddings=True,
)

FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        Family("llama", "Llama-2-7B, Llama-2-7B-chat, Llama-3.x"),
        Family("mistral", "Mistral-7B-v0.1, Mistral-7B-Instruct-v0.1, Zephyr-7B-beta"),
        Family("qwen2", "Qwen2 / Qwen2.5"),
        Family("qwen3", "Qwen3", qk_norms=("q_norm", "k_norm")),
        Family("gemma", "Gemma-2B, Gemma-2B-it, Gemma-7B, Gemma-7B-it", norm="rms_offset", scaled_embeddings=True),
        Family("gemma2", "Gemma 2", **_GEMMA_SANDWICH),
        Family(
            "gemma3_text", "Gemma 3 (text)", qk_norms=("q_norm", "k_norm"), rope_per_layer_type=True, **_GEMMA_SANDWICH
        ),
        Family(
            "phi3", "Phi-3-mini, Phi-4; Phi-3.5-mini, Phi-4-mini (longrope) within their original context",
            attention_projections=("qkv_proj", "o_proj"), mlp_projections=("gate_up_proj", "down_proj"),
        ),
        Family(
            "phi", "Phi-2", block="parallel", norm="layer",
            attention_projections=("q_proj", "k_proj", "v_proj", "dense"), mlp_projections=("fc1", "fc2"),
            pre_mlp_norm=None, qk_norms=("q_layernorm", "k_layernorm"), final_norm="final_layernorm",
        ),
    )
}
SUPPORTED_ARCHITECTURES = tuple(FAMILIES)


def unfused_parts(names: tuple[str, ...]) -> tuple[str, ...]:
    """The projections `names` compute, fused ones expanded: ("qkv_proj",) -> ("q_proj", "k_proj", "v_proj")."""
    return tuple(part for name in names for part in FUSED_PROJECTIONS.get(name, (name,)))


def family_for(model_type: str) -> Family | None:
    return FAMILIES.get(model_type)
