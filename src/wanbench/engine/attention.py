"""Attention backend choice: our names -> diffusers' attention dispatcher backends, plus FlashAttention 4's
CuTe kernel (`fa4`, engine/flash_cute.py), which wanbench's self-attention processors call themselves.

`auto` on a CUDA device times each candidate on the run's own attention shape and keeps the
fastest, so the choice is measured per GPU rather than assumed. When fa4 wins, it computes the
self-attention and the fastest dispatcher backend the cross-attention.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from wanbench.engine import flash_cute
from wanbench.errors import UserError

BACKENDS = {
    "sdpa": "native",  # torch SDPA picks its kernel (cuDNN, flash, ...) per call
    "cudnn": "_native_cudnn",
    "flash": "_native_flash",
    "efficient": "_native_efficient",
    "math": "_native_math",
}
AUTO_CANDIDATES = ("sdpa", "cudnn", "flash", "efficient")
KERNELS = ("fa4",)  # self-attention kernels outside diffusers' dispatcher that --attention can choose
FP8_KERNEL = "cudnn-fp8"  # --fp8 attention|all: engine/fp8_attention.py (approximate, never chosen by auto)


@dataclass(frozen=True)
class AttentionChoice:
    backend: str  # diffusers dispatcher backend: cross-attention, and self-attention unless `kernel`
    kernel: str | None = None  # "fa4" or FP8_KERNEL: self-attention through a kernel outside the dispatcher
    timings_ms: dict[str, float] = field(default_factory=dict)


def resolve_backend(
    choice: str, device: torch.device, shape: tuple[int, int, int, int] | None = None,
    dtype: torch.dtype = torch.bfloat16, allow_cpu_flash: bool = False, allow_kernel: bool = True,
) -> AttentionChoice:
    """What --attention means on `device`; shape is [B, S, H, D] of one self-attention call (None: no timing).
    `allow_kernel` is False where self-attention goes through diffusers' own context parallelism."""
    if choice not in BACKENDS and choice not in KERNELS and choice != "auto":
        raise UserError(f"bad --attention {choice!r}: choose auto, {', '.join((*BACKENDS, *KERNELS))}")
    if choice == "fa4":
        flash_cute.require(device)
        return AttentionChoice(BACKENDS["cudnn"], "fa4")
    if device.type != "cuda":
        if choice == "flash" and allow_cpu_flash:
            return AttentionChoice(BACKENDS["flash"])  # CPU ring attention (launch/distributed.py routes it)
        if choice in ("cudnn", "flash", "efficient"):
            raise UserError(f"--attention {choice} needs a CUDA device: use --attention sdpa on {device.type}")
        return AttentionChoice(BACKENDS["sdpa" if choice == "auto" else choice])
    if choice != "auto":
        return AttentionChoice(BACKENDS[choice])
    if shape is None:
        return AttentionChoice(BACKENDS["sdpa"])
    timings = {name: time_attention(BACKENDS[name], shape, device, dtype) for name in AUTO_CANDIDATES}
    if allow_kernel and flash_cute.unavailable_reason(device) is None:
        timings["fa4"] = time_attention("fa4", shape, device, dtype)
    usable = {name: ms for name, ms in timings.items() if ms == ms}  # NaN = not runnable here
    backends = {name: ms for name, ms in usable.items() if name in BACKENDS}
    backend = BACKENDS[min(backends, key=backends.__getitem__) if backends else "sdpa"]
    best = min(usable, key=usable.__getitem__) if usable else "sdpa"
    return AttentionChoice(backend, best if best in KERNELS else None, timings)


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, backend: str,
           kernel: str | None = None) -> torch.Tensor:
    """Attention of [B, S, H, D] tensors through `kernel` if given, else diffusers' dispatcher."""
    if kernel == "fa4":
        return flash_cute.flash_attn_cute(query, key, value)
    if kernel == FP8_KERNEL:
        from wanbench.engine import fp8_attention

        return fp8_attention.attend(query, key, value)
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    return dispatch_attention_fn(query, key, value, backend=backend)


def time_attention(
    name: str, shape: tuple[int, int, int, int], device: torch.device, dtype: torch.dtype, repeats: int = 3
) -> float:
    """Median ms of one attention call (a dispatcher backend or a kernel); NaN if it cannot run."""
    kernel = name if name in KERNELS else None
    generator = torch.Generator(device).manual_seed(0)
    q, k, v = (torch.randn(shape, device=device, dtype=dtype, generator=generator) for _ in range(3))
    try:
        attend(q, k, v, name, kernel)
        times = []
        for _ in range(repeats):
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            attend(q, k, v, name, kernel)
            torch.cuda.synchronize(device)
            times.append((time.perf_counter() - start) * 1e3)
    except Exception:  # a candidate that cannot run here (kernel build, shape, backend checks) is not chosen
        return float("nan")
    finally:
        del q, k, v
    return sorted(times)[len(times) // 2]


def apply_backend(models: list[torch.nn.Module], backend: str) -> None:
    for model in models:
        model.set_attention_backend(backend)
