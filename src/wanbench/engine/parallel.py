"""Parallel strategies for one generation, applied to the model in one place and one order.

Degrees live in ParallelDims (checked once against the world size); the device mesh has the
dimensions ("dp", "cfg", "ring", "ulysses"); dp replicas each make their own videos (MLPerf
Offline), the other three split one video. engine/prepare.py applies, in this order:
  1. context parallelism (Ulysses / ring) through diffusers' ContextParallelConfig (`context_parallelize`),
  2. regional compile of the blocks (engine/prepare.py),
  3. FSDP2 `fully_shard` of every DiT block then each expert root, and of every T5 block then the root.
CFG parallelism is not a model transform: it is the noise predictor `ParallelCFG` (engine/guidance.py), which runs the
conditional branch on cfg rank 0 and the unconditional on cfg rank 1 and exchanges the prediction
once per step. Offload (engine/offload.py) is the single-GPU alternative and is applied instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from wanbench.config import ParallelConfig, RunConfig
from wanbench.errors import UserError

STRATEGIES = ("auto", "none", "cfg", "ulysses", "ring", "hybrid")


@dataclass(frozen=True)
class ParallelDims:
    world: int
    cfg: int = 1
    ring: int = 1
    ulysses: int = 1
    fsdp_dit: bool = False
    fsdp_t5: bool = False
    dp: int = 1  # independent replicas, each generating its own videos (MLPerf Offline)

    @property
    def sp(self) -> int:
        return self.ring * self.ulysses

    @property
    def group(self) -> int:
        """Ranks that generate one video together."""
        return self.cfg * self.sp

    def describe(self) -> str:
        parts = [f"cfg {self.cfg}"] if self.cfg > 1 else []
        parts += [f"ulysses {self.ulysses}"] if self.ulysses > 1 else []
        parts += [f"ring {self.ring}"] if self.ring > 1 else []
        parts += ["fsdp " + ",".join(n for n, on in (("dit", self.fsdp_dit), ("t5", self.fsdp_t5)) if on)] if (
            self.fsdp_dit or self.fsdp_t5) else []
        text = " x ".join(parts) or "single"
        return f"{self.dp} replicas of {text}" if self.dp > 1 else text


def resolve_dims(config: RunConfig, world: int) -> ParallelDims:
    """Degrees from --strategy / --cfg-parallel / --ulysses / --ring for `world` ranks: the one place that checks
    the parallel flags and every rule combining them, before anything is loaded."""
    validate_parallel_flags(config.parallel)
    p, spec = config.parallel, config.preset.transformer
    if p.strategy not in STRATEGIES:
        raise UserError(f"bad --strategy {p.strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if p.dp < 1:
        raise UserError(f"bad --dp {p.dp}: give 1 or more")
    if world % p.dp:
        raise UserError(f"--dp {p.dp} replicas need a GPU/process count that is a multiple of {p.dp}, and this run "
                        f"has {world}: e.g. --gpus {p.dp * max(1, world // p.dp)}")
    group = world // p.dp
    uses_cfg = config.uses_guidance
    explicit = p.cfg_parallel or p.ulysses > 1 or p.ring > 1
    if explicit:
        cfg, ulysses, ring = (2 if p.cfg_parallel else 1), p.ulysses, p.ring
        if cfg * ulysses * ring == 1 and group > 1:
            raise UserError(f"{group} ranks per video but no strategy uses them: set --strategy or degrees")
    elif config.engine != "wanbench" and p.strategy == "auto":
        cfg, ulysses, ring = 1, group, 1  # the official and diffusers engines split a video by sequence only
    else:
        cfg, ulysses, ring = _strategy_degrees(p.strategy, group, uses_cfg, spec.num_attention_heads)
    dims = ParallelDims(world, cfg, ring, ulysses, "dit" in p.fsdp, "t5" in p.fsdp, p.dp)
    check_dims(dims, config)
    return dims


def _strategy_degrees(strategy: str, world: int, uses_cfg: bool, heads: int) -> tuple[int, int, int]:
    if world == 1 or strategy == "none":
        if world > 1:
            raise UserError(f"--strategy none runs on one rank, not {world}: drop --gpus or pick a strategy")
        return 1, 1, 1
    if strategy == "cfg":
        return 2, 1, 1
    if strategy == "ulysses":
        return 1, world, 1
    if strategy == "ring":
        return 1, 1, world
    if strategy == "hybrid":
        return 2, world // 2, 1
    # auto: CFG parallel first (one exchange per step), then Ulysses, then ring for what heads can't split.
    cfg = 2 if uses_cfg and world % 2 == 0 else 1
    sp = world // cfg
    if heads % sp == 0:
        return cfg, sp, 1
    ulysses = max(d for d in range(1, sp + 1) if sp % d == 0 and heads % d == 0)
    return cfg, ulysses, sp // ulysses


def check_dims(dims: ParallelDims, config: RunConfig) -> None:
    from wanbench.analysis.flops import video_tokens

    product = dims.dp * dims.cfg * dims.ring * dims.ulysses
    if product != dims.world:
        raise UserError(
            f"parallel degrees dp {dims.dp} x cfg {dims.cfg} x ring {dims.ring} x ulysses {dims.ulysses} = "
            f"{product}, but {dims.world} GPUs/processes: make the product equal --gpus"
        )
    if dims.cfg not in (1, 2):
        raise UserError("CFG parallel splits the two guidance branches: its degree is 1 or 2")
    if dims.cfg == 2 and not config.uses_guidance:
        raise UserError("--cfg-parallel needs classifier-free guidance: a --guidance other than 1")
    heads = config.preset.transformer.num_attention_heads
    if heads % dims.ulysses:
        raise UserError(f"--ulysses {dims.ulysses} must divide the {heads} attention heads of {config.model}")
    tokens = video_tokens(config.preset, config.width, config.height, config.frames)
    if tokens % dims.sp:
        raise UserError(
            f"sequence parallel degree {dims.sp} must divide the {tokens} video tokens of this size: "
            "pick another degree or size"
        )
    check_ulysses_exchange(config.parallel, dims)
    for flag, on in (("--attention fa4", config.attention == "fa4"), (f"--fp8 {config.fp8}", config.fp8_attention)):
        if on and not kernel_applies(config.parallel, dims):
            fix = ("ring attention runs diffusers' own kernel: use Ulysses alone (--strategy ulysses) with "
                   "--ulysses-exchange head-blocks" if dims.ring > 1 else "add --ulysses-exchange head-blocks")
            raise UserError(f"{flag} runs self-attention in wanbench's processors, but this run is "
                            f"{dims.describe()}: {fix}")
    if (dims.fsdp_dit or dims.fsdp_t5) and dims.group == 1:
        raise UserError("--fsdp shards across GPUs: use it with --gpus 2 or more (or --offload on one GPU)")
    if dims.sp > 1 and not kernel_applies(config.parallel, dims) and config.attention in ("efficient", "math"):
        raise UserError(f"--attention {config.attention} does not run under diffusers' sequence-parallel attention "
                        f"({dims.describe()}): use --attention auto, sdpa, cudnn or flash")
    if dims.sp > 1 and config.cache != "none":
        raise UserError("--cache does not combine with Ulysses/ring yet: use it on 1 GPU or with --cfg-parallel")


def kernel_applies(p: ParallelConfig, dims: ParallelDims) -> bool:
    """Whether an attention kernel outside diffusers' dispatcher (--attention fa4) computes this run's
    self-attention: not under ring attention, nor diffusers' own all-to-all Ulysses."""
    if dims.ring > 1:
        return False
    return dims.ulysses == 1 or p.ulysses_exchange != "all-to-all"


