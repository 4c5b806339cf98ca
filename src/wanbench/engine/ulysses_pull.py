"""Ulysses whose exchanges are copies out of the peers' memory (--ulysses-exchange copy-engine).

On 2x H200 NCCL's all-to-all moves a rank's 84 MB block to its peer at 243 GB/s issued back to back (0.345 ms
per 168 MB tensor), and diffusers surrounds each of the four exchanges per layer with layout copies; a copy of
the same rows out of the peer's symmetric-memory buffer runs on the copy engines at 357 GB/s (0.235 ms, no SMs;
results/h200x2/nccl-session6/). Here each rank writes its q, k and v straight into a buffer its peers can read,
laid out by destination and head chunk ([3, world, chunks, B, S_local, H/(world*chunks), D]: RoPE writes each
destination's heads into its slots), so the block a peer needs is one contiguous piece. After one barrier every
rank copies its blocks out of each peer's buffer into token-major q, k and v (one copy per tensor, peer, chunk and
batch row) and attends chunk by chunk; each chunk's output [B, S, H/(world*chunks), D] goes into a second shared
buffer and, after a barrier, every rank copies its own tokens' rows of it out of its peers' buffers; the rows are
finally set beside each other, heads in rank and chunk order, for to_out. The copies out of the peers run on side
streams (copy engines) while the SMs copy the rank's own blocks. With --ulysses-chunks N > 1 all chunks' q/k/v
copies are issued at once after the first barrier, so chunk c+1 arrives while chunk c attends, and chunk c's
output travels while chunk c+1 attends (attention is independent per head: the same arithmetic, bit for bit).
The session-5 exchange benchmark hid only 23% of a copy-engine exchange behind attention, but it put a barrier
kernel, which waits for a free SM, between them; here no barrier waits behind an attention it should overlap.
Copies left on the SMs per layer: the blocks a rank keeps for itself, the output into its buffer and the output
assembled for to_out (RoPE's writes are made by the one-GPU path too). Same arithmetic in the same order as the
single process.

One buffer per role is enough: a rank rewrites its q/k/v buffer only after passing the layer's last output
barrier, which each peer reaches only after its copies out of that buffer are done (its current stream waits for
every chunk's copies before its last attention), and its output buffer (one slot per chunk) only after the next
layer's q/k/v barrier, which each peer reaches after joining its output copies.

Barrier: a one-element NCCL all-reduce on the Ulysses group by default (WANBENCH_PEER_BARRIER=device: the
symmetric-memory barrier kernel, with a 30 s timeout that ends the process). On 2x H200 (session 7) the device
barrier passed the exchange alone (benchmarks/copy_engine_probe.py) and a tiny generate, but inside an a14b
generate it waited for its peer until its timeout, while the NCCL barrier ran the same generate to latents
bit-identical to diffusers' exchange. Why is not established (a guess: kernels that spin on a peer need the same
order on every GPU, which NCCL gives its own kernels and nothing gives this one). Cost: 1 + chunks barriers per
layer.

Transport: CUDA symmetric memory (torch.distributed._symmetric_memory) on GPUs. On the CPU (gloo) an
all-gather of the buffers stands in for reading the peers' memory, so tests check the layout logic against the
single process; only a GPU measures the transport (benchmarks/h200x2_next.sh pull).

Applied by engine/parallel.py (`context_parallelize`) to every block's self-attention for Ulysses without
ring; cross-attention (text keys, not sequence-split) keeps the stock processor.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import torch
import torch.distributed as dist

from wanbench.engine.wan_attention import UlyssesExchangeProcessor, install, write_rotated
from wanbench.errors import UserError, first_line

BARRIER_ENV = "WANBENCH_PEER_BARRIER"  # nccl (default) or device
DEVICE_BARRIER_TIMEOUT_MS = 30_000


class PeerBuffer:
    """A tensor that every rank of `group` holds and every other rank of it can read."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, group) -> None:
        self.rank, self.world, self.group = dist.get_rank(group), dist.get_world_size(group), group
        self._handle, self._copies, self._side, self._flag = None, None, None, None
        if device.type == "cuda":
            try:
                import torch.distributed._symmetric_memory as symm_mem

                self.local = symm_mem.empty(*shape, dtype=dtype, device=device)
                self._handle = symm_mem.rendezvous(self.local, group)
                self._side = torch.cuda.Stream(device)
                if os.environ.get(BARRIER_ENV, "nccl") != "device":
                    self._flag = torch.zeros(1, dtype=torch.int32, device=device)
            except Exception as exc:  # no peer access between these GPUs, or a torch without it
                cause = first_line(exc) or type(exc).__name__
                raise UserError("--ulysses-exchange copy-engine needs CUDA symmetric memory between the GPUs "
                                f"({cause}): use --ulysses-exchange all-to-all") from exc
        else:
            self.local = torch.empty(shape, dtype=dtype, device=device)
            self._copies = [torch.empty_like(self.local) for _ in range(self.world)]

    def ready(self) -> None:
        """Wait until every rank has written its buffer (everything issued before on each rank's stream)."""
        if self._flag is not None:
            dist.all_reduce(self._flag, group=self.group)
        elif self._handle is not None:
            self._handle.barrier(channel=0, timeout_ms=DEVICE_BARRIER_TIMEOUT_MS)
        else:
            dist.all_gather(self._copies, self.local, group=self.group)

    def beside(self):
        """Context for the copies out of the peers' buffers: on CUDA a side stream (after what the current stream
        issued, the barrier included), so the copy engines run while the SMs make this rank's own copies; `join`
        then makes the current stream wait for them."""
        if self._side is None:
            return contextlib.nullcontext()
        self._side.wait_stream(torch.cuda.current_stream())
        return torch.cuda.stream(self._side)

    def join(self) -> None:
        if self._side is not None:
            torch.cuda.current_stream().wait_stream(self._side)

    def mark(self) -> torch.cuda.Event | None:
        """A point on the side stream after the copies issued so far (None off CUDA), for `wait`."""
        if self._side is None:
            return None
        event = torch.cuda.Event()
        event.record(self._side)
        return event

    @staticmethod
    def wait(event: torch.cuda.Event | None) -> None:
        """Make the current stream wait for the copies issued before `mark` returned `event`."""
        if event is not None:
            torch.cuda.current_stream().wait_event(event)

    def peer(self, rank: int) -> torch.Tensor:
        """`rank`'s buffer, readable here (on CUDA a view of the peer's memory: copies from it use copy engines)."""
        if self._handle is not None:
            return self._handle.get_buffer(rank, tuple(self.local.shape), self.local.dtype, 0)
        return self._copies[rank]


