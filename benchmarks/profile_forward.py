"""Where one compiled a14b expert forward spends its GPU time, by kernel class (torch.profiler).

  PYTHONPATH=src python benchmarks/profile_forward.py --out $OUT/profile.json
Classes: attention (flash/cudnn/fmha kernels), gemm (cutlass/cublas/sm90 gemm kernels), and
everything else (inductor's fused elementwise/reduction kernels, copies).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from wanbench.engine.fusion import fuse_projections
from wanbench.models.random_init import build_transformer
from wanbench.presets import get_preset


def kernel_class(name: str) -> str:
    low = name.lower()
    if any(k in low for k in ("flash", "fmha", "cudnn", "attention", "sdpa")):
        return "attention"
    if any(k in low for k in ("gemm", "cutlass", "matmul", "xmma", "sm90_")):
        return "gemm"
    if "triton" in low:
        return "triton_fused"
    return "other"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--eager", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda")
    preset = get_preset("a14b")
    model = build_transformer(preset, device, torch.bfloat16)
    model.set_attention_backend("native")
    if not args.eager:
        fuse_projections(model)
        model.compile_repeated_blocks(fullgraph=True)
    gen = torch.Generator(device).manual_seed(0)
    latents = torch.randn(1, 16, 21, 60, 104, generator=gen, device=device, dtype=torch.bfloat16)
    text = torch.randn(1, 512, 4096, generator=gen, device=device, dtype=torch.bfloat16)
    t = torch.tensor([900], device=device)
    with torch.no_grad():
        for _ in range(2):
            model(hidden_states=latents, timestep=t, encoder_hidden_states=text, return_dict=False)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            model(hidden_states=latents, timestep=t, encoder_hidden_states=text, return_dict=False)
            torch.cuda.synchronize()
    by_class: dict[str, float] = defaultdict(float)
    kernels = []
    for evt in prof.key_averages():
        device_us = getattr(evt, "device_time_total", 0.0) or getattr(evt, "cuda_time_total", 0.0)
        if device_us <= 0 or evt.key.startswith("cuda"):
            continue
        by_class[kernel_class(evt.key)] += device_us / 1e6
        kernels.append({"name": evt.key[:160], "count": evt.count, "device_s": device_us / 1e6})
    kernels.sort(key=lambda k: -k["device_s"])
    result = {"mode": "eager" if args.eager else "compiled+fused", "by_class_s": dict(by_class),
              "total_device_s": sum(by_class.values()), "top_kernels": kernels[:40]}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: result[k] for k in ("mode", "by_class_s", "total_device_s")}, indent=1))
    for k in kernels[:25]:
        print(f"{k['device_s']:8.4f} s  x{k['count']:4d}  {k['name'][:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
