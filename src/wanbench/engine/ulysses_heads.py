"""Ulysses with head-block exchanges, so q, k, v and the output need almost no layout copies
(--ulysses-exchange head-blocks).

diffusers' Ulysses permutes q, k and v rank-major, all-to-alls them, the attention backend copies them
heads-first, and the output is permuted on both sides of its all-to-all: about nine copies of a rank's tensor
per layer, about as much time as the exchanges themselves. Here RoPE writes q and k heads-first ([B, H, S_local,
D]) and v is made heads-first once, so every (batch, head) block a peer needs is one contiguous [S_local, D]
piece: it is sent with point-to-point operations, all in one group, straight into its place in the receiver's
heads-first [B, H_local, S, D] tensors, which attention reads as they are. The output returns the same way into
a heads-first [B, H, S_local, D] tensor and is made token-major once for to_out. Copies left per layer: v once,
the blocks a rank keeps for itself, the output once (about four tensors' worth against diffusers' nine). Same
arithmetic in the same order, so the same result as diffusers' Ulysses and the single process.

Its speed and memory against the all-to-all default are in benchmarks/RESULTS.md (see "Deleted variants").

Applied by engine/parallel.py (`context_parallelize`) to every block's self-attention for Ulysses without
ring; cross-attention (text keys, not sequence-split) keeps the stock processor.
"""

from __future__ import annotations

from collections import deque

import torch
import torch.distributed as dist

from wanbench.engine.wan_attention import UlyssesExchangeProcessor, heads_first, install


def _blocks_op(ops: list, op, tensor: torch.Tensor, group, peer: int) -> None:
    ops.append(dist.P2POp(op, tensor, group=group, group_peer=peer))


# NCCL's batched point-to-point records every tensor it touches on its own streams, so the caching allocator
# cannot hand that memory out again until the host has seen the transfer finish. A host that runs a whole
# forward ahead of the GPU (compiled, it does) then needs fresh memory for every layer's ~1.3 GB of exchanged
# tensors, and NVML's memory grows far past torch's allocated peak. The host therefore waits for the exchange issued
# EXCHANGES_AHEAD calls back (two per layer): a couple of layers of queued GPU work, so the GPU never starves.
EXCHANGES_AHEAD = 4
_in_flight: deque = deque()


def _bound_host_lead(device: torch.device) -> None:
    if device.type != "cuda":
        return
    event = torch.cuda.Event()
    event.record()
    _in_flight.append(event)
    while len(_in_flight) > EXCHANGES_AHEAD:
        _in_flight.popleft().synchronize()


@torch.compiler.disable
def _run(ops: list) -> None:
    for work in dist.batch_isend_irecv(ops) if ops else []:
        work.wait()
    if ops:
        _bound_host_lead(ops[0].tensor.device)


def to_sequence_shards(tensors: list[torch.Tensor], group, world: int) -> list[torch.Tensor]:
    """Each [B, H, S_local, D] (this rank's tokens, all heads) -> [B, H/world, S, D] (all tokens, its heads)."""
    rank = dist.get_rank(group)
    ops: list = []
    received = []
    for x in tensors:
        b, h, s_local, d = x.shape
        h_local = h // world
        out = torch.empty(b, h_local, world * s_local, d, dtype=x.dtype, device=x.device)
        out[:, :, rank * s_local:(rank + 1) * s_local] = x[:, rank * h_local:(rank + 1) * h_local]
        for peer in (p for p in range(world) if p != rank):
            for i in range(b):
                for j in range(h_local):
                    _blocks_op(ops, dist.isend, x[i, peer * h_local + j], group, peer)
                    _blocks_op(ops, dist.irecv, out[i, j, peer * s_local:(peer + 1) * s_local], group, peer)
        received.append(out)
    _run(ops)
    return received


def to_head_shards(x: torch.Tensor, group, world: int) -> torch.Tensor:
    """[B, H_local, S, D] (all tokens, this rank's heads) -> [B, H, S_local, D] (its tokens, all heads)."""
    rank = dist.get_rank(group)
    b, h_local, s, d = x.shape
    s_local = s // world
    out = torch.empty(b, h_local * world, s_local, d, dtype=x.dtype, device=x.device)
    out[:, rank * h_local:(rank + 1) * h_local] = x[:, :, rank * s_local:(rank + 1) * s_local]
    ops: list = []
    for peer in (p for p in range(world) if p != rank):
        for i in range(b):
            for j in range(h_local):
                _blocks_op(ops, dist.isend, x[i, j, peer * s_local:(peer + 1) * s_local], group, peer)
                _blocks_op(ops, dist.irecv, out[i, peer * h_local + j], group, peer)
    _run(ops)
    return out


class HeadBlockUlyssesProcessor(UlyssesExchangeProcessor):
    """Sequence-parallel self-attention with head-block exchanges (Ulysses without ring)."""

    def place_qkv(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, rotary_emb):
        """RoPE writes q and k heads-first ([B, H, S_local, D]); v is made heads-first once."""
        return heads_first(query, rotary_emb), heads_first(key, rotary_emb), heads_first(value, None)

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """[B, H, S_local, D] in, [B, S_local, H, D] out (a view of the heads-first result)."""
        group, world = self.ulysses_group()
        q, k, v = to_sequence_shards([query, key, value], group, world)
        out = self.attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # [B, S, H_local, D]
        return to_head_shards(out.transpose(1, 2).contiguous(), group, world).transpose(1, 2)


def exchange_head_blocks(expert: torch.nn.Module) -> int:
    """Give every self-attention of `expert` the head-block processor; returns how many will use it."""
    return install(expert, HeadBlockUlyssesProcessor)
