"""The process group of a torchrun worker: detection, start, rank/device, teardown."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from wanbench.errors import UserError
from wanbench.launch.process import under_torchrun

__all__ = ["DistContext", "init_distributed", "shutdown_distributed", "under_torchrun"]


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise UserError(f"bad --device {choice!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda, but this machine has no CUDA GPU: use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {choice}: only {torch.cuda.device_count()} GPU(s) here")
    elif device.type != "cpu":
        raise UserError(f"bad --device {choice!r}: use auto, cpu, cuda or cuda:N")
    return device


def init_distributed(device: torch.device, timeout_s: float) -> DistContext:
    """Join the process group (NCCL on GPUs, gloo on CPU) and pick this rank's device."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"rank {rank} wants GPU {local_rank} but this node has {torch.cuda.device_count()}: "
                "lower --gpus to the GPUs per node"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
        allow_context_parallel_on_cpu()
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
            device_id=device if device.type == "cuda" else None,
        )
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device)


def shutdown_distributed(clean: bool = True) -> None:
    """Leave the process group; after a clean run, first wait for every rank (no collective left in flight
    while another rank tears down, which can abort the process on exit). After a failure, no barrier and
    no NCCL destroy, which waits for peers that may be stuck in a collective this rank never joined (seen on
    2x H200: rank 0 failed in its save while rank 1 waited to gather): NCCL is aborted, and the launcher ends
    the peers when this rank exits."""
    if not dist.is_initialized():
        return
    if clean:
        dist.barrier()
    elif dist.get_backend() == "nccl":
        dist.distributed_c10d._abort_process_group()
        return
    dist.destroy_process_group()


_CPU_PATCHED = False


def allow_context_parallel_on_cpu() -> None:
    """Make diffusers' context parallelism run on CPU gloo workers (tests and CPU trials).

    diffusers computes `rank % torch.accelerator.device_count()`, which is 0 without an accelerator,
    and its ring attention needs `aten::_scaled_dot_product_flash_attention` (the one that returns
    the log-sum-exp), which has no CPU kernel; the CPU flash kernel is routed to it here.
    """
    global _CPU_PATCHED
    if _CPU_PATCHED:
        return
    torch.accelerator.device_count = lambda: 1  # type: ignore[assignment]
    lib = torch.library.Library("aten", "IMPL")

    def flash_on_cpu(query, key, value, dropout_p=0.0, is_causal=False, return_debug_mask=False, scale=None):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, dropout_p, is_causal, scale=scale
        )
        empty = torch.empty(0, dtype=torch.int64)
        # The CUDA op's shape function gives a contiguous LSE (the CPU kernel's is heads-last), and
        # compiled graphs assert the strides.
        lse = lse.contiguous()
        return out, lse, empty, empty, query.shape[2], key.shape[2], empty, empty, torch.empty(0, dtype=query.dtype)

    lib.impl("_scaled_dot_product_flash_attention", flash_on_cpu, "CPU")
    allow_context_parallel_on_cpu._library = lib  # keep the registration alive
    _CPU_PATCHED = True
