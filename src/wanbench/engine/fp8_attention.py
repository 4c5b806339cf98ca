"""FP8 self-attention (APPROXIMATE, --fp8 attention|all): cuDNN's FP8 SDPA through the cuDNN frontend package.

On Hopper it is the one maintained FP8 attention kernel that beats FlashAttention 4 bf16 at Wan's shapes once its
casts are compiled (benchmarks/RESULTS.md, "FP8 attention candidates"). There it takes per-tensor scales only and
writes O in FP8, so q, k and v are each quantised with one scale (448 / amax, computed on the GPU: no host sync)
by plain torch ops that torch.compile fuses into the RoPE and projections that write them; O is scaled by V's
scale, which cannot overflow (each output row is a convex combination of V's rows), and dequantised after.
The kernel is one torch custom op, opaque to torch.compile; `kernel` is the call behind it, a module attribute so
that CPU tests can stand a reference in for the GPU kernel. Cross-attention (512 text keys) stays bf16, where this
kernel is slower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from wanbench.errors import UserError, first_line

INSTALL_HINT = "pip install 'wanbench[fp8-attention]' (or pip install nvidia-cudnn-frontend)"
FP8_MAX = 448.0  # largest finite float8 e4m3fn


def unavailable_reason(device: torch.device) -> str | None:
    """Why cuDNN's FP8 SDPA cannot run on `device` (None when it can)."""
    if device.type != "cuda":
        return f"FP8 attention needs an NVIDIA GPU, not {device.type}"
    if torch.cuda.get_device_capability(device) < (9, 0):
        name = torch.cuda.get_device_name(device)
        return f"cuDNN's FP8 attention needs a Hopper or newer GPU; {name} is not: use --fp8 linear"
    try:
        import cudnn  # noqa: F401
    except Exception as error:  # a partial install fails in several ways (missing libraries, ABI)
        return f"the cudnn package is not importable ({type(error).__name__}: {first_line(error)}): {INSTALL_HINT}"
    return None


def require(device: torch.device, mode: str = "attention") -> None:
    reason = unavailable_reason(device)
    if reason is not None:
        raise UserError(f"--fp8 {mode}: {reason}")


def quantise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-tensor e4m3: (x in FP8, scale, descale), the scales float32 [1, 1, 1, 1]. The floor on amax keeps an
    all-zero tensor's scale finite."""
    amax = x.abs().amax().float().clamp_min(1e-12).reshape(1, 1, 1, 1)
    scale = FP8_MAX / amax
    return (x.float() * scale).to(torch.float8_e4m3fn), scale, amax / FP8_MAX


