"""--ulysses-exchange copy-engine's transport (engine/ulysses_copy.py) step by step on GPUs.

Each stage runs under faulthandler's watchdog (a hang prints every thread's stack, then exits) and prints when it
is done:
  1. the symmetric-memory backend torch picks;
  2. a PeerBuffer on the world group: write into the peer's buffer, barrier, read what the peer wrote here;
  3. the same on the Ulysses group of wanbench's device mesh (what the engine uses);
  4. one a14b layer's exchange (480*832x81: q, k, v out and the output back, attention left out: the output is
     q) through the engine's exchange_qkv / exchange_output, checked against NCCL's all-to-all and timed per layer
     (medians of --repeats, host-synchronised, a process barrier before each);
  5. the same layer with cuDNN attention, against NCCL's all-to-all around the same attention (bit for bit), and
     with attention reading copies of the receive buffer (caching-allocator memory) instead of the buffer itself;
  6. one barrier, 100 back to back: the NCCL all-reduce (the engine's default) against the device kernel;
  7. --stress-layers layers back to back with RoPE and cuDNN attention, nothing synchronised between them (as in
     the model), each checked bit for bit against the same exchange run one layer at a time with both GPUs idle
     around it; then again with one rank's attention held back ~10 ms per layer, alternating ranks, so that a peer
     writing too early (into a receive buffer still being read) would show as a mismatched layer; and how many of
     the one-at-a-time layers equal NCCL's all-to-all: a race shows here, a different kernel choice in stage 5;
  8. a peer's first writes into a buffer just made on a rank that is behind on its stream, with symmetric memory
     alone and through PeerBuffer (whose allocation is settled before any peer writes).
What each stage found is in benchmarks/RESULTS.md.
Rank 0 writes the JSON. Usage (GPUs): python3 -m torch.distributed.run --nproc-per-node 2 \\
  benchmarks/copy_engine_probe.py --out $OUT/probe.json
"""

from __future__ import annotations

import argparse
import datetime
import faulthandler
import itertools
import json
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist

from wanbench.engine.parallel import ParallelDims, build_mesh
from wanbench.engine.ulysses_copy import BARRIER_ENV, PeerBuffer, exchange_output, exchange_qkv
from wanbench.engine.wan_attention import _rotate


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
    buffer = PeerBuffer((dist.get_world_size(group), 1024), torch.bfloat16, this_device(), group)
    buffer.local.zero_()
    buffer.barrier()
    for p in range(buffer.world):
        if p != buffer.rank:
            buffer.peer(p)[buffer.rank].fill_(buffer.rank + 1)
    sync()
    buffer.barrier()
    seen = [buffer.local[p, 0].item() for p in range(buffer.world)]
    return {"seen": seen, "expected": [0.0 if p == buffer.rank else p + 1.0 for p in range(buffer.world)],
            "rank_in_group": buffer.rank}


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


def nccl_exchange(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention, group) -> torch.Tensor:
    """Ulysses through NCCL: [1, S_local, H, D] q, k, v -> all tokens, local heads -> attention -> back."""
    world = dist.get_world_size(group)
    _, s_local, h, d = q.shape
    hc = h // world
    sent = torch.stack([q, k, v]).unflatten(3, (world, hc)).permute(3, 0, 1, 2, 4, 5).contiguous()
    received = torch.empty_like(sent)  # [world (source), 3, 1, S_local, Hc, D]
    dist.all_to_all_single(received, sent, group=group)
    full = received.permute(1, 2, 0, 3, 4, 5).reshape(3, 1, world * s_local, hc, d)
    out = attention(full[0], full[1], full[2])
    blocks = out.reshape(1, world, s_local, hc, d).transpose(0, 1).contiguous()
    back = torch.empty_like(blocks)
    dist.all_to_all_single(back, blocks, group=group)
    return back.permute(1, 2, 0, 3, 4).reshape(1, s_local, h, d)


