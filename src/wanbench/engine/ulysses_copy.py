"""Ulysses whose exchanges are copy-engine writes into the peers' memory (--ulysses-exchange copy-engine).

NCCL's all-to-all needs SMs and diffusers surrounds each of the four exchanges per layer with layout copies; a
plain copy between the GPUs' memories runs on the copy engines with no SMs. Here, per layer:
  1. RoPE writes q and k (and v is copied) by destination: the heads a peer attends go into a send tensor
     [3, world, B, S_local, Hc, D] (one contiguous block per peer, batch row and tensor), the rank's own heads
     straight into its rows of its receive buffer [3, B, S, Hc, D], a symmetric-memory buffer its peers write.
  2. The peers' blocks are written into the peers' receive buffers on a side stream (copy engines), while the
     SMs make the rank's own writes of step 1 (issued after the pushes). One barrier.
  3. Attention reads q, k, v straight out of the receive buffer ([B, S, Hc, D]: every token, this rank's heads).
  4. The output's rows of each peer's tokens are written into that peer's output buffer [world, B, S_local, Hc, D]
     (slot: the writing rank); one barrier; the rank's own rows and the peers' slots are stacked, heads in rank
     order, for to_out (one pass).
SM copies per layer beyond the one-GPU path's: v's copy and the output's assembly. Same arithmetic in the same
order as the single process (bit for bit on gloo, and bit-identical to diffusers' all-to-all on GPUs once a new
buffer's allocation is settled before any peer writes into it, `PeerBuffer._settle_allocation`). Its speed
against the all-to-all default is in benchmarks/RESULTS.md (see "Deleted variants").

One receive buffer per role is enough: a rank writes layer L+1's q/k/v into a peer only after passing layer L's
output barrier, which the peer reaches only after attending layer L out of that buffer (its stream orders them);
and writes layer L's output into a peer only after layer L's q/k/v barrier, which the peer reaches only after
assembling layer L-1's output from that buffer. Each barrier comes after the rank's stream has waited for its
own writes, so a barrier passed means every write into this rank has landed.

Barrier: a one-element NCCL all-reduce on the Ulysses group (symmetric memory's own barrier kernel, which spins on
its peers, stalled both GPUs inside the full model).

Transport: CUDA symmetric memory (torch.distributed._symmetric_memory) on GPUs. On the CPU (gloo) an all-gather
of every rank's send tensor stands in for the writes, so tests check the layout logic against the single process;
only a GPU measures the transport.

Applied by engine/parallel.py (`context_parallelize`) to every block's self-attention for Ulysses without ring;
cross-attention (text keys, not sequence-split) keeps the stock processor.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

import torch
import torch.distributed as dist

from wanbench.engine.wan_attention import UlyssesExchangeProcessor, install, write_rotated
from wanbench.errors import UserError, first_line

# (send tensor, peer) -> the piece that peer receives; (a rank's receive buffer, source rank) -> where it goes
Piece = Callable[[torch.Tensor, int], torch.Tensor]


class PeerBuffer:
    """A tensor that every rank of `group` holds and every other rank of it can write (on GPUs)."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, group) -> None:
        self.rank, self.world, self.group = dist.get_rank(group), dist.get_world_size(group), group
        self._handle, self._side, self._flag = None, None, None
        if device.type == "cuda":
            try:
                import torch.distributed._symmetric_memory as symm_mem

                self.local = symm_mem.empty(*shape, dtype=dtype, device=device)
                self._handle = symm_mem.rendezvous(self.local, group)
                self._side = torch.cuda.Stream(device)
                self._flag = torch.zeros(1, dtype=torch.int32, device=device)
            except Exception as exc:  # no peer access between these GPUs, or a torch without it
                cause = first_line(exc) or type(exc).__name__
                raise UserError("--ulysses-exchange copy-engine needs CUDA symmetric memory between the GPUs "
                                f"({cause}): use --ulysses-exchange all-to-all") from exc
            self._settle_allocation(device)
        else:
            self.local = torch.empty(shape, dtype=dtype, device=device)

    def _settle_allocation(self, device: torch.device) -> None:
        """No peer may write into this buffer before every rank's allocation is done with it. torch's allocator
        (2.11 behaves so) zeroes a new symmetric block with cudaMemset without waiting, so on a rank that is behind
        on its stream the zeroing can land over a peer's first writes. This makes any version safe, once per
        buffer."""
        torch.cuda.synchronize(device)
        self.barrier()

    @property
    def on_gpu(self) -> bool:
        return self._handle is not None

    def peer(self, rank: int) -> torch.Tensor:
        """`rank`'s buffer as a tensor here (GPUs only: a view of the peer's memory; copies into it use the copy
        engines when both sides are contiguous)."""
        return self._handle.get_buffer(rank, tuple(self.local.shape), self.local.dtype, 0)

    def barrier(self) -> None:
        """(GPUs) Wait until every rank has issued everything before this on its stream (its writes into peers
        too)."""
        dist.all_reduce(self._flag, group=self.group)

    def side(self):
        """Context for the writes into the peers: on a GPU a side stream that starts after what the current
        stream issued, so the copy engines run while the SMs go on; `settle` joins it."""
        if self._side is None:
            return contextlib.nullcontext()
        self._side.wait_stream(torch.cuda.current_stream())
        return torch.cuda.stream(self._side)

    def settle(self) -> None:
        """After this rank's writes into its peers: the current stream waits for them, then one barrier, after
        which every peer's writes into this rank have landed (on the CPU `push`'s all-gather already was one)."""
        if not self.on_gpu:
            return
        torch.cuda.current_stream().wait_stream(self._side)
        self.barrier()


