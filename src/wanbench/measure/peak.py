"""Measured peak of this GPU: a large bf16 matmul, timed with CUDA events after warm-up."""

from __future__ import annotations

import statistics

import torch

from wanbench.errors import UserError


def measure_matmul_tflops(n: int = 8192, repeats: int = 10) -> float:
    """Median TFLOP/s of an n^3 bf16 matmul on random data (zeros run faster and would flatter)."""
    if not torch.cuda.is_available():
        raise UserError("--measure-peak needs a CUDA GPU: on this machine use the datasheet table")
    gen = torch.Generator("cuda").manual_seed(0)
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=gen)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=gen)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n**3 / statistics.median(times) / 1e12
