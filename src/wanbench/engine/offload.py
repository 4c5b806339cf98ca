"""Single-GPU offload for GPUs smaller than the model, and a memory cap that emulates such a GPU.

`model`: whole modules move to the GPU when called and back after (accelerate's hooks, chained
text encoder -> expert 1 -> expert 2 -> VAE, as diffusers' enable_model_cpu_offload does).
`group`: diffusers group offloading, one DiT block at a time on CUDA streams, so the transfer of
the next block overlaps the compute of this one.
"""

from __future__ import annotations

import mmap

import torch

from wanbench.errors import UserError


def cap_device_memory(device: torch.device, max_gb: float) -> None:
    """Limit this process's allocator to max_gb on `device`, as if the GPU were that small."""
    if device.type != "cuda":
        raise UserError("--max-gpu-memory applies to a CUDA device")
    index = device.index if device.index is not None else torch.cuda.current_device()
    capacity = torch.cuda.get_device_properties(index).total_memory
    fraction = max_gb * 1e9 / capacity
    if not 0 < fraction <= 1:
        raise UserError(f"--max-gpu-memory {max_gb} must be between 0 and the GPU's {capacity / 1e9:.0f} GB")
    torch.cuda.set_per_process_memory_fraction(fraction, index)


SLAB_BYTES = 1 << 30  # the most host memory held twice while a module's tensors move into their slabs
ALIGN = 512


class _HostPages(mmap.mmap):
    """Anonymous, page-aligned host memory shared with no other allocation; unlocked before it is unmapped.

    Tensors made with torch.frombuffer hold a reference to these pages, so they outlive every view of them.
    """

    locked_at: int | None = None

    def __del__(self) -> None:
        if self.locked_at is not None:
            torch.cuda.cudart().cudaHostUnregister(self.locked_at)


def host_slab(nbytes: int) -> torch.Tensor:
    """`nbytes` of pageable host memory as a uint8 tensor."""
    return torch.frombuffer(_HostPages(-1, nbytes), dtype=torch.uint8)


def locked_slab(nbytes: int) -> torch.Tensor:
    """`nbytes` of host memory page-locked in place (cudaHostRegister), which CUDA copies from asynchronously."""
    pages = _HostPages(-1, nbytes)
    slab = torch.frombuffer(pages, dtype=torch.uint8)
    cudart = torch.cuda.cudart()
    error = cudart.cudaHostRegister(slab.data_ptr(), nbytes, 0)
    if int(error) != 0:
        raise RuntimeError(f"cudaHostRegister of {nbytes} bytes failed: {cudart.cudaGetErrorString(error)}")
    pages.locked_at = slab.data_ptr()
    return slab


def _aligned_bytes(tensor: torch.Tensor) -> int:
    return -(-tensor.numel() * tensor.element_size() // ALIGN) * ALIGN


def pack_into_slabs(module: torch.nn.Module, make_slab=host_slab) -> list[torch.Tensor]:
    """Move every host tensor of `module` into views of a few large slabs from `make_slab(nbytes)`, in order.

    Values, shapes, dtypes and parameter objects stay what they were (state-dict keys and ties too); each tensor's
    old storage is freed as it moves, so at most one slab is held twice.
    """
    tensors = [t for t in dict.fromkeys([*module.parameters(), *module.buffers()]) if t.device.type == "cpu"]
    batches: list[list[torch.Tensor]] = [[]]
    size = 0
    for tensor in tensors:
        nbytes = _aligned_bytes(tensor)
        if batches[-1] and size + nbytes > SLAB_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(tensor)
        size += nbytes
    slabs = []
    with torch.no_grad():
        for batch in filter(None, batches):
            sizes = [_aligned_bytes(t) for t in batch]
            slab = make_slab(sum(sizes))
            offset = 0
            for tensor, nbytes in zip(batch, sizes, strict=True):
                view = slab[offset:offset + tensor.numel() * tensor.element_size()]
                view = view.view(tensor.dtype).view(tensor.shape)
                view.copy_(tensor.data.contiguous())
                tensor.data = view
                offset += nbytes
            slabs.append(slab)
    return slabs


def pin_in_place(module: torch.nn.Module) -> None:
    """Page-lock the module's host tensors where they will stay, without the pinned allocator's copies.

    Group offloading on streams keeps a pinned copy of each tensor (`pin_memory()`, which returns an already pinned
    tensor as it is). Pinned one by one, each copy comes from torch's caching host allocator, which rounds every
    request up to a power of two (a 141 MB FFN weight takes 256 MB); packed into a few slabs that are registered in
    place, the host holds the model once, at its own size.
    """
    pack_into_slabs(module, make_slab=locked_slab)


def apply_offload(components, mode: str, device: torch.device) -> None:
    """Move the components to the CPU and attach the hooks that bring each to `device` when used."""
    if mode == "none":
        return
    modules = [components.text_encoder, *components.experts, components.vae]
    for module in modules:
        module.to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if mode == "model":
        from accelerate import cpu_offload_with_hook

        hook = None
        for module in modules:
            _, hook = cpu_offload_with_hook(module, device, prev_module_hook=hook)
        return
    from diffusers.hooks import apply_group_offloading

    use_stream = device.type == "cuda"
    if use_stream and torch.cuda.is_available():
        for module in modules:
            pin_in_place(module)
    streams = {"use_stream": use_stream}  # no streams on the CPU
    for expert in components.experts:
        expert.enable_group_offload(
            onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
            num_blocks_per_group=1, **streams,
        )
    for module in (components.text_encoder, components.vae):
        apply_group_offloading(module, onload_device=device, offload_type="leaf_level", **streams)