def require_plain_ulysses(what: str, dims: ParallelDims) -> None:
    """Refuse a Ulysses-only option on a run without Ulysses, or with ring attention too."""
    if dims.ulysses == 1 or dims.ring > 1:
        raise UserError(f"{what}, but this run is {dims.describe()}: use it with --ulysses 2 or more and no --ring")


ULYSSES_EXCHANGES = ("all-to-all", "head-blocks")


def check_ulysses_exchange(p: ParallelConfig, dims: ParallelDims) -> None:
    if p.ulysses_exchange not in ULYSSES_EXCHANGES:
        raise UserError(f"bad --ulysses-exchange {p.ulysses_exchange!r}: use {', '.join(ULYSSES_EXCHANGES)}")
    if p.ulysses_exchange == "all-to-all":
        return
    require_plain_ulysses(f"--ulysses-exchange {p.ulysses_exchange} changes Ulysses' exchange", dims)


def build_mesh(dims: ParallelDims, device: torch.device) -> DeviceMesh:
    return init_device_mesh(
        device.type, (dims.dp, dims.cfg, dims.ring, dims.ulysses), mesh_dim_names=("dp", "cfg", "ring", "ulysses")
    )


def replica_coordinates(mesh: DeviceMesh | None) -> tuple[int, bool]:
    """(this rank's replica index, whether it leads its replica: decodes and saves its video)."""
    if mesh is None:
        return 0, True
    lead = all(mesh.get_local_rank(name) == 0 for name in ("cfg", "ring", "ulysses"))
    return mesh.get_local_rank("dp"), lead


def context_parallelize(components, dims: ParallelDims, mesh: DeviceMesh,
                        ulysses_exchange: str = "all-to-all") -> list[str]:
    """Ulysses / ring sequence parallelism of both experts through diffusers' context parallelism; with
    ulysses_exchange "head-blocks" Ulysses' exchanges move head blocks straight into place (engine/ulysses_heads.py)."""
    if dims.sp == 1:
        return []
    from diffusers import ContextParallelConfig

    notes = []

    for expert in components.experts:
        expert.enable_parallelism(config=ContextParallelConfig(
            ring_degree=dims.ring, ulysses_degree=dims.ulysses, mesh=mesh["ring", "ulysses"]
        ))
    if ulysses_exchange == "head-blocks":
        from wanbench.engine.ulysses_heads import exchange_head_blocks

        if sum(exchange_head_blocks(expert) for expert in components.experts):
            notes.append("Ulysses exchanges head blocks straight into place (engine/ulysses_heads.py)")
    return notes


