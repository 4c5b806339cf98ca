"""Attention kernels on Wan 2.2 A14B's shapes, one GPU: cuDNN SDPA (wanbench's measured choice), torch's flash
kernel, FlashAttention 4's CuTe kernels (flash_attn.cute, which has a Hopper forward) and SageAttention 1's
Triton kernel (INT8 Q.K^T, FP16 P.V: approximate) when installed.
FP8 candidates (approximate; need the `cudnn` package of nvidia-cudnn-frontend): cuDNN's FP8 SDPA with per-tensor
scales, timed alone on pre-quantised inputs (`cudnn_fp8_kernel_only`) and with the amax, scale and casts of an
unfused integration (`cudnn_fp8_with_casts`) or compiled (`cudnn_fp8_with_compiled_casts`).
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


FP8_MAX = 448.0  # float8_e4m3fn's largest finite value


def quantise_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-tensor e4m3 quantisation, scale = 448 / amax, all on the GPU (no host sync): (x_fp8, scale, descale),
    scales float32 [1, 1, 1, 1]. No clamp: |x| * scale <= 448 up to fp32 rounding, which rounds back to 448."""
    amax = torch.linalg.vector_norm(x, ord=math.inf).float().clamp_min(1e-12).reshape(1, 1, 1, 1)
    scale = FP8_MAX / amax
    return (x * scale).to(torch.float8_e4m3fn), scale, scale.reciprocal()


@dataclass
class CudnnFp8Graph:
    """One built cuDNN FP8 SDPA graph (one shape) with its constant inputs, side outputs and workspace."""

    graph: Any
    tensors: dict[str, Any]
    constants: dict[str, torch.Tensor]
    workspace: torch.Tensor


def build_cudnn_fp8_graph(cudnn, handle, b: int, s: int, s_kv: int, h: int, d: int) -> CudnnFp8Graph:
    """Non-causal inference FP8 SDPA: q, k, v e4m3 in [B, S, H, D] memory, declared as [B, H, S, D] with the strides
    of the transposed view (no copy), per-tensor descales, attention scale 1/sqrt(D). O is e4m3 too: on Hopper
    cuDNN refuses a bf16/fp16 O for FP8 SDPA (Blackwell and cuDNN 9.13+ only; cudnn-frontend
    include/cudnn_frontend/node/sdpa_support_surface.h), so O is scaled by scale_o and dequantised after."""
    fp8, f32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
    graph = cudnn.pygraph(io_data_type=fp8, intermediate_data_type=f32, compute_data_type=f32, handle=handle)

    def bhsd(name: str, seq: int):
        return graph.tensor(name=name, dim=[b, h, seq, d], stride=[seq * h * d, d, h * d, 1], data_type=fp8)

    def scalar(name: str):
        return graph.tensor(name=name, dim=[1, 1, 1, 1], stride=[1, 1, 1, 1], data_type=f32)

    t = {"q": bhsd("q", s), "k": bhsd("k", s_kv), "v": bhsd("v", s_kv)}
    for name in ("descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o"):
        t[name] = scalar(name)
    t["o"], _stats, t["amax_s"], t["amax_o"] = graph.sdpa_fp8(
        q=t["q"], k=t["k"], v=t["v"], descale_q=t["descale_q"], descale_k=t["descale_k"],
        descale_v=t["descale_v"], descale_s=t["descale_s"], scale_s=t["scale_s"], scale_o=t["scale_o"],
        generate_stats=False, attn_scale=1.0 / math.sqrt(d), name="sdpa_fp8")
    t["o"].set_output(True).set_dim([b, h, s, d]).set_stride([s * h * d, d, h * d, 1]).set_data_type(fp8)
    # The amax side outputs are declared as real outputs, as cudnn-frontend's test/python/sdpa/fp8.py does; on
    # Hopper only the backend engines serve FP8 SDPA, so this restricts nothing (Amax_O is unused here).
    for amax in (t["amax_s"], t["amax_o"]):
        amax.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(f32)
    graph.build([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])

    def full(value: float) -> torch.Tensor:
        return torch.full((1, 1, 1, 1), value, device="cuda", dtype=torch.float32)

    # S is the softmax's probabilities (at most 1), so its scale is e4m3's max: 448, as the cudnn-frontend 1.32
    # sdpa_fp8 docstring says for E4M3 without dropout.
    constants = {"scale_s": full(FP8_MAX), "descale_s": full(1.0 / FP8_MAX), "amax_s": full(0.0), "amax_o": full(0.0)}
    workspace = torch.empty(graph.get_workspace_size(), device="cuda", dtype=torch.uint8)
    return CudnnFp8Graph(graph, t, constants, workspace)


def cudnn_fp8(casts_timed: bool, compiled: bool = False) -> Staged:
    """cuDNN's FP8 SDPA with per-tensor scales on bf16 [B, S, H, D] inputs, bf16 [B, S, H, D] out. casts_timed: the
    timed call also computes the amaxes and scales, casts q, k, v to e4m3 and dequantises O (an unfused
    integration's cost); else those run untimed and only the cuDNN kernel is timed. compiled: those casts through
    torch.compile (amax, scale and cast fused per tensor), the nearest an integration gets without its own kernel."""
    import cudnn  # here, so the script runs where nvidia-cudnn-frontend is not installed

    handle = cudnn.create_handle()
    graphs: dict[tuple[int, ...], CudnnFp8Graph] = {}

    def attend(q8, k8, v8, descale_q, descale_k, scale_v, descale_v) -> tuple[torch.Tensor, torch.Tensor]:
        b, s, h, d = q8.shape
        key = (b, s, k8.shape[1], h, d)
        if key not in graphs:
            graphs[key] = build_cudnn_fp8_graph(cudnn, handle, *key)
        g = graphs[key]
        cudnn.set_stream(handle, torch.cuda.current_stream().cuda_stream)
        o8 = torch.empty_like(q8)
        # The [B, H, S, D] views of the [B, S, H, D] buffers, as declared. scale_o = V's scale: |O| <= max|V| (each
        # output row is a convex combination of V's rows), so it never overflows O; O's descale is then V's.
        data = {"q": q8.transpose(1, 2), "k": k8.transpose(1, 2), "v": v8.transpose(1, 2), "o": o8.transpose(1, 2),
                "descale_q": descale_q, "descale_k": descale_k, "descale_v": descale_v, "scale_o": scale_v,
                **g.constants}
        g.graph.execute({g.tensors[name]: x for name, x in data.items()}, g.workspace, handle=handle)
        return o8, descale_v

    def quantised(q, k, v) -> tuple[torch.Tensor, ...]:
        (q8, _, descale_q), (k8, _, descale_k), (v8, scale_v, descale_v) = (quantise_fp8(x) for x in (q, k, v))
        return q8, k8, v8, descale_q, descale_k, scale_v, descale_v

    def dequantised(out: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        o8, descale_o = out
        return (o8.float() * descale_o).to(torch.bfloat16)

    if compiled:
        quantised, dequantised = torch.compile(quantised), torch.compile(dequantised)
    if casts_timed:
        return Staged(lambda q, k, v: (q, k, v), lambda q, k, v: dequantised(attend(*quantised(q, k, v))),
                      lambda out: out)
    return Staged(quantised, attend, dequantised)


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
