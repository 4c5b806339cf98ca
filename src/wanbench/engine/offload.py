"""Single-GPU offload for GPUs smaller than the model, and a memory cap that emulates such a GPU.

`model`: whole modules move to the GPU when called and back after (accelerate's hooks, chained
text encoder -> expert 1 -> expert 2 -> VAE, as diffusers' enable_model_cpu_offload does).
`group`: diffusers group offloading, one DiT block at a time on CUDA streams, so the transfer of
the next block overlaps the compute of this one.
"""

from __future__ import annotations

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


def pin_in_place(module: torch.nn.Module) -> None:
    """Move every parameter and buffer into page-locked host memory, one tensor at a time.

    Group offloading on streams keeps a pinned copy of each tensor (`pin_memory()`, which returns a tensor that is
    already pinned as it is); pinning first makes that copy the only one, instead of a second copy of the whole
    model in host memory beside the pageable original.
    """
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.device.type == "cpu" and not tensor.is_pinned():
                tensor.data = tensor.data.pin_memory()


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
