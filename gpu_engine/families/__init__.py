"""Base-model families: what differs between Llama, Gemma, Phi, Qwen3, ... lives here, nowhere else.

`registry` holds one `Family` per served `model_type` (module names, norm kind, block shape);
`layers` holds the small torch pieces the blocks share (norms, rotary); `blocks` holds the one
forward function per block shape.
"""

from gpu_engine.families.registry import FAMILIES, SUPPORTED_ARCHITECTURES, Family, family_for

__all__ = ["FAMILIES", "SUPPORTED_ARCHITECTURES", "Family", "family_for"]
