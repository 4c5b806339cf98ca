"""Ring attention whose key/value exchange runs while the rank attends its own block.

diffusers' ring (TemplatedRingAttention) all-gathers every rank's keys and values and uses the result
before its first attention call, though that call needs only the rank's own block: the exchange is never
hidden. Here the all-gather is issued, the local block is attended while it is in flight, and only then
are the other blocks read, attended and merged, in diffusers' order (own block, then rank+1, rank+2, ...)
with diffusers' log-sum-exp merge in fp32, so the result is diffusers' ring result. Kernels come from the
same diffusers forward ops; backends without one (and Ulysses x ring layouts) keep diffusers' path.

Applied by engine/parallel.py (`context_parallelize`) to every block's self-attention when ring > 1 and
ulysses == 1; cross-attention (text keys, not sequence-split) keeps the stock processor.
"""

from __future__ import annotations

import torch
import torch.distributed._functional_collectives as funcol
import torch.nn.functional as F
from diffusers.models.attention_dispatch import _cudnn_attention_forward_op, _native_flash_attention_forward_op

from wanbench.engine.wan_attention import SelfAttentionProcessor, install

FORWARD_OPS = {"_native_cudnn": _cudnn_attention_forward_op, "_native_flash": _native_flash_attention_forward_op}


def _attend_block(forward_op, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor):
    """(out [B, S, H, D], lse [B, S, H, 1]) of one key/value block, both fp32 for the merge."""
    out, lse = forward_op(None, query, key, value, return_lse=True, _save_ctx=False)
    lse = lse.unsqueeze(-1) if lse.ndim == 3 else lse
    return out.to(torch.float32), lse.to(torch.float32)


def overlapped_ring_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, group, world: int, rank: int, forward_op,
) -> torch.Tensor:
    """Attention of this rank's [B, S_local, H, D] queries over every rank's keys and values."""
    gathered = funcol.all_gather_tensor(torch.cat([key.flatten(), value.flatten()]), gather_dim=0, group=group)
    out, lse = _attend_block(forward_op, query, key, value)  # while the all-gather is in flight
    blocks = gathered.chunk(world)
    n = key.numel()
    for step in range(1, world):
        kv = blocks[(rank + step) % world]
        block_out, block_lse = _attend_block(forward_op, query, kv[:n].view_as(key), kv[n:].view_as(value))
        out = out - F.sigmoid(block_lse - lse) * (out - block_out)
        lse = lse - F.logsigmoid(lse - block_lse)
    return out.to(query.dtype)


class OverlappedRingProcessor(SelfAttentionProcessor):
    """Sequence-parallel self-attention through `overlapped_ring_attention` (ring without Ulysses)."""

    def handles(self) -> bool:
        cp = self.context_parallel()
        return cp is not None and cp.ulysses_degree == 1 and _backend_name(self._attention_backend) in FORWARD_OPS

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        cp = self.context_parallel()
        return overlapped_ring_attention(query, key, value, cp._ring_mesh.get_group(), cp.ring_degree,
                                         cp._ring_local_rank, FORWARD_OPS[_backend_name(self._attention_backend)])


def _backend_name(backend) -> str:
    return getattr(backend, "value", backend) or ""


def overlap_ring(expert: torch.nn.Module) -> int:
    """Give every self-attention of `expert` the overlapped ring processor; returns how many will use it
    (0 when the attention backend has no forward op here: those keep diffusers' ring)."""
    return install(expert, OverlappedRingProcessor)
