"""Attention kernels on Wan 2.2 A14B's shapes, one GPU: cuDNN SDPA (wanbench's measured choice), torch's flash
kernel, FlashAttention 4's CuTe kernels (flash_attn.cute, which has a Hopper forward) and SageAttention 1's
Triton kernel (INT8 Q.K^T, FP16 P.V: approximate) when installed.
FP8 candidates (approximate; need the `cudnn` package of nvidia-cudnn-frontend): cuDNN's FP8 SDPA with per-tensor
scales as `--fp8 attention` runs it (engine/fp8_attention.py), timed alone on pre-quantised inputs
(`cudnn_fp8_kernel_only`) and with the amax, scale and casts eager (`cudnn_fp8_with_casts`) or compiled
(`cudnn_fp8_with_compiled_casts`).
On Hopper that kernel takes only per-tensor scales, FP32 descales of shape (1, 1, 1, 1) (cudnn-frontend
docs/operations/Attention.md, "SDPA FP8 Forward"; block scales, sdpa_mxfp8, are Blackwell-only in
include/cudnn_frontend/node/scaled_dot_product_flash_attention.h; a (1, H, 1, 1) descale built no plan on an H200
with cuDNN 9.19), so there is no per-head variant.

A faster A14B forward on one GPU needs attention faster than cuDNN's; this script says whether a kernel on the
image does that, exactly. Each kernel is timed with CUDA
events after warm-up (median, min, max of `--repeats`), and its output is compared with an fp32 reference on
the first heads (relative L2 error), next to cuDNN's own error, so "faster" is only claimed for a kernel as
exact as the one it would replace.

Usage (device): PYTHONPATH=src python3 benchmarks/attention_kernels.py --out DIR/attention-kernels-h200.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ulysses_kernels import time_ms  # benchmarks/ is on sys.path when a script there runs

# [batch, query tokens, key tokens, heads, head dim]: 480*832*81 latents -> 21 x 30 x 52 patches = 32,760
# tokens; 40 heads of 128. Ulysses rank of 2: 20 heads. Cross-attention: 512 text tokens.
SHAPES = {
    "self_40h": (1, 32760, 32760, 40, 128),
    "self_20h_ulysses2": (1, 32760, 32760, 20, 128),
    "cross_40h": (1, 32760, 512, 40, 128),
}


def sdpa(backend: SDPBackend):
    def run(q, k, v):  # [B, S, H, D] in and out, as diffusers' native backend passes them (transposed views)
        with sdpa_kernel(backend):
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)
    return run


def fa4():
    from flash_attn.cute import flash_attn_func

    def run(q, k, v):
        out = flash_attn_func(q, k, v)
        return out[0] if isinstance(out, tuple) else out
    return run


def sage_int8():
    from sageattention import sageattn

    return lambda q, k, v: sageattn(q, k, v, tensor_layout="NHD")


@dataclass(frozen=True)
class Staged:
    """A kernel timed in stages: `prepare(q, k, v)` and `finish(out)` run untimed, only `run(*prepared)` is timed,
    so a kernel on other input or output formats (FP8) can be timed without its conversions."""

    prepare: Callable[..., tuple]
    run: Callable[..., Any]
    finish: Callable[[Any], torch.Tensor]


def cudnn_fp8(casts_timed: bool, compiled: bool = False) -> Staged:
    """wanbench's --fp8 attention (engine/fp8_attention.py: cuDNN's FP8 SDPA, per-tensor scales) on bf16
    [B, S, H, D] inputs, bf16 out. casts_timed: the timed call also computes the amaxes and scales, casts q, k, v
    to e4m3 and dequantises O; else those run untimed and only the cuDNN kernel is timed. compiled: the whole call
    through torch.compile, as in the engine's compiled blocks (amax, scale and cast fused per tensor; there they
    fuse into the RoPE and projections too)."""
    from wanbench.engine import fp8_attention

    fp8_attention.require(torch.device("cuda"))
    if casts_timed:
        attend = torch.compile(fp8_attention.attend) if compiled else fp8_attention.attend
        return Staged(lambda q, k, v: (q, k, v), attend, lambda out: out)
    # run returns O with V's descale (inputs[5]) for finish
    return Staged(fp8_attention.quantise_inputs,
                  lambda *inputs: (fp8_attention.cudnn_fp8_sdpa(*inputs), inputs[5]),
                  lambda out: fp8_attention.dequantise_output(*out, torch.bfloat16))


KERNELS = {"cudnn": lambda: sdpa(SDPBackend.CUDNN_ATTENTION), "torch_flash": lambda: sdpa(SDPBackend.FLASH_ATTENTION),
           "fa4_cute": fa4, "sage_int8_triton": sage_int8,
           "cudnn_fp8_kernel_only": lambda: cudnn_fp8(casts_timed=False),
           "cudnn_fp8_with_casts": lambda: cudnn_fp8(casts_timed=True),
           "cudnn_fp8_with_compiled_casts": lambda: cudnn_fp8(casts_timed=True, compiled=True)}


def reference(q, k, v, heads: int) -> torch.Tensor:
    """fp32 attention of the first `heads` heads, one head at a time ([B, S, h, D])."""
    outs = []
    for h in range(heads):
        qh, kh, vh = (x[:, :, h].float() for x in (q, k, v))
        scores = torch.einsum("bsd,btd->bst", qh, kh) / math.sqrt(q.shape[-1])
        outs.append(torch.einsum("bst,btd->bsd", scores.softmax(-1), vh))
        del scores
    return torch.stack(outs, dim=2)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.float() - ref).norm() / ref.norm())


def time_kernel(run, inputs: tuple, warmup: int, repeats: int) -> dict:
    """The first call (a JIT kernel compiles there) apart, then ulysses_kernels' CUDA-event medians."""
    start = time.perf_counter()
    run(*inputs)
    torch.cuda.synchronize()
    first_s = time.perf_counter() - start
    return {"first_call_s": first_s, **time_ms(lambda: run(*inputs), warmup, repeats), "n": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--ref-heads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    from wanbench.measure.env import capture_environment

    result = {"command": " ".join(sys.argv), "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
              "cudnn": torch.backends.cudnn.version(), "env": capture_environment(), "shapes": {}}
    try:
        import flash_attn.cute as fa
        result["flash_attn_cute"] = getattr(fa, "__version__", "?")
    except Exception as error:  # recorded; the other kernels still run
        result["flash_attn_cute"] = f"not importable: {error!r}"
    try:
        import cudnn
        result["cudnn_frontend"] = f"{cudnn.__version__}, backend {cudnn.backend_version()}"
    except Exception as error:
        result["cudnn_frontend"] = f"not importable: {error!r}"
    for name, (b, s, s_kv, h, d) in SHAPES.items():
        q = torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(b, s_kv, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        ref = reference(q, k, v, args.ref_heads)
        flop = 4 * b * h * s * s_kv * d
        rows = {}
        for kernel, make in KERNELS.items():
            try:
                made = make()
                staged = made if isinstance(made, Staged) else Staged(lambda *x: x, made, lambda out: out)
                inputs = staged.prepare(q, k, v)
                row = time_kernel(staged.run, inputs, args.warmup, args.repeats)
                out = staged.finish(staged.run(*inputs))
                del inputs
                row["tflops"] = flop / (row["median_ms"] * 1e-3) / 1e12
                row["rel_err_vs_fp32"] = rel_err(out[:, :, : args.ref_heads], ref)
                del out
            except Exception as error:  # one kernel's failure is a result, not the end
                row = {"error": repr(error), "trace": traceback.format_exc()[-2000:]}
            rows[kernel] = row
            print(name, kernel, {k_: v_ for k_, v_ in row.items() if k_ != "trace"}, flush=True)
        result["shapes"][name] = {"shape_bsshd": [b, s, s_kv, h, d], "flop": flop, "kernels": rows}
        del q, k, v, ref
        torch.cuda.empty_cache()
    with open(args.out, "w") as file:
        json.dump(result, file, indent=1)


if __name__ == "__main__":
    main()
