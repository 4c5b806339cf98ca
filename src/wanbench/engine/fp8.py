"""FP8 linear layers (APPROXIMATE, --fp8 linear|all): torchao's float8 inference, applied to the experts' blocks.

Every nn.Linear inside the transformer blocks (the fused QKV projections included) gets float8 e4m3 weights and
dynamically quantised float8 activations, multiplied on the FP8 tensor cores (compute capability 8.9 or newer);
compiled, the activation casts fuse into the ops around them. Scales are per row (one per output channel of the
weight and per token of the activation), which keeps an outlier from taking the precision of the rest; per-tensor
scales measured no faster by 3% (benchmarks/RESULTS.md, "FP8 linear layers through torchao"). The weights keep
their names in the state dict, so a checkpoint loads as before; embeddings, norms and the output projection stay
bf16.
"""

from __future__ import annotations

import torch
from torch import nn

from wanbench.config import FP8_GPUS
from wanbench.errors import UserError

MIN_CAPABILITY = (8, 9)


def require_fp8(device: torch.device, mode: str = "linear", dtype: str = "bfloat16") -> None:
    """Refuse, before anything is loaded, a run whose device, dtype or packages cannot do --fp8 `mode` (one
    line, the fix)."""
    if device.type != "cuda":
        raise UserError(f"--fp8 {mode} needs an NVIDIA GPU ({FP8_GPUS[mode]}); this run is on the CPU: drop --fp8")
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        raise UserError(f"--fp8 needs compute capability 8.9 or newer (FP8 tensor cores); {name} has "
                        f"{capability[0]}.{capability[1]}: drop --fp8")
    if mode in ("attention", "all"):
        from wanbench.engine import fp8_attention

        if dtype == "float32":
            raise UserError(f"--fp8 {mode} attends in FP8 from bfloat16 or float16, not float32 (the tiny presets' "
                            "default): add --dtype bfloat16")
        fp8_attention.require(device, mode)
    if mode in ("linear", "all"):
        try:
            import torchao.quantization  # noqa: F401
        except ImportError:
            raise UserError(f"--fp8 {mode} needs torchao: pip install 'wanbench[fp8]' (or pip install torchao)"
                            ) from None


def _block_linear(module: nn.Module, fqn: str) -> bool:
    # FP8 GEMMs want both dimensions in multiples of 16
    return (isinstance(module, nn.Linear) and fqn.startswith("blocks.")
            and module.in_features % 16 == 0 and module.out_features % 16 == 0)


def quantize_blocks(model: nn.Module) -> int:
    """Quantise the linear layers of `model.blocks` in place (--fp8 linear); returns how many."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    count = sum(_block_linear(m, name) for name, m in model.named_modules())
    # A row of zeros (the padded text tokens the cross-attention projects) would get a zero scale and 0/0 = NaN:
    # the lower bound on each activation's absolute maximum keeps its scale finite.
    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), activation_value_lb=1e-12)
    quantize_(model, config, filter_fn=_block_linear)
    return count
