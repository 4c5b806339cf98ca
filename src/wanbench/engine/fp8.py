"""FP8 linear layers (APPROXIMATE, opt-in with --fp8 linear).

Weights and activations in float8 e4m3 with per-row scales (per output channel for weights, per token for
activations), multiplied by torch._scaled_mm into the activation dtype; the bias is added after. Applied to
every nn.Linear inside the transformer blocks; embeddings, norms and the output projection stay bf16.
"""

from __future__ import annotations

import torch
from torch import nn

E4M3_MAX = 448.0


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 tensor, fp32 scale per row) with each row's absolute maximum mapped to the e4m3 maximum."""
    scale = x.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / E4M3_MAX
    return (x.float() / scale).to(torch.float8_e4m3fn), scale


class Fp8Linear(nn.Module):
    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight, scale = quantize_rows(linear.weight.data)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_fp8", weight)
        self.register_buffer("weight_scale", scale.t().contiguous())  # [1, out]
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        pad = (-rows.shape[0]) % 16  # fp8 GEMMs want row counts in multiples of 16
        if pad:
            rows = torch.nn.functional.pad(rows, (0, 0, 0, pad))
        xq, xs = quantize_rows(rows)
        out = torch._scaled_mm(xq, self.weight_fp8.t(), scale_a=xs, scale_b=self.weight_scale, out_dtype=x.dtype)
        if pad:
            out = out[: out.shape[0] - pad]
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)


def convert_blocks_to_fp8(model: nn.Module) -> int:
    """Swap every nn.Linear inside model.blocks for an Fp8Linear; returns how many were swapped."""
    swapped = 0
    for block in model.blocks:
        for module in list(block.modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, nn.Linear) and child.in_features % 16 == 0 and child.out_features % 16 == 0:
                    setattr(module, child_name, Fp8Linear(child))
                    swapped += 1
    return swapped