_buffers: dict[tuple, PeerBuffer] = {}


@torch.compiler.disable
def peer_buffer(role: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, group) -> PeerBuffer:
    """The process's one buffer for `role` at this shape (made, collectively, on first use)."""
    key = (role, tuple(shape), dtype, str(device), group.group_name)
    if key not in _buffers:
        _buffers[key] = PeerBuffer(tuple(shape), dtype, device, group)
    return _buffers[key]


@torch.compiler.disable
def attend_pulled(buffer: PeerBuffer, attention: Callable[..., torch.Tensor]) -> torch.Tensor:
    """[3, world, chunks, B, S_local, Hc, D] by destination on each rank -> this rank's tokens with every rank's
    heads attended, [B, S_local, H, D]: q, k, v pulled from the peers, attention chunk by chunk, each chunk's
    output pulled back by its tokens' ranks while the next chunk attends."""
    qkv, arrivals = pull_qkv(buffer)
    outputs = OutputExchange(qkv.shape, qkv.dtype, qkv.device, buffer.group)
    for c in range(len(arrivals)):
        outputs.send(c, attention(*take_chunk(buffer, qkv, arrivals, c)))
    return outputs.assembled()


def pull_qkv(buffer: PeerBuffer) -> tuple[torch.Tensor, list]:
    """After the one barrier, every chunk's copies out of the peers into token-major [chunks, 3, B, S, Hc, D],
    all issued at once on the side stream (copy engines); returns it and each chunk's arrival mark."""
    rank, world = buffer.rank, buffer.world
    _, _, chunks, b, s_local, hc, d = buffer.local.shape
    qkv = torch.empty(chunks, 3, b, world * s_local, hc, d, dtype=buffer.local.dtype, device=buffer.local.device)
    buffer.ready()
    arrivals = []
    with buffer.beside():
        for c in range(chunks):
            for peer in (p for p in range(world) if p != rank):
                block = buffer.peer(peer)[:, rank, c]
                for t in range(3):
                    for i in range(b):
                        qkv[c, t, i, peer * s_local:(peer + 1) * s_local].copy_(block[t, i])
            arrivals.append(buffer.mark())
    return qkv, arrivals


