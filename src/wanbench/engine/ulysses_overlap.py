"""Ulysses attention pipelined over head chunks, so its all-to-alls overlap the attention kernels.

diffusers' Ulysses (TemplatedUlyssesAttention) exchanges q, k, v, waits, attends over all local heads,
then exchanges the output and waits: on 2x H200 that exposed communication and its layout copies
cost ~10% of a step. Attention is independent per head, so splitting each rank's heads into `chunks`
groups lets chunk c+1's q/k/v exchange and chunk c-1's output exchange run on NCCL's stream while
chunk c attends. The received q/k/v are attended as strided views (no copy back to [B, S, H, D]),
saving three of diffusers' eight copies per layer. Same per-head arithmetic as the stock path.

Applied by engine/parallel.py (`context_parallelize`) to the self-attention of every block, after
diffusers' `enable_parallelism` has set each processor's parallel config; cross-attention (text keys,
not sequence-split) keeps the stock processor (engine/wan_attention.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed._functional_collectives as funcol

from wanbench.engine.wan_attention import SelfAttentionProcessor, install


def _exchange(x: torch.Tensor, group) -> torch.Tensor:
    """all_to_all over dim 0 (one slice per rank); returns at once, waits at first use of the result."""
    return funcol.all_to_all_single(x.flatten(), None, None, group).view(x.shape)


def _send_heads(x: torch.Tensor, world: int, chunks: int, c: int) -> torch.Tensor:
    """[B, S, H, D] -> [world, S, B, Hc, D]: chunk c of each rank's head group, one slice per rank."""
    b, s, h, d = x.shape
    return x.view(b, s, world, chunks, h // (world * chunks), d)[:, :, :, c].permute(2, 1, 0, 3, 4).contiguous()


def _as_full_sequence(received: torch.Tensor) -> torch.Tensor:
    """[world, S, B, Hc, D] (slice r = sequence shard r) -> [B, world*S, Hc, D] view."""
    w, s, b, hc, d = received.shape
    return received.view(w * s, b, hc, d).permute(1, 0, 2, 3)


def pipelined_ulysses_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, group, world: int, chunks: int,
    attention: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Ulysses attention of [B, S_local, H, D] tensors over `world` ranks, in `chunks` head groups."""
    b, s_local, h, d = query.shape
    hc = h // (world * chunks)
    received = [[_exchange(_send_heads(x, world, chunks, c), group) for x in (query, key, value)]
                for c in range(chunks)]
    returned = []
    for q, k, v in received:
        out = attention(*(_as_full_sequence(x) for x in (q, k, v)))
        # [B, world*S, Hc, D] -> [world, S, B, Hc, D]: sequence shard r goes back to rank r
        returned.append(_exchange(out.reshape(b, world, s_local, hc, d).permute(1, 2, 0, 3, 4).contiguous(),
                                  group))
    # returned[c][r] holds heads r*Hl + c*Hc ... of this rank's sequence shard
    out = torch.stack(returned)  # waits for the exchanges
    return out.permute(3, 2, 1, 0, 4, 5).reshape(b, s_local, h, d)


class PipelinedUlyssesProcessor(SelfAttentionProcessor):
    """Sequence-parallel self-attention through `pipelined_ulysses_attention` (Ulysses without ring)."""

    def __init__(self, chunks: int) -> None:
        super().__init__()
        self.chunks = chunks

    def handles(self) -> bool:
        return self.context_parallel() is not None

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        group, world = self.ulysses_group()
        return pipelined_ulysses_attention(query, key, value, group, world, self.chunks, self.attention)


def pipeline_ulysses(expert: torch.nn.Module, chunks: int) -> int:
    """Give every self-attention of `expert` the pipelined processor; returns how many were swapped."""
    return install(expert, lambda: PipelinedUlyssesProcessor(chunks))