def fsdp_shard(components, dims: ParallelDims, mesh: DeviceMesh) -> None:
    """FSDP2: every DiT block then each expert root, and every T5 block then the encoder, over all ranks."""
    if not (dims.fsdp_dit or dims.fsdp_t5):
        return
    from torch.distributed.fsdp import fully_shard

    flat = mesh["cfg", "ring", "ulysses"]._flatten("fsdp")
    if dims.fsdp_dit:
        for expert in components.experts:
            for block in expert.blocks:
                fully_shard(block, mesh=flat)
            fully_shard(expert, mesh=flat)
    if dims.fsdp_t5:
        encoder = components.text_encoder
        for block in encoder.encoder.block:
            fully_shard(block, mesh=flat)
        fully_shard(encoder, mesh=flat)


@dataclass(frozen=True)
class Checked:
    """What check_runnable decided: the parallel degrees, and notes on what runs but is unofficial."""

    dims: ParallelDims
    notes: tuple[str, ...]


def check_runnable(config: RunConfig, world: int | None = None) -> Checked:
    """Every rule a run must pass, decided in one place before anything loads: the settings (config.validate), the
    parallel degrees for `world` ranks (default --gpus) and their combinations, host memory, and what the device
    must have for the kernels asked for (FP8, FlashAttention 4). The CLI and the suite runner call it before any
    worker starts; the engine calls it again in each process that opens a session (processes share no state)."""
    import warnings

    from wanbench.config import validate
    from wanbench.models.footprint import check_host_fits

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validate(config)
    check_device_needs(config)  # first: no other fix helps a device that cannot run the kernels asked for
    dims = resolve_dims(config, world or config.parallel.gpus)
    check_attention_device(config, dims)
    check_host_fits(config)
    return Checked(dims, tuple(str(w.message) for w in caught))


def check_attention_device(config: RunConfig, dims: ParallelDims) -> None:
    """Refuse a CUDA-only attention backend off CUDA (ring attention on CPU runs diffusers' flash path on a CPU
    kernel of its own: engine/attention.py)."""
    if config.attention not in ("cudnn", "flash", "efficient"):
        return
    from wanbench.launch.distributed import resolve_device

    device = resolve_device(config.device)
    if device.type != "cuda" and not (config.attention == "flash" and dims.ring > 1):
        raise UserError(f"--attention {config.attention} needs a CUDA device: use --attention sdpa on {device.type}")


def check_device_needs(config: RunConfig) -> None:
    """Refuse --fp8, --attention fa4 or --max-gpu-memory where this machine's device cannot run them (one line,
    the fix)."""
    if config.fp8 == "none" and config.attention != "fa4" and config.parallel.max_gpu_memory_gb is None:
        return
    from wanbench.launch.distributed import resolve_device

    device = resolve_device(config.device)
    if config.parallel.max_gpu_memory_gb is not None and device.type != "cuda":
        raise UserError(f"--max-gpu-memory caps a CUDA GPU's memory, and this run is on the {device.type}: drop it")
    if config.fp8 != "none":
        from wanbench.engine.fp8 import require_fp8

        require_fp8(device, config.fp8, config.dtype)
    if config.attention == "fa4":
        from wanbench.engine import flash_cute

        flash_cute.require(device)


def validate_parallel_flags(p: ParallelConfig) -> None:
    if p.gpus < 1:
        raise UserError(f"bad --gpus {p.gpus}: use 1 or more")
    if p.nnodes < 1:
        raise UserError(f"bad --nnodes {p.nnodes}: use 1 or more")
    if p.gpus % p.nnodes:
        raise UserError(f"--gpus {p.gpus} over --nnodes {p.nnodes}: --gpus counts every node's GPUs, so make it "
                        "a multiple of --nnodes (the same number on each node)")
    if not 0 <= p.node_rank < p.nnodes:
        raise UserError(f"--node-rank {p.node_rank} with --nnodes {p.nnodes}: number the nodes 0 to "
                        f"{p.nnodes - 1}")
    if not 1 <= p.master_port <= 65535:
        raise UserError(f"bad --master-port {p.master_port}: give a port from 1 to 65535 (the same on every node)")
    unknown = set(p.fsdp) - {"dit", "t5"}
    if unknown:
        raise UserError(f"bad --fsdp {','.join(sorted(unknown))}: use dit, t5 or dit,t5")
    if p.max_gpu_memory_gb is not None and not (math.isfinite(p.max_gpu_memory_gb) and p.max_gpu_memory_gb > 0):
        raise UserError(f"bad --max-gpu-memory {p.max_gpu_memory_gb}: give a positive number of GB")
    if p.offload not in ("none", "model", "group"):
        raise UserError(f"bad --offload {p.offload!r}: use none, model or group")
    if p.offload != "none" and p.gpus > 1:
        raise UserError("--offload is for one GPU; with several use --fsdp dit,t5 to cut memory per GPU")
    if p.ulysses < 1 or p.ring < 1:
        raise UserError("--ulysses and --ring are degrees of 1 or more")