def take_chunk(buffer: PeerBuffer, qkv: torch.Tensor, arrivals: list, c: int) -> torch.Tensor:
    """Chunk c's q, k, v [3, B, S, Hc, D]: the rank's own block copied in (SMs), the peers' waited for."""
    s_local = buffer.local.shape[4]
    qkv[c, :, :, buffer.rank * s_local:(buffer.rank + 1) * s_local] = buffer.local[:, buffer.rank, c]
    buffer.wait(arrivals[c])
    return qkv[c]


class OutputExchange:
    """Attention outputs, chunk by chunk ([B, S, Hc, D]: this rank's heads, all tokens), back to the ranks that
    hold their tokens: each chunk goes into a shared buffer [chunks, B, S, Hc, D] and, after a barrier, every rank
    copies its tokens' rows of it out of its peers' buffers on the side stream while the next chunk attends."""

    def __init__(self, qkv_shape: torch.Size, dtype: torch.dtype, device: torch.device, group) -> None:
        chunks, _, b, s, hc, d = qkv_shape
        self.buffer = peer_buffer("out", (chunks, b, s, hc, d), dtype, device, group)
        self.s_local = s // self.buffer.world
        self.pulled = torch.empty(self.buffer.world, chunks, b, self.s_local, hc, d, dtype=dtype, device=device)

    def send(self, c: int, out: torch.Tensor) -> None:
        buffer, rank, s_local = self.buffer, self.buffer.rank, self.s_local
        mine = slice(rank * s_local, (rank + 1) * s_local)
        buffer.local[c].copy_(out)
        buffer.ready()
        with buffer.beside():
            for peer in (p for p in range(buffer.world) if p != rank):
                rows = buffer.peer(peer)[c, :, mine]
                for i in range(rows.shape[0]):
                    self.pulled[peer, c, i].copy_(rows[i])
        self.pulled[rank, c] = buffer.local[c, :, mine]

    def assembled(self) -> torch.Tensor:
        """[B, S_local, H, D], heads in rank, chunk order (as place_qkv split them)."""
        self.buffer.join()
        world, chunks, b, s_local, hc, d = self.pulled.shape
        return self.pulled.permute(2, 3, 0, 1, 4, 5).reshape(b, s_local, world * chunks * hc, d)


class PulledUlyssesProcessor(UlyssesExchangeProcessor):
    """Sequence-parallel self-attention whose exchanges copy out of the peers' buffers (Ulysses without ring),
    attending in `chunks` head chunks so that all but the first chunk's copies run beside attention."""

    def __init__(self, chunks: int = 1) -> None:
        super().__init__()
        self.chunks = chunks

    def place_qkv(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, rotary_emb):
        """Write q, k (rotated) and v into the shared buffer, each destination's head chunks in their own slots;
        returns the three [world, chunks, B, S_local, Hc, D] slots."""
        group, world = self.ulysses_group()
        b, s_local, h, d = query.shape
        hc = h // (world * self.chunks)
        buffer = peer_buffer("qkv", (3, world, self.chunks, b, s_local, hc, d), query.dtype, query.device, group)
        for t, (x, rope) in enumerate(((query, rotary_emb), (key, rotary_emb), (value, None))):
            for r in range(world):
                for c in range(self.chunks):
                    first = (r * self.chunks + c) * hc  # rank r's heads, chunk c
                    write_rotated(x[:, :, first:first + hc], rope, buffer.local[t, r, c])
        return buffer.local[0], buffer.local[1], buffer.local[2]

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """The buffer's slots in, [B, S_local, H, D] out."""
        group, _ = self.ulysses_group()
        buffer = peer_buffer("qkv", (3, *query.shape), query.dtype, query.device, group)
        return attend_pulled(buffer, self.attention)


def pull_exchanges(expert: torch.nn.Module, chunks: int = 1) -> int:
    """Give every self-attention of `expert` the pulled-exchange processor (attending in `chunks` head chunks);
    returns how many will use it."""
    return install(expert, lambda: PulledUlyssesProcessor(chunks))