def copy_engine_exchange(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention, group,
                         rotary_emb=None) -> torch.Tensor:
    world = dist.get_world_size(group)
    return exchange_output(attention(*exchange_qkv(q, k, v, rotary_emb, group, world)), group, world)


def layer(group, repeats: int, tokens: int, attention, heads: int = 40, head_dim: int = 128) -> dict:
    """One layer's exchange, the engine's against NCCL's, around `attention`."""
    s_local = tokens // dist.get_world_size(group)
    torch.manual_seed(dist.get_rank())
    q, k, v = torch.randn(3, 1, s_local, heads, head_dim, dtype=torch.bfloat16, device=this_device())
    ours, theirs = (copy_engine_exchange(q, k, v, attention, group), nccl_exchange(q, k, v, attention, group))
    # attention on copies of the receive buffer's views (caching-allocator memory, as the pulled exchange gave it):
    # if only this one matches NCCL, the kernel computes differently on symmetric memory, not the transport
    cloned = copy_engine_exchange(q, k, v, lambda *qkv: attention(*(x.clone() for x in qkv)), group)
    return {"equal_to_nccl": bool(torch.equal(ours, theirs)),
            "max_abs_diff_to_nccl": (ours.float() - theirs.float()).abs().max().item(),
            "attending_copies_equal_to_nccl": bool(torch.equal(cloned, theirs)),
            "copy_engine": timed_ms(lambda: copy_engine_exchange(q, k, v, attention, group), repeats),
            "nccl_all_to_all": timed_ms(lambda: nccl_exchange(q, k, v, attention, group), repeats)}


def cudnn_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def stress(group, layers: int, tokens: int, heads: int = 40, head_dim: int = 128) -> dict:
    """`layers` exchanges with RoPE and cuDNN attention issued back to back, against the same exchanges one layer
    at a time with both GPUs idle around each (no overlap, so no race: a mismatch is the transport's fault, whatever
    the kernels compute), and those against NCCL's (a mismatch there is the kernels')."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    s_local = tokens // world
    generator = torch.Generator(device=this_device()).manual_seed(1000 + dist.get_rank())
    shape = (1, s_local, 1, head_dim)
    rope = tuple(torch.rand(shape, generator=generator, device=this_device()) * 2 - 1 for _ in range(2))
    inputs = [torch.randn(3, 1, s_local, heads, head_dim, generator=generator, device=this_device(),
                          dtype=torch.bfloat16) for _ in range(layers)]

    def one_at_a_time(exchange) -> list[torch.Tensor]:
        outputs = []
        for q, k, v in inputs:
            dist.barrier()
            sync()
            outputs.append(exchange(q, k, v))
            sync()
        return outputs

    serial = one_at_a_time(lambda q, k, v: copy_engine_exchange(q, k, v, cudnn_attention, group, rope))
    nccl = one_at_a_time(lambda q, k, v: nccl_exchange(_rotate(q, *rope), _rotate(k, *rope), v, cudnn_attention,
                                                        group))
    out = {"serial_layers_equal_to_nccl": sum(torch.equal(a, b) for a, b in zip(serial, nccl, strict=True))}
    for name, hold_cycles in (("back_to_back", 0), ("one_rank_held_back", 20_000_000)):
        layer_index = itertools.count()

        def attention(q, k, v, hold_cycles=hold_cycles, layer_index=layer_index) -> torch.Tensor:
            if hold_cycles and next(layer_index) % world == rank:
                torch.cuda._sleep(hold_cycles)
            return cudnn_attention(q, k, v)
        dist.barrier()
        sync()
        ours = [copy_engine_exchange(q, k, v, attention, group, rope) for q, k, v in inputs]
        sync()
        pairs = list(zip(ours, serial, strict=True))
        mismatched = [i for i, (a, b) in enumerate(pairs) if not torch.equal(a, b)]
        out[name] = {"layers": layers, "mismatched_layers": mismatched,
                     "max_abs_diff_to_serial": max((a.float() - b.float()).abs().max().item() for a, b in pairs)}
    return out


def first_writes(group, hold_cycles: int = 2_000_000_000, numel: int = 1 << 20) -> dict:
    """A peer's writes into a buffer just made on a rank whose stream is still busy (~1 s of sleep queued): with
    symmetric memory alone, and through PeerBuffer (which settles the allocation before any write). Each rank
    reports the fraction of the peers' writes still in its buffer once everything is idle (1.0: none lost)."""
    import torch.distributed._symmetric_memory as symm_mem

    rank, world = dist.get_rank(group), dist.get_world_size(group)
    out = {}
    for name in ("symmetric_memory", "peer_buffer"):
        dist.barrier()
        sync()
        if rank % 2 == 1:
            torch.cuda._sleep(hold_cycles)  # this rank is behind on its stream, as a rank can be in a forward
        if name == "symmetric_memory":
            local = symm_mem.empty((world, numel), dtype=torch.bfloat16, device=this_device())
            handle = symm_mem.rendezvous(local, group)
            peer = lambda p, h=handle, s=local: h.get_buffer(p, tuple(s.shape), s.dtype, 0)  # noqa: E731
        else:
            buffer = PeerBuffer((world, numel), torch.bfloat16, this_device(), group)
            local, peer = buffer.local, buffer.peer
        for p in range(world):
            if p != rank:
                peer(p)[rank].fill_(1.0)
        sync()
        dist.barrier()
        sync()
        kept = torch.stack([(local[p] == 1.0).float().mean() for p in range(world) if p != rank]).min()
        dist.all_reduce(kept, op=dist.ReduceOp.MIN, group=group)  # the rank that was behind is the one to see
        out[name] = {"fraction_of_peer_writes_kept": kept.item()}
    return out


