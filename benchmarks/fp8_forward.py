"""One a14b expert's DiT forward, exact against --fp8 linear, on the same weights and input (one GPU).

  PYTHONPATH=src python benchmarks/fp8_forward.py --size 1280*720 --out $OUT/fp8-forward-720p.json
Both variants are what the engine runs: fused QKV, FlashAttention 4 self-attention where installed (cuDNN
otherwise), regional compile; FP8 then quantises the same expert's block linears in place (torchao, per row) and
compiles again. Times: CUDA-synchronised, first call (compile) apart, median of --repeats with min and max.
Error: relative L2 error of the FP8 output against the exact one; random weights, so numerical error only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from speed import spread, timed  # benchmarks/ is on sys.path when a script there runs
from wanbench.config import config_for_preset, parse_size
from wanbench.engine import flash_cute
from wanbench.engine.fp8 import quantize_blocks, require_fp8
from wanbench.engine.fusion import fuse_projections
from wanbench.engine.generate import latent_shape
from wanbench.engine.wan_attention import KernelAttentionProcessor, install
from wanbench.measure.env import capture_environment
from wanbench.models.random_init import build_transformer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280*720")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    device = torch.device("cuda")
    require_fp8(device)
    width, height = parse_size(args.size)
    config = config_for_preset("a14b", height=height, width=width, frames=args.frames)
    model = build_transformer(config.preset, device, torch.bfloat16, config.seed)
    spec = config.preset.transformer
    gen = torch.Generator(device).manual_seed(0)
    latents = torch.randn(latent_shape(config), generator=gen, device=device, dtype=torch.bfloat16)
    text = torch.randn(1, 512, spec.text_dim, generator=gen, device=device, dtype=torch.bfloat16)
    t = torch.tensor([900], device=device)
    fuse_projections(model)
    kernel = "fa4" if flash_cute.unavailable_reason(device) is None else None
    if kernel:
        install(model, lambda: KernelAttentionProcessor(kernel))
    else:
        model.set_attention_backend("_native_cudnn")
    record = {"command": " ".join(sys.argv), "gpu": torch.cuda.get_device_name(), "size": args.size,
              "frames": args.frames, "tokens": latents[0, 0].numel() // 4, "self_attention": kernel or "cudnn",
              "env": capture_environment(), "variants": {}}

    def measure(name: str) -> torch.Tensor:
        model.compile_repeated_blocks(fullgraph=True)

        def forward():
            with torch.no_grad():
                return model(hidden_states=latents, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
        first, _ = timed(forward, 1)
        times, out = timed(forward, args.repeats)
        entry = {"forward_s": spread(times), "first_call_s": first[0],
                 "peak_allocated_gb": torch.cuda.max_memory_allocated() / 1e9}
        record["variants"][name] = entry
        print(name, json.dumps(entry), flush=True)
        return out.float()

    exact = measure("exact_bf16")
    torch._dynamo.reset()
    torch.cuda.reset_peak_memory_stats()
    record["variants"]["fp8_linear_layers"] = quantize_blocks(model)
    fp8 = measure("fp8_linear")
    record["fp8_rel_error_vs_exact"] = float((fp8 - exact).norm() / exact.norm())
    record["speedup"] = (record["variants"]["exact_bf16"]["forward_s"]["median"]
                         / record["variants"]["fp8_linear"]["forward_s"]["median"])
    Path(args.out).write_text(json.dumps(record, indent=1))
    print("speedup", record["speedup"], "error", record["fp8_rel_error_vs_exact"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
