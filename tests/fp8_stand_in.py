"""What the FP8 GPU paths compute, standing in for them on a CPU: cuDNN's FP8 SDPA as attention of the dequantised
FP8 inputs with O rounded to FP8, and torchao's float8 linear layers (which run on a CPU once its hardware check is
lifted). Used in-process by fixtures, and in every process of a multi-process run through fp8_on_cpu/."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F


def reference_fp8_sdpa(q8, k8, v8, descale_q, descale_k, descale_v, scale_o, calls: list | None = None):
    if calls is not None:
        calls.append((tuple(q8.shape), q8.dtype, q8.is_contiguous(), v8.is_contiguous()))
    q, k, v = ((x.float() * d.flatten()).transpose(1, 2) for x, d in ((q8, descale_q), (k8, descale_k),
                                                                     (v8, descale_v)))
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
    return (out * scale_o.flatten()).to(torch.float8_e4m3fn).contiguous()


def install_in_process() -> None:
    """Let --fp8 run on this process's CPU: the device checks pass, the kernel is the reference above."""
    import torchao.quantization.quant_api as quant_api

    from wanbench.engine import fp8, fp8_attention

    fp8.require_fp8 = lambda *args, **kwargs: None
    fp8_attention.kernel = reference_fp8_sdpa
    quant_api._check_hardware_support = lambda *args, **kwargs: None


def subprocess_env() -> dict[str, str]:
    """The environment of a CLI subprocess whose every process (torchrun's workers too) runs --fp8 on the CPU."""
    tests = Path(__file__).parent
    path = os.pathsep.join([str(tests / "fp8_on_cpu"), str(tests), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}
