"""Attention backend choice: our names -> diffusers' attention dispatcher backends.

`auto` on a CUDA device times each candidate on the run's own attention shape and keeps the
fastest, so the choice is measured per GPU rather than assumed.
"""

from __future__ import annotations

import time

import torch

from wanbench.errors import UserError

BACKENDS = {
    "sdpa": "native",  # torch SDPA picks its kernel (cuDNN, flash, ...) per call
    "cudnn": "_native_cudnn",
    "flash": "_native_flash",
    "efficient": "_native_efficient",
    "math": "_native_math",
}
AUTO_CANDIDATES = ("sdpa", "cudnn", "flash", "efficient")


def resolve_backend(
    choice: str, device: torch.device, shape: tuple[int, int, int, int] | None = None,
    dtype: torch.dtype = torch.bfloat16, allow_cpu_flash: bool = False,
) -> tuple[str, dict[str, float]]:
    """(diffusers backend name, measured ms per candidate) for --attention; shape is [B, S, H, D]."""
    if choice not in BACKENDS and choice != "auto":
        raise UserError(f"bad --attention {choice!r}: choose auto, {', '.join(BACKENDS)}")
    if device.type != "cuda":
        if choice == "flash" and allow_cpu_flash:
            return BACKENDS["flash"], {}  # CPU ring attention (launch/distributed.py routes the kernel)
        if choice in ("cudnn", "flash", "efficient"):
            raise UserError(f"--attention {choice} needs a CUDA device: use --attention sdpa on {device.type}")
        return BACKENDS["sdpa" if choice == "auto" else choice], {}
    if choice != "auto":
        return BACKENDS[choice], {}
    if shape is None:
        return BACKENDS["sdpa"], {}
    timings = {name: time_backend(BACKENDS[name], shape, device, dtype) for name in AUTO_CANDIDATES}
    usable = {name: ms for name, ms in timings.items() if ms == ms}  # NaN = not runnable here
    best = min(usable, key=usable.__getitem__) if usable else "sdpa"
    return BACKENDS[best], timings


def time_backend(
    backend: str, shape: tuple[int, int, int, int], device: torch.device, dtype: torch.dtype, repeats: int = 3
) -> float:
    """Median ms of one attention call through diffusers' dispatcher; NaN if the backend cannot run."""
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    generator = torch.Generator(device).manual_seed(0)
    q, k, v = (torch.randn(shape, device=device, dtype=dtype, generator=generator) for _ in range(3))
    try:
        dispatch_attention_fn(q, k, v, backend=backend)
        times = []
        for _ in range(repeats):
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            dispatch_attention_fn(q, k, v, backend=backend)
            torch.cuda.synchronize(device)
            times.append((time.perf_counter() - start) * 1e3)
    except (RuntimeError, ValueError, NotImplementedError):
        return float("nan")
    finally:
        del q, k, v
    return sorted(times)[len(times) // 2]


def apply_backend(models: list[torch.nn.Module], backend: str) -> None:
    for model in models:
        model.set_attention_backend(backend)
