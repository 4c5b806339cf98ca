"""Attention backend choice: our names -> diffusers' attention dispatcher backends."""

from __future__ import annotations

import torch

from wanbench.errors import UserError

BACKENDS = {
    "cudnn": "_native_cudnn",
    "flash": "_native_flash",
    "efficient": "_native_efficient",
    "math": "_native_math",
    "sdpa": "native",
}


def resolve_backend(choice: str, device: torch.device) -> str:
    """The diffusers backend name for --attention (auto: cuDNN SDPA on Hopper and newer, else native)."""
    if choice == "auto":
        if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9:
            return BACKENDS["cudnn"]
        return BACKENDS["sdpa"]
    if choice not in BACKENDS:
        raise UserError(f"bad --attention {choice!r}: choose auto, {', '.join(BACKENDS)}")
    if device.type != "cuda" and choice in ("cudnn", "flash", "efficient"):
        raise UserError(f"--attention {choice} needs a CUDA device: use --attention sdpa on {device.type}")
    return BACKENDS[choice]


def apply_backend(models: list[torch.nn.Module], backend: str) -> None:
    for model in models:
        model.set_attention_backend(backend)
