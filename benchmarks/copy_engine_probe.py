"""Where does --ulysses-exchange copy-engine stop? Its transport (engine/ulysses_pull.py) step by step on GPUs.

In session 7 a 2-GPU a14b generate with the copy-engine exchange hung silently until its timeout, while the
same exchange written by hand in benchmarks/ulysses_exchange.py had run (session 6). Each stage here runs under
faulthandler's watchdog (a hang prints every thread's stack, then exits) and prints when it is done:
  1. the symmetric-memory backend torch picks;
  2. a PeerBuffer on the world group: write, device barrier, read the peer's;
  3. the same on the Ulysses group of wanbench's device mesh (what the engine uses);
  4. the a14b layer exchange (attend_pulled at 480*832x81, 40 heads, attention left out), checked against NCCL's
     all-to-all and timed per layer (medians of --repeats, CUDA-synchronised) next to four all-to-alls, and with
     the output's rows copied straight into to_out's layout (a candidate that saves one copy per layer), and with
     q, k, v pushed into the peers' full-sequence buffers (a candidate that saves the copies of a rank's own block);
  5. one layer's exchange with cuDNN attention, in 1, 2 and 4 head chunks (the copies of chunk c+1 beside chunk
     c's attention: --ulysses-chunks with the copy-engine exchange), next to NCCL's all-to-all around attention
     (its attention over all 20 heads at once, so not bit for bit: the largest difference is reported);
  6. (GPUs) one barrier, 100 back to back: the NCCL all-reduce against the device kernel.
Rank 0 writes the JSON. Usage: python3 -m torch.distributed.run --nproc-per-node 2 \\
  benchmarks/copy_engine_probe.py --out $OUT/probe.json
"""

from __future__ import annotations

import argparse
import datetime
import faulthandler
import json
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist

from wanbench.engine.parallel import ParallelDims, build_mesh
from wanbench.engine.ulysses_pull import (
    BARRIER_ENV,
    OutputExchange,
    PeerBuffer,
    attend_pulled,
    peer_buffer,
    pull_qkv,
    take_chunk,
)