def quantise_inputs(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """cudnn_fp8_sdpa's arguments for bf16 [B, S, H, D] q, k, v; O's scale is V's, so its descale is too."""
    (q8, _, descale_q), (k8, _, descale_k), (v8, scale_v, descale_v) = (quantise(x) for x in (query, key, value))
    return q8, k8, v8, descale_q, descale_k, descale_v, scale_v


def dequantise_output(o8: torch.Tensor, descale_v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (o8.float() * descale_v).to(dtype)


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Softmax attention of [B, S, H, D] tensors in FP8, [B, S, H, D] out in query's dtype."""
    inputs = quantise_inputs(query, key, value)
    return dequantise_output(cudnn_fp8_sdpa(*inputs), inputs[5], query.dtype)


@torch.library.custom_op("wanbench::cudnn_fp8_sdpa", mutates_args=())
def cudnn_fp8_sdpa(q8: torch.Tensor, k8: torch.Tensor, v8: torch.Tensor, descale_q: torch.Tensor,
                   descale_k: torch.Tensor, descale_v: torch.Tensor, scale_o: torch.Tensor) -> torch.Tensor:
    """FP8 [B, S, H, D] q, k, v and their per-tensor descales -> O * scale_o in FP8, [B, S, H, D] contiguous."""
    return kernel(q8.contiguous(), k8.contiguous(), v8.contiguous(), descale_q, descale_k, descale_v, scale_o)


@cudnn_fp8_sdpa.register_fake
def _(q8, k8, v8, descale_q, descale_k, descale_v, scale_o) -> torch.Tensor:
    return q8.new_empty((*q8.shape[:-1], v8.shape[-1]))


@dataclass
class _Graph:
    """One built cuDNN graph (one shape and device) with its tensor handles, constants and workspace."""

    graph: Any
    tensors: dict[str, Any]
    constants: dict[str, torch.Tensor]
    workspace: torch.Tensor


_handles: dict[int, Any] = {}
_graphs: dict[tuple[int, ...], _Graph] = {}


def _build(cudnn: Any, handle: Any, device: torch.device, b: int, s: int, s_kv: int, h: int, d: int) -> _Graph:
    """Non-causal inference FP8 SDPA on [B, S, H, D] memory declared as [B, H, S, D] (the transposed view's
    strides, no copy), attention scale 1/sqrt(D). The softmax's probabilities are at most 1, so S's scale is
    e4m3's maximum (cudnn-frontend's sdpa_fp8 docstring); the amax side outputs are declared because the Hopper
    engines that serve FP8 SDPA write them."""
    fp8, f32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
    graph = cudnn.pygraph(io_data_type=fp8, intermediate_data_type=f32, compute_data_type=f32, handle=handle)

    def bhsd(name: str, seq: int) -> Any:
        return graph.tensor(name=name, dim=[b, h, seq, d], stride=[seq * h * d, d, h * d, 1], data_type=fp8)

    t = {"q": bhsd("q", s), "k": bhsd("k", s_kv), "v": bhsd("v", s_kv)}
    for name in ("descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o"):
        t[name] = graph.tensor(name=name, dim=[1, 1, 1, 1], stride=[1, 1, 1, 1], data_type=f32)
    t["o"], _stats, t["amax_s"], t["amax_o"] = graph.sdpa_fp8(
        q=t["q"], k=t["k"], v=t["v"], descale_q=t["descale_q"], descale_k=t["descale_k"],
        descale_v=t["descale_v"], descale_s=t["descale_s"], scale_s=t["scale_s"], scale_o=t["scale_o"],
        generate_stats=False, attn_scale=1.0 / math.sqrt(d), name="sdpa_fp8")
    t["o"].set_output(True).set_dim([b, h, s, d]).set_stride([s * h * d, d, h * d, 1]).set_data_type(fp8)
    for amax in (t["amax_s"], t["amax_o"]):
        amax.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(f32)
    graph.build([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])

    def full(value: float) -> torch.Tensor:
        return torch.full((1, 1, 1, 1), value, device=device, dtype=torch.float32)

    constants = {"scale_s": full(FP8_MAX), "descale_s": full(1.0 / FP8_MAX), "amax_s": full(0.0), "amax_o": full(0.0)}
    workspace = torch.empty(graph.get_workspace_size(), device=device, dtype=torch.uint8)
    return _Graph(graph, t, constants, workspace)


def _cudnn_kernel(q8, k8, v8, descale_q, descale_k, descale_v, scale_o) -> torch.Tensor:
    import cudnn

    device = q8.device
    b, s, h, d = q8.shape
    key = (device.index, b, s, k8.shape[1], h, d)
    if device.index not in _handles:
        _handles[device.index] = cudnn.create_handle()
    handle = _handles[device.index]
    if key not in _graphs:
        _graphs[key] = _build(cudnn, handle, device, b, s, k8.shape[1], h, d)
    g = _graphs[key]
    cudnn.set_stream(handle, torch.cuda.current_stream(device).cuda_stream)
    o8 = torch.empty_like(q8)
    data = {"q": q8.transpose(1, 2), "k": k8.transpose(1, 2), "v": v8.transpose(1, 2), "o": o8.transpose(1, 2),
            "descale_q": descale_q, "descale_k": descale_k, "descale_v": descale_v, "scale_o": scale_o,
            **g.constants}
    g.graph.execute({g.tensors[name]: x for name, x in data.items()}, g.workspace, handle=handle)
    return o8


kernel = _cudnn_kernel
