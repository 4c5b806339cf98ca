"""Everything done to the freshly built components before generating, in one place and one order.

  1. attention backend (measured choice on CUDA; ring attention needs one that returns the LSE); when
     FlashAttention 4 is chosen, or FP8 attention asked for (--fp8 attention|all, approximate and opt-in:
     engine/fp8_attention.py, cuDNN), self-attention processors that call it (engine/wan_attention.py)
  2. fused QKV / KV projections (--compile): one matmul instead of three, same function, the parts
     left as views of the fused weights (engine/fusion.py);
     FP8 linear layers (--fp8, approximate and opt-in: engine/fp8.py, torchao);
     step caching (--cache fbc:T, approximate and opt-in: diffusers' First Block Cache hooks)
  3. context parallelism (Ulysses / ring through diffusers; --ulysses-exchange chooses how Ulysses
     exchanges), then
  4. regional torch.compile of the repeated transformer blocks (--compile), then
  5. FSDP2 of DiT blocks and T5 blocks (--fsdp)            [3-5: engine/parallel.py's order];
     random weights of sharded modules are filled only now, shard by shard (models/seeded_init.py)
  6. text encoder to the CPU (--t5-cpu), offload (--offload: the hooks that bring host-resident modules
     to the GPU; under it they were built in host memory, and --max-gpu-memory capped the GPU before loading:
     engine/generate.py's _load)
  7. the allocator's cache emptied, so that what FSDP, --t5-cpu and offload freed from the loading
     high-water mark is given back to the device and NVML's per-GPU memory shows the real footprint
Each step is a no-op when its flag is off.
"""

from __future__ import annotations

import torch

from wanbench.config import RunConfig
from wanbench.engine.attention import FP8_KERNEL, apply_backend, resolve_backend
from wanbench.engine.fusion import fuse_projections
from wanbench.engine.offload import apply_offload
from wanbench.engine.parallel import ParallelDims, build_mesh, context_parallelize, fsdp_shard, kernel_applies
from wanbench.launch.distributed import DistContext
from wanbench.models import WanComponents


def choose_attention(
    config: RunConfig, components: WanComponents, device: torch.device, dims: ParallelDims, dtype: torch.dtype,
    shape: tuple[int, int, int, int], notes: list[str],
) -> None:
    choice = config.attention
    if dims.ring > 1 and choice in ("auto", "sdpa"):
        choice = "cudnn" if device.type == "cuda" else "flash"  # ring merges partial results by LSE
    chosen = resolve_backend(choice, device, rank_attention_shape(shape, dims), dtype,
                             allow_cpu_flash=dims.ring > 1, allow_kernel=kernel_applies(config.parallel, dims))
    apply_backend(components.experts, chosen.backend)
    notes.append(f"attention backend: {chosen.backend}" + (" (torch SDPA)" if chosen.backend == "native" else ""))
    kernel = FP8_KERNEL if config.fp8_attention else chosen.kernel
    if kernel is not None:
        from wanbench.engine.wan_attention import KernelAttentionProcessor, install

        for expert in components.experts:
            install(expert, lambda: KernelAttentionProcessor(kernel))
        what = ("APPROXIMATE: FP8 e4m3 (cuDNN FP8 SDPA, per-tensor scales)" if kernel == FP8_KERNEL
                else "FlashAttention 4 CuTe")
        notes.append(f"self-attention kernel: {kernel} ({what}); cross-attention: {chosen.backend}")
    if chosen.timings_ms:
        notes.append("attention backends timed (ms per call): " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                                         chosen.timings_ms.items()))


def rank_attention_shape(shape: tuple[int, int, int, int], dims: ParallelDims) -> tuple[int, int, int, int] | None:
    """The self-attention one rank computes, for --attention auto to time: every token and 1/ulysses of the heads
    under Ulysses. None under ring, whose backend is fixed (it merges partial results by their LSE)."""
    if dims.ring > 1:
        return None
    batch, tokens, heads, head_dim = shape
    return batch, tokens, heads // dims.ulysses, head_dim


def compile_blocks(components: WanComponents, fullgraph: bool) -> None:
    for expert in components.experts:
        expert.compile_repeated_blocks(fullgraph=fullgraph)


def compile_cache_note() -> str:
    """Where torch keeps compiled kernels between processes (its FX-graph cache, on by default), so that a
    run's compile_s can be read as cold or warm."""
    try:
        import torch._inductor.config as inductor_config
        from torch._inductor.runtime.cache_dir_utils import cache_dir
    except ImportError:  # private modules: a torch without them just gets no note
        return ""
    if not inductor_config.fx_graph_cache:
        return "; torch's compile cache is off"
    return f"; kernels cached across runs by torch in {cache_dir()}"


def apply_step_cache(components: WanComponents, spec: str, notes: list[str]) -> None:
    """First Block Cache: skip the remaining blocks when the first block's residual barely changed."""
    from diffusers import FirstBlockCacheConfig

    threshold = float(spec.partition(":")[2])
    for expert in components.experts:
        expert.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    notes.append(f"APPROXIMATE: First Block Cache, threshold {threshold} (output differs from the exact path)")


def sharded_modules(dims: ParallelDims, world_size: int) -> frozenset[str]:
    """The experts FSDP will shard in this run: random weights leave them unfilled until it has."""
    return frozenset({"transformer", "transformer_2"}) if dims.fsdp_dit and world_size > 1 else frozenset()


def fill_unfilled(components: WanComponents, device: torch.device, seed: int) -> None:
    from wanbench.models.seeded_init import fill_sharded_

    for name in components.unfilled:
        fill_sharded_(getattr(components, name), device, seed, name)
    components.unfilled = ()


def prepare(
    config: RunConfig, components: WanComponents, ctx: DistContext, dims: ParallelDims, dtype: torch.dtype,
    attention_shape: tuple[int, int, int, int], notes: list[str],
) -> None:
    device, p = ctx.device, config.parallel
    choose_attention(config, components, device, dims, dtype, attention_shape, notes)
    if config.compile:
        for expert in components.experts:
            fuse_projections(expert)
    if config.fp8_linear:
        from wanbench.engine.fp8 import quantize_blocks

        count = sum(quantize_blocks(expert) for expert in components.experts)
        notes.append(f"APPROXIMATE: {count} block linear layers in FP8 e4m3 (torchao, per-row scales)")
    if config.cache != "none":
        apply_step_cache(components, config.cache, notes)
    mesh = build_mesh(dims, device) if ctx.world_size > 1 else None
    if mesh is not None:
        notes.extend(context_parallelize(components, dims, mesh, p.ulysses_exchange))
    if config.compile:
        # FSDP's hooks and the context-parallel split hook on blocks.0 (it calls inspect.signature) break
        # the graph: compile those runs without fullgraph rather than refuse them.
        compile_blocks(components, fullgraph=not dims.fsdp_dit and dims.sp == 1)
        notes.append("compiled: fused QKV projections, regional torch.compile of the transformer blocks"
                     + compile_cache_note())
    if mesh is not None:
        fsdp_shard(components, dims, mesh)
        fill_unfilled(components, device, config.seed)
        components.mesh = mesh  # type: ignore[attr-defined]
    if p.t5_cpu:
        components.text_encoder.to("cpu")
    if p.offload != "none":
        apply_offload(components, p.offload, device)
        notes.append(f"offload: {p.offload}")
    if device.type == "cuda":
        torch.cuda.empty_cache()
