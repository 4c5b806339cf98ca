"""Where Ulysses loses per-GPU efficiency, kernel by kernel, on one GPU: a Ulysses rank of degree N attends
all tokens over 40/N heads and runs the linear layers over tokens/N rows. Times cuDNN attention
(diffusers' layout: (B, S, H, D) transposed to heads-first views) and the block's GEMMs at degree 1, 2, 4 and 8,
and reports each against the ideal 1/N of the degree-1 time.
  PYTHONPATH=src python benchmarks/ulysses_kernels.py --out $OUT/ulysses-kernels-h200.json
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

TOKENS, HEADS, HEAD_DIM, DIM, FFN_DIM = 32760, 40, 128, 5120, 13824


def time_ms(fn, warmup: int = 3, repeats: int = 10) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def attention_ms(heads: int) -> dict[str, float]:
    q, k, v = (torch.randn(1, TOKENS, heads, HEAD_DIM, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
               for _ in range(3))
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        result = time_ms(lambda: F.scaled_dot_product_attention(q, k, v))
    result["tflops"] = 4 * TOKENS**2 * heads * HEAD_DIM / result["median_ms"] / 1e9
    return result


def gemms_ms(rows: int) -> dict[str, float]:
    x = torch.randn(rows, DIM, device="cuda", dtype=torch.bfloat16)
    h = torch.randn(rows, FFN_DIM, device="cuda", dtype=torch.bfloat16)
    w_qkv = torch.randn(3 * DIM, DIM, device="cuda", dtype=torch.bfloat16)
    w_o = torch.randn(DIM, DIM, device="cuda", dtype=torch.bfloat16)
    w_up = torch.randn(FFN_DIM, DIM, device="cuda", dtype=torch.bfloat16)
    w_down = torch.randn(DIM, FFN_DIM, device="cuda", dtype=torch.bfloat16)

    def block() -> None:
        F.linear(x, w_qkv), F.linear(x, w_o), F.linear(x, w_o), F.linear(x, w_up), F.linear(h, w_down)

    result = time_ms(block)
    flops = 2 * rows * DIM * (3 * DIM + 2 * DIM + 2 * FFN_DIM)
    result["tflops"] = flops / result["median_ms"] / 1e9
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                 "cudnn": torch.backends.cudnn.version(), "tokens": TOKENS, "degrees": {}}
    for degree in (1, 2, 4, 8):
        out["degrees"][degree] = {"attention": attention_ms(HEADS // degree), "gemms": gemms_ms(TOKENS // degree)}
    base = out["degrees"][1]
    for degree, entry in out["degrees"].items():
        for part in ("attention", "gemms"):
            entry[part]["efficiency_vs_ideal"] = base[part]["median_ms"] / degree / entry[part]["median_ms"]
    print(json.dumps(out, indent=1))
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
