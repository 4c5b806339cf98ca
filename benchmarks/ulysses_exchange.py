"""Ulysses' exchange on its own, between the GPUs of one host: is it the link, the copies or the lost overlap?

One all-to-all per q, k, v and out at the a14b shapes (each rank holds 32,760/N tokens x 5,120 bf16), timed
alone; the same data as per-head point-to-point blocks (engine/ulysses_heads.py); q, k and v as one message;
the permute-and-copy diffusers makes around each exchange; and a Ulysses rank's attention kernel alone, the
exchange alone, and both issued together (exchange on NCCL's stream, attention on the compute stream) to see
how much of the exchange can hide behind attention at all.
Medians of --repeats after warm-up, every rank synchronised; rank 0 writes the JSON.
  python3 -m torch.distributed.run --nproc-per-node 2 benchmarks/ulysses_exchange.py --out $OUT/x.json
--high-priority puts NCCL on a high-priority stream (does the exchange then get SMs while attention runs?).
On the CPU (gloo, for checking the script): add --device cpu --tokens 512 --dim 256 --heads 4.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dist.barrier()


def time_ms(fn, device: torch.device, repeats: int, warmup: int = 2) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def stream_ms(fn, device: torch.device, calls: int = 8, repeats: int = 5) -> dict[str, float]:
    """Per-call time of `calls` calls issued back to back and timed by CUDA events: the link's throughput
    without the host synchronisation and barrier that time_ms puts around each (which weigh on a 0.5 ms call)."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tokens", type=int, default=32760)
    parser.add_argument("--dim", type=int, default=5120)
    parser.add_argument("--heads", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--high-priority", action="store_true", help="NCCL on a high-priority CUDA stream")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    options = None
    if cuda and args.high_priority:
        options = dist.ProcessGroupNCCL.Options()
        options.is_high_priority_stream = True
    dist.init_process_group("nccl" if cuda else "gloo", pg_options=options)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dtype = torch.bfloat16 if cuda else torch.float32
    local_tokens, local_heads, head_dim = args.tokens // world, args.heads // world, args.dim // args.heads
    x = torch.randn(local_tokens, args.dim, device=device, dtype=dtype)
    qkv = torch.randn(3, local_tokens, args.dim, device=device, dtype=dtype)
    received, received_qkv = torch.empty_like(x), torch.empty_like(qkv)
    message_bytes = x.numel() * x.element_size()

    def exchange() -> None:
        dist.all_to_all_single(received, x)

    def exchange_qkv() -> None:  # dim 0 of the input must be the destination: ranks' head slices first
        dist.all_to_all_single(received_qkv.view(world, -1), qkv.view(3, local_tokens, world, -1)
                               .permute(2, 0, 1, 3).contiguous().view(world, -1))

    def copy_before() -> None:  # diffusers: [S, H, D] -> [N, S, H/N, D] contiguous before sending
        x.view(local_tokens, world, local_heads, head_dim).permute(1, 0, 2, 3).contiguous()

    heads_first = torch.randn(1, args.heads, local_tokens, head_dim, device=device, dtype=dtype)
    received_heads = torch.empty(1, local_heads, args.tokens, head_dim, device=device, dtype=dtype)

    def exchange_head_blocks() -> None:  # engine/ulysses_heads.py's way: one [S_local, D] block per head and peer
        ops = []
        for peer in (p for p in range(world) if p != rank):
            for j in range(local_heads):
                ops.append(dist.P2POp(dist.isend, heads_first[0, peer * local_heads + j], peer=peer))
                ops.append(dist.P2POp(dist.irecv, received_heads[0, j, peer * local_tokens:(peer + 1) * local_tokens],
                                      peer=peer))
        for work in dist.batch_isend_irecv(ops):
            work.wait()

    q, k, v = (torch.randn(1, local_heads, args.tokens, head_dim, device=device, dtype=dtype) for _ in range(3))

    def attention() -> None:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION) if cuda else contextlib.nullcontext():
            F.scaled_dot_product_attention(q, k, v)

    def both() -> None:
        work = dist.all_to_all_single(received, x, async_op=True)
        attention()
        work.wait()

    out: dict = {"world": world, "device": torch.cuda.get_device_name(device) if cuda else "cpu",
                 "torch": torch.__version__, "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None,
                 "tokens": args.tokens, "dim": args.dim, "heads": args.heads, "high_priority": args.high_priority,
                 "message_mb_per_rank":
                 message_bytes / 1e6, "env": {k: v for k, v in os.environ.items() if k.startswith("NCCL_")}}
    for name, fn in (("exchange", exchange), ("exchange_head_blocks", exchange_head_blocks),
                     ("exchange_qkv_one_message", exchange_qkv),
                     ("copy_before_exchange", copy_before), ("attention", attention),
                     ("attention_with_exchange_in_flight", both)):
        out[name] = time_ms(fn, device, args.repeats)
    if cuda:
        out["exchange_stream"] = stream_ms(exchange, device)
        out["exchange_qkv_one_message_stream"] = stream_ms(exchange_qkv, device)
    sent = message_bytes * (world - 1) / world
    for name, factor in (("exchange", 1), ("exchange_stream", 1), ("exchange_qkv_one_message_stream", 3)):
        if name in out:
            out[name]["sent_gb_per_s"] = factor * sent / out[name]["median_ms"] / 1e6
    hidden = out["attention"]["median_ms"] + out["exchange"]["median_ms"] - \
        out["attention_with_exchange_in_flight"]["median_ms"]
    out["exchange_hidden_fraction"] = hidden / out["exchange"]["median_ms"]
    if rank == 0:
        print(json.dumps(out, indent=1))
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