def stage(name: str, results: dict, fn, limit_s: float = 60.0) -> None:
    faulthandler.dump_traceback_later(limit_s, exit=True)
    start = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as exc:  # a probe records what failed and goes on
        results[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    faulthandler.cancel_dump_traceback_later()
    sync()
    print(f"rank {dist.get_rank()}: {name} done in {time.perf_counter() - start:.1f} s: {results[name]}",
          file=sys.stderr, flush=True)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def this_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def peer_roundtrip(group) -> dict:
    buffer = PeerBuffer((4, 1024), torch.bfloat16, this_device(), group)
    buffer.local.fill_(buffer.rank + 1)
    buffer.ready()
    peer = (buffer.rank + 1) % buffer.world
    seen = buffer.peer(peer).clone()
    buffer.ready()
    return {"peer_value": seen[0, 0].item(), "expected": peer + 1, "rank_in_group": buffer.rank}


def timed_ms(fn, repeats: int) -> dict:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        dist.barrier()
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def layer_exchange(group, repeats: int, tokens: int = 32760, heads: int = 40, head_dim: int = 128) -> dict:
    world = dist.get_world_size(group)
    s_local, h_local = tokens // world, heads // world
    device = this_device()
    buffer = PeerBuffer((3, world, 1, 1, s_local, h_local, head_dim), torch.bfloat16, device, group)
    torch.manual_seed(dist.get_rank())
    buffer.local.normal_()

    def pulled() -> torch.Tensor:
        return attend_pulled(buffer, lambda q, k, v: q)

    # The same exchange through NCCL: [world, ...] blocks by destination out, by source in.
    sent = buffer.local[:, :, 0].transpose(0, 1).contiguous()
    received = torch.empty_like(sent)

    def nccl() -> torch.Tensor:
        dist.all_to_all_single(received, sent, group=group)
        out = received[:, 0].permute(1, 0, 2, 3, 4).reshape(1, world * s_local, h_local, head_dim)
        back = torch.empty(world, 1, s_local, h_local, head_dim, dtype=out.dtype, device=device)
        dist.all_to_all_single(back, out.reshape(1, world, s_local, h_local, head_dim).transpose(0, 1)
                               .contiguous(), group=group)
        return back.permute(1, 2, 0, 3, 4).reshape(1, s_local, world * h_local, head_dim)

    def pulled_into_place() -> torch.Tensor:
        qkv, arrivals = pull_qkv(buffer)
        return scatter_heads_into_place(take_chunk(buffer, qkv, arrivals, 0)[0], group)

    receive = PeerBuffer((3, 1, tokens, h_local, head_dim), torch.bfloat16, device, group)
    # In the engine RoPE would write the rank's own block here; it does not change between repeats.
    receive.local[:, :, buffer.rank * s_local:(buffer.rank + 1) * s_local] = buffer.local[:, buffer.rank, 0]

    def pushed() -> torch.Tensor:
        return scatter(pushed_gather(buffer, receive)[0], group)

    expected = nccl()
    results = {"equal_to_nccl": bool(torch.equal(pulled(), expected)),
               "into_place_equal_to_nccl": bool(torch.equal(pulled_into_place(), expected)),
               "copy_engine_layer": timed_ms(pulled, repeats),
               "copy_engine_into_place_layer": timed_ms(pulled_into_place, repeats),
               "nccl_qkv_and_out_layer": timed_ms(nccl, repeats)}
    if device.type == "cuda":  # the CPU stand-in (an all-gather of each rank's buffer) cannot take writes
        results.update(pushed_equal_to_nccl=bool(torch.equal(pushed(), expected)),
                       copy_engine_pushed_layer=timed_ms(pushed, repeats))
    return results


def pushed_gather(send: PeerBuffer, receive: PeerBuffer) -> torch.Tensor:
    """gather_tokens the other way round, a candidate measured here first: each rank copies the blocks its peers
    need into their full-sequence buffers [3, B, S, H_local, D] (copy engines writing over NVLink) and attends
    straight out of its own, so no copy of its own block (RoPE would write that in place). Safe with one buffer:
    a rank pushes layer L+1 only after the output barrier of layer L, which each peer reaches after attending."""
    rank, world = send.rank, send.world
    b, s_local = send.local.shape[3], send.local.shape[4]
    with send.beside():
        for peer in (p for p in range(world) if p != rank):
            target = receive.peer(peer)[:, :, rank * s_local:(rank + 1) * s_local]
            for t in range(3):
                for i in range(b):
                    target[t, i].copy_(send.local[t, peer, 0, i])
    send.join()
    receive.ready()
    return receive.local


def scatter(out: torch.Tensor, group) -> torch.Tensor:
    """The engine's output exchange of one chunk: [B, S, H_local, D] -> [B, S_local, H, D]."""
    outputs = OutputExchange((1, 3, *out.shape), out.dtype, out.device, group)
    outputs.send(0, out)
    return outputs.assembled()


def scatter_heads_into_place(out: torch.Tensor, group) -> torch.Tensor:
    """The engine's output exchange without its last copy: the peers' rows land straight in to_out's layout
    [B, S_local, world, H_local, D] (strided, so SM loads over NVLink instead of the copy engines). A candidate,
    measured here first."""
    buffer = peer_buffer("out", tuple(out.shape), out.dtype, out.device, group)
    rank, world = buffer.rank, buffer.world
    b, s, h_local, d = out.shape
    s_local = s // world
    buffer.local.copy_(out)
    placed = torch.empty(b, s_local, world, h_local, d, dtype=out.dtype, device=out.device)
    buffer.ready()
    with buffer.beside():
        for peer in (p for p in range(world) if p != rank):
            placed[:, :, peer].copy_(buffer.peer(peer)[:, rank * s_local:(rank + 1) * s_local])
    placed[:, :, rank] = out[:, rank * s_local:(rank + 1) * s_local]
    buffer.join()
    return placed.reshape(b, s_local, world * h_local, d)


def attention_layer(group, repeats: int, tokens: int, heads: int = 40, head_dim: int = 128) -> dict:
    """One layer's exchange and self-attention (cuDNN on GPUs) with the copies out of the peers beside the
    attention of earlier head chunks (--ulysses-chunks with the copy-engine exchange): 1, 2 and 4 chunks, their
    outputs compared bit for bit, next to NCCL's all-to-all around one attention over all heads."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    world = dist.get_world_size(group)
    s_local, h_local = tokens // world, heads // world
    device = this_device()
    backend = SDPBackend.CUDNN_ATTENTION if device.type == "cuda" else SDPBackend.MATH

    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(backend):
            return torch.nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)

    torch.manual_seed(dist.get_rank())
    qkv = torch.randn(3, world, 1, s_local, h_local, head_dim, dtype=torch.bfloat16, device=device)
    out, results = {}, {}
    for chunks in (1, 2, 4):
        hc = h_local // chunks
        buffer = PeerBuffer((3, world, chunks, 1, s_local, hc, head_dim), torch.bfloat16, device, group)
        buffer.local.copy_(qkv.unflatten(4, (chunks, hc)).permute(0, 1, 4, 2, 3, 5, 6))

        def layer(b: PeerBuffer = buffer) -> torch.Tensor:
            return attend_pulled(b, attention)

        out[chunks] = layer()
        results[f"copy_engine_{chunks}_chunks"] = timed_ms(layer, repeats)
    sent = qkv.transpose(0, 1).contiguous()
    received = torch.empty_like(sent)

    def nccl() -> torch.Tensor:
        dist.all_to_all_single(received, sent, group=group)
        q, k, v = (received[:, t].permute(1, 0, 2, 3, 4).reshape(1, tokens, h_local, head_dim) for t in range(3))
        o = attention(q, k, v).reshape(1, world, s_local, h_local, head_dim).transpose(0, 1).contiguous()
        back = torch.empty_like(o)
        dist.all_to_all_single(back, o, group=group)
        return back.permute(1, 2, 0, 3, 4).reshape(1, s_local, world * h_local, head_dim)

    results["nccl_all_to_all"] = timed_ms(nccl, repeats)
    reference = nccl()
    for chunks in (1, 2, 4):
        results[f"{chunks}_chunks_max_abs_diff_to_nccl"] = (out[chunks].float() - reference.float()).abs().max().item()
    results["chunks_equal_bitwise"] = bool(torch.equal(out[1], out[2]) and torch.equal(out[1], out[4]))
    return results


def barrier_ms(group, repeats: int, calls: int = 100) -> dict:
    """`calls` barriers back to back, per barrier: the NCCL all-reduce (the default) and the device kernel."""
    out = {}
    for kind in ("nccl", "device"):
        os.environ[BARRIER_ENV] = kind
        buffer = PeerBuffer((2, 1024), torch.bfloat16, this_device(), group)
        timing = timed_ms(lambda b=buffer: [b.ready() for _ in range(calls)], repeats)
        out[kind] = {k: v / calls for k, v in timing.items()}
    os.environ.pop(BARRIER_ENV)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=32760, help="a14b at 480*832x81 (CPU check: 64)")
    args = parser.parse_args()
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    cuda = device.type == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=120),
                            device_id=device if cuda else None)
    import torch.distributed._symmetric_memory as symm_mem

    results: dict = {"torch": torch.__version__}
    if device.type == "cuda":
        stage("backend", results, lambda: {"backend": symm_mem.get_backend(device),
                                           "nvshmem": symm_mem.is_nvshmem_available()})
    stage("world_group", results, lambda: peer_roundtrip(dist.group.WORLD))
    mesh = build_mesh(ParallelDims(world=dist.get_world_size(), ulysses=dist.get_world_size()), device)
    group = mesh["ring", "ulysses"]["ulysses"].get_group()
    results["ulysses_group_name"] = group.group_name
    stage("ulysses_group", results, lambda: peer_roundtrip(group))
    stage("a14b_layer_exchange", results, lambda: layer_exchange(group, args.repeats, args.tokens),
          limit_s=120)
    stage("a14b_attention_layer", results, lambda: attention_layer(group, args.repeats, args.tokens), limit_s=180)
    if device.type == "cuda":
        stage("barrier_per_call", results, lambda: barrier_ms(group, args.repeats))
    if dist.get_rank() == 0:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
