"""Where one denoising step's time goes on each rank: GPU kernels by kind, copies, collectives, and GPU idle.

Ulysses 2 loses part of a step to its exchanges; this says where the rest goes. This runs a generation under
wanbench's engine (the same flags as `wanbench generate`), one warm-up generation, then profiles the second step of
a 3-step generation with torch.profiler (device synchronised at both ends) and sums device time by kind (GEMM,
attention, NCCL, copies between GPUs, copies within a GPU, other kernels) and the GPU's busy time (union of kernel
and copy intervals) against the step's span. Rank 0 writes every rank's summary. Usage (2 GPUs):
  python3 -m torch.distributed.run --nproc-per-node 2 benchmarks/profile_step.py --out $OUT/profile.json -- \\
      --model a14b --weights random --size 480*832 --gpus 2 --ulysses 2 --ulysses-exchange head-blocks \\
      --no-compile --attention cudnn
(1 GPU: python3 benchmarks/profile_step.py --out ... -- --model a14b ... without the parallel flags.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

KINDS = (("nccl", ("nccl",)), ("attention", ("fmha", "flash", "attention", "cudnn", "sdpa")),
         ("gemm", ("gemm", "cutlass", "sm90_xmma", "nvjet", "matmul")),
         ("copy_peer", ("ptop",)), ("copy_device", ("memcpy dtod", "memcpy htod", "memcpy dtoh", "memset")))


def kind_of(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind, keys in KINDS if any(k in lowered for k in keys)), "other_kernels")


def busy_us(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals."""
    total, end_so_far = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= end_so_far:
            continue
        total += end - max(start, end_so_far)
        end_so_far = end
    return total


def summarise(prof) -> dict:
    device_events = [e for e in prof.events() if e.device_type.name in ("CUDA", "PrivateUse1")]
    by_kind: dict[str, float] = defaultdict(float)
    by_name: dict[str, float] = defaultdict(float)
    intervals = []
    for e in device_events:
        start, end = e.time_range.start, e.time_range.end
        by_kind[kind_of(e.name)] += (end - start) / 1e3
        by_name[e.name] += (end - start) / 1e3
        intervals.append((start, end))
    span_ms = (max(e for _, e in intervals) - min(s for s, _ in intervals)) / 1e3 if intervals else 0.0
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:15]
    return {"span_ms": span_ms, "busy_ms": busy_us(intervals) / 1e3, "device_ms_by_kind": dict(by_kind),
            "top_device_ms": {name[:120]: ms for name, ms in top}, "device_events": len(device_events),
            "cpu_ms_top": {e.key[:80]: e.cpu_time_total / 1e3
                           for e in sorted(prof.key_averages(), key=lambda a: -a.cpu_time_total)[:10]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("generate_args", nargs=argparse.REMAINDER, help="-- then `wanbench generate` flags")
    args = parser.parse_args()
    from wanbench.cli import build_parser, config_from_args
    from wanbench.engine.generate import open_session, run_once
    from wanbench.launch.distributed import shutdown_distributed

    flags = [a for a in args.generate_args if a != "--"]
    config = config_from_args(build_parser().parse_args(["generate", *flags, "--output", "none"]))
    session = open_session(config)
    run_once(session, dataclasses.replace(config, steps=2))  # warm-up: kernels chosen, caches filled
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    prof = profile(activities=activities)

    def at_step(index: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if index == 0:
            prof.start()
        elif index == 1:
            prof.stop()

    generation = run_once(session, dataclasses.replace(config, steps=3), on_step=at_step)
    summary = {"step_s": generation.result.phases.get("step_s"), **summarise(prof)}
    import torch.distributed as dist

    summaries = [summary]
    if dist.is_initialized():
        summaries = [None] * dist.get_world_size()
        dist.all_gather_object(summaries, summary)
    if not dist.is_initialized() or dist.get_rank() == 0:
        with open(args.out, "w") as f:
            json.dump({"config": config.to_dict(), "ranks": summaries}, f, indent=1)
    shutdown_distributed(clean=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