def barrier_ms(group, repeats: int, calls: int = 100) -> dict:
    """`calls` barriers back to back, per barrier: the NCCL all-reduce (the default) and the device kernel."""
    out = {}
    for kind in ("nccl", "device"):
        os.environ[BARRIER_ENV] = kind
        buffer = PeerBuffer((2, 1024), torch.bfloat16, this_device(), group)
        timing = timed_ms(lambda b=buffer: [b.barrier() for _ in range(calls)], repeats)
        out[kind] = {k: v / calls for k, v in timing.items()}
    os.environ.pop(BARRIER_ENV)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=32760, help="a14b at 480*832x81")
    parser.add_argument("--stress-layers", type=int, default=12)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("copy_engine_probe.py measures GPUs: run it on a CUDA machine", file=sys.stderr)
        return 2
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", timeout=datetime.timedelta(seconds=120), device_id=device)
    import torch.distributed._symmetric_memory as symm_mem

    results: dict = {"torch": torch.__version__}
    stage("backend", results, lambda: {"backend": symm_mem.get_backend(device),
                                       "nvshmem": symm_mem.is_nvshmem_available()})
    stage("world_group", results, lambda: peer_roundtrip(dist.group.WORLD))
    mesh = build_mesh(ParallelDims(world=dist.get_world_size(), ulysses=dist.get_world_size()), device)
    group = mesh["ring", "ulysses"]["ulysses"].get_group()
    results["ulysses_group_name"] = group.group_name
    stage("ulysses_group", results, lambda: peer_roundtrip(group))
    stage("a14b_layer_exchange", results,
          lambda: layer(group, args.repeats, args.tokens, lambda q, k, v: q), limit_s=120)
    stage("a14b_attention_layer", results, lambda: layer(group, args.repeats, args.tokens, cudnn_attention),
          limit_s=180)
    stage("barrier_per_call", results, lambda: barrier_ms(group, args.repeats))
    stage("stress", results, lambda: stress(group, args.stress_layers, args.tokens), limit_s=180)
    stage("first_writes", results, lambda: first_writes(group))
    if dist.get_rank() == 0:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
