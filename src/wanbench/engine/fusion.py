"""Fused attention projections (one matmul instead of three) without a second copy of the weights.

diffusers' `fuse_qkv_projections` concatenates to_q/to_k/to_v (self-attention) and to_k/to_v
(cross-attention) into new to_qkv / to_kv layers and keeps the parts for `unfuse_qkv_projections`: for
the a14b experts that is ~21 GB of weights held twice. Here the parts become views of the fused weights, so
they cost nothing, still name the same values in state_dict and still serve the cross-attention's to_q, which
stays unfused.
Each attention is fused and its parts made views before the next one is fused, so loading peaks at one
layer's extra weights (fusing the whole expert first, as diffusers' model-level call does, holds one expert's
attention weights twice at once).
Modules on the meta device (FSDP fills them later, parameter by parameter) are fused the stock way: FSDP
shards every parameter into its own storage anyway.
"""

from __future__ import annotations

import torch
from diffusers.models.attention import AttentionModuleMixin

_PARTS = {"to_qkv": ("to_q", "to_k", "to_v"), "to_kv": ("to_k", "to_v"), "to_added_kv": ("add_k_proj", "add_v_proj")}


def fuse_projections(expert: torch.nn.Module) -> int:
    """Fuse every attention's projections in `expert`; returns how many part layers now share storage."""
    shared = 0
    for attn in expert.modules():
        if not (isinstance(attn, AttentionModuleMixin) and attn._supports_qkv_fusion):
            continue
        attn.fuse_projections()
        for fused_name, part_names in _PARTS.items():
            fused = getattr(attn, fused_name, None)
            if fused is None or fused.weight.is_meta:
                continue
            parts = [getattr(attn, name) for name in part_names]
            for tensor_name in ("weight", "bias"):
                whole = getattr(fused, tensor_name)
                if whole is None:
                    continue
                pieces = whole.split([getattr(p, tensor_name).shape[0] for p in parts])
                for part, piece in zip(parts, pieces, strict=True):
                    setattr(part, tensor_name, torch.nn.Parameter(piece, requires_grad=False))
            shared += len(parts)
    return shared
