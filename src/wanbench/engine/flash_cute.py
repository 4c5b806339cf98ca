"""FlashAttention 4's CuTe kernels (package flash-attn-4, module flash_attn.cute) as one torch custom op.

It is the fastest self-attention kernel wanbench knows on Hopper at Wan's shapes (benchmarks/RESULTS.md,
"Attention kernels"); --attention auto times it against the others. diffusers' dispatcher reaches FA4 only through a
Hub download, so wanbench calls the installed package itself, from its self-attention processors
(engine/wan_attention.py). The custom op keeps torch.compile from tracing into the CuTe DSL: compiled
blocks call it as one opaque kernel. `kernel` is the call behind the op, a module attribute so that CPU
tests can stand a reference attention in for the GPU kernel and check everything around it.
"""

from __future__ import annotations

import torch

from wanbench.errors import UserError, first_line

INSTALL_HINT = "pip install flash-attn-4 (with nvidia-cutlass-dsl[cu13] on CUDA 13)"


def _flash_attn_func(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from flash_attn.cute import flash_attn_func

    out = flash_attn_func(q, k, v)
    return out[0] if isinstance(out, tuple) else out


kernel = _flash_attn_func


def unavailable_reason(device: torch.device) -> str | None:
    """Why the kernel cannot run on `device` (None when it can)."""
    if device.type != "cuda":
        return f"FlashAttention 4 needs a CUDA GPU, not {device.type}"
    if torch.cuda.get_device_capability(device)[0] < 9:
        return "FlashAttention 4's CuTe kernels need a Hopper or newer GPU"
    try:
        import flash_attn.cute  # noqa: F401
    except Exception as error:  # an incomplete install fails in many ways (missing DSL libraries, ABI)
        return f"flash_attn.cute is not importable ({type(error).__name__}: {first_line(error)}): {INSTALL_HINT}"
    return None


def require(device: torch.device) -> None:
    reason = unavailable_reason(device)
    if reason is not None:
        raise UserError(f"--attention fa4: {reason}; or use --attention auto")


@torch.library.custom_op("wanbench::flash_attn_cute", mutates_args=())
def flash_attn_cute(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Softmax attention of [B, S, H, D] tensors (any strides with D contiguous), [B, S, H, D] out."""
    return kernel(query, key, value)


@flash_attn_cute.register_fake
def _(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return query.new_empty((*query.shape[:-1], value.shape[-1]))