_buffers: dict[tuple, PeerBuffer] = {}


@torch.compiler.disable
def peer_buffer(role: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, group) -> PeerBuffer:
    """The process's one buffer for `role` at this shape (made, collectively, on first use)."""
    key = (role, tuple(shape), dtype, str(device), group.group_name)
    if key not in _buffers:
        _buffers[key] = PeerBuffer(tuple(shape), dtype, device, group)
    return _buffers[key]


@torch.compiler.disable
def push(receive: PeerBuffer, send: torch.Tensor, piece: Piece, slot: Piece, lead: int) -> None:
    """Every peer p gets piece(send, p) at slot(p's receive buffer, this rank). On GPUs: copies on the side stream,
    one per index of the first `lead` dimensions (contiguous blocks, so each is a copy-engine memcpy); `settle`
    completes them. On the CPU: an all-gather of `send` (the same shape on every rank) and local copies."""
    rank, world = receive.rank, receive.world
    peers = [p for p in range(world) if p != rank]
    if receive.on_gpu:
        with receive.side():
            for p in peers:
                target, source = slot(receive.peer(p), rank), piece(send, p)
                for index in itertools.product(*(range(n) for n in target.shape[:lead])):
                    target[index].copy_(source[index])
            # Compiled, `send` can be freed before `settle` (the code after this graph break no longer holds it):
            # its memory must not be handed out again until the side stream has read it.
            send.record_stream(torch.cuda.current_stream())
        return
    sent = [torch.empty_like(send) for _ in range(world)]
    dist.all_gather(sent, send.contiguous(), group=receive.group)
    for p in peers:
        slot(receive.local, p).copy_(piece(sent[p], rank))


@torch.compiler.disable
def settle(receive: PeerBuffer) -> None:
    receive.settle()


def rows(x: torch.Tensor, rank: int, s_local: int) -> torch.Tensor:
    """Rank `rank`'s token rows of a [..., B, S, Hc, D] tensor."""
    return x[..., rank * s_local:(rank + 1) * s_local, :, :]


# Traced under --compile apart from the transport (peer_buffer, push, settle: graph breaks), so that RoPE's
# writes stay fused as in the one-GPU path.
def exchange_qkv(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, rotary_emb, group, world: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, S_local, H, D] projections (RoPE applied on the way to q, k) -> q, k, v [B, S, H/world, D]: every
    token, this rank's heads (views of its receive buffer)."""
    b, s_local, h, d = query.shape
    hc = h // world
    receive = peer_buffer("qkv", (3, b, world * s_local, hc, d), query.dtype, query.device, group)
    rank = receive.rank
    send = torch.empty(3, world, b, s_local, hc, d, dtype=query.dtype, device=query.device)
    inputs = ((query, rotary_emb), (key, rotary_emb), (value, None))
    for t, (x, rope) in enumerate(inputs):
        for r in (r for r in range(world) if r != rank):
            write_rotated(x[:, :, r * hc:(r + 1) * hc], rope, send[t, r])
    push(receive, send, lambda x, p: x[:, p], lambda buf, src: rows(buf, src, s_local), lead=2)
    for t, (x, rope) in enumerate(inputs):
        write_rotated(x[:, :, rank * hc:(rank + 1) * hc], rope, rows(receive.local[t], rank, s_local))
    settle(receive)
    return receive.local[0], receive.local[1], receive.local[2]


def exchange_output(out: torch.Tensor, group, world: int) -> torch.Tensor:
    """Attention output [B, S, H/world, D] (every token, this rank's heads) -> [B, S_local, H, D] (this rank's
    tokens, every head in rank order)."""
    b, s, hc, d = out.shape
    s_local = s // world
    out = out.contiguous()  # as the attention kernels give it: then each write into a peer is one memcpy
    receive = peer_buffer("out", (world, b, s_local, hc, d), out.dtype, out.device, group)
    rank = receive.rank
    push(receive, out, lambda x, p: rows(x, p, s_local), lambda buf, src: buf[src], lead=1)
    settle(receive)
    pieces = [rows(out, p, s_local) if p == rank else receive.local[p] for p in range(world)]
    return torch.stack(pieces, dim=2).flatten(2, 3)


class CopyEngineUlyssesProcessor(UlyssesExchangeProcessor):
    """Sequence-parallel self-attention whose exchanges are writes into the peers' buffers (Ulysses without
    ring)."""

    def place_qkv(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, rotary_emb):
        return exchange_qkv(query, key, value, rotary_emb, *self.ulysses_group())

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return exchange_output(self.attention(query, key, value), *self.ulysses_group())


def copy_engine_exchanges(expert: torch.nn.Module) -> int:
    """Give every self-attention of `expert` the copy-engine processor; returns how many will use it."""
    return install(expert, CopyEngineUlyssesProcessor)
