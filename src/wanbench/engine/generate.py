"""One generation, end to end, with every phase timed and its memory recorded, on 1..N ranks.

Order: load (build, offload or parallelize) -> text encode -> denoise -> VAE decode -> save.
The RunResult is filled as phases end, so a failure part-way still reports what was measured.
Under torchrun every rank runs this; rank 0 decodes (with ranks 1-2 under --vae-pipeline), saves and holds
the gathered record.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from diffusers.utils.torch_utils import randn_tensor

from wanbench.analysis.flops import run_flops, video_tokens
from wanbench.analysis.peaks import peak_tflops
from wanbench.analysis.plausibility import judge
from wanbench.config import RunConfig
from wanbench.engine.decode import decode_latents, video_to_frames
from wanbench.engine.denoise import denoise, plan_steps
from wanbench.engine.guidance import ParallelCFG, SequentialCFG
from wanbench.engine.offload import cap_device_memory
from wanbench.engine.output import save_frames
from wanbench.engine.parallel import ParallelDims, check_runnable, replica_coordinates
from wanbench.engine.prepare import prepare, sharded_modules
from wanbench.engine.text import encode_prompts
from wanbench.engine.vae_pipeline import decode_pipelined, pipeline_stages
from wanbench.errors import UserError, first_line
from wanbench.launch.distributed import DistContext, init_distributed, resolve_device, under_torchrun
from wanbench.measure.energy import EnergyCounter
from wanbench.measure.energy import combine as combine_energy
from wanbench.measure.energy import window as energy_window
from wanbench.measure.env import capture_environment
from wanbench.measure.host import peak_rss_gb, rss_gb
from wanbench.measure.timers import PhaseTimer, StepTimer, synchronize
from wanbench.models import build_components
from wanbench.models.dtypes import torch_dtype
from wanbench.result import RunResult, phase_summary

OOM_FIX = "use --offload group, --fsdp dit,t5, more --gpus or a smaller --size"


def latent_shape(config: RunConfig) -> tuple[int, int, int, int, int]:
    """[batch, channels, latent frames, latent height, latent width] of one video."""
    preset = config.preset
    return (
        1,
        preset.transformer.in_channels,
        (config.frames - 1) // preset.vae.stride_t + 1,
        config.height // preset.vae.stride_hw,
        config.width // preset.vae.stride_hw,
    )


def initial_latents(config: RunConfig, device: torch.device) -> torch.Tensor:
    """Seeded fp32 noise drawn on the CPU, so it is the same on every device and GPU count."""
    generator = torch.Generator("cpu").manual_seed(config.seed)
    return randn_tensor(latent_shape(config), generator=generator, device=device, dtype=torch.float32)


def attention_shape(config: RunConfig) -> tuple[int, int, int, int]:
    """[batch, video tokens, heads, head dim] of one self-attention call."""
    spec = config.preset.transformer
    tokens = video_tokens(config.preset, config.width, config.height, config.frames)
    return (1, tokens, spec.num_attention_heads, spec.attention_head_dim)


@dataclass
class Generation:
    """What a run produced besides its record: kept for tests and fidelity comparisons."""

    result: RunResult
    exception: BaseException | None = None
    latents: torch.Tensor | None = None
    frames: np.ndarray | None = None


def classify_failure(exc: BaseException, phase: str | None) -> tuple[str, str]:
    """(status, one-line reason) for a failed run."""
    where = f" during {phase}" if phase else ""
    if isinstance(exc, InvalidOutput):
        return "invalid", str(exc)
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return "oom", f"out of device memory{where}: {OOM_FIX}"
    if isinstance(exc, UserError):
        return "failed", str(exc)
    # Not a user error: a bug or an environment problem, so keep the traceback (stderr: the worker log).
    traceback.print_exception(exc, file=sys.stderr)
    return "failed", f"{type(exc).__name__}{where}: {first_line(exc)[:300]}"


@dataclass
class Session:
    """A loaded engine: the components on their devices, reusable for several generations."""

    config: RunConfig
    ctx: DistContext
    dims: ParallelDims
    env: dict[str, Any]
    notes: list[str]
    load_s: float = 0.0
    compile_s: float = 0.0
    load_peak_gb: float | None = None
    components: Any = None  # WanComponents, or another engine's loaded pipeline
    load_failure: tuple[str, str] | None = None
    load_exception: BaseException | None = None
    energy: EnergyCounter | None = None


def open_session(config: RunConfig, timeout_s: float = 1800.0) -> Session:
    """Check (engine/parallel.py check_runnable), join the process group if under torchrun, and load the
    components (the load phase)."""
    checked = check_runnable(config, int(os.environ["WORLD_SIZE"]) if under_torchrun() else None)
    device = resolve_device(config.device)
    if device.type == "cpu" and config.threads:
        torch.set_num_threads(config.threads)
    if under_torchrun():
        ctx = init_distributed(device, timeout_s)
    else:
        if config.parallel.gpus > 1:
            raise UserError("--gpus N > 1 runs through torchrun: use the wanbench CLI, which starts it")
        ctx = DistContext(rank=0, world_size=1, local_rank=0, device=device)
    dims = checked.dims
    notes = [*checked.notes, f"parallel: {dims.describe()} on {ctx.world_size} rank(s)"]
    session = Session(config, ctx, dims, capture_environment(), notes, energy=EnergyCounter(ctx.device))
    timer = PhaseTimer(ctx.device)
    try:
        with timer.phase("load"):
            session.components = _load(config, ctx, dims, session.notes)
        if config.compile:
            with timer.phase("compile"):
                warm_compile(config, session)
    except Exception as exc:
        session.load_failure = classify_failure(exc, "load")
        session.load_exception = exc
    session.env["engine"] = {"name": config.engine, "version": engine_version(config)}
    session.load_s = timer.seconds.get("load", 0.0)
    session.compile_s = timer.seconds.get("compile", 0.0)
    session.load_peak_gb = timer.peak_allocated_gb.get("load")
    return session


def generate(config: RunConfig, progress: bool = False, timeout_s: float = 1800.0) -> Generation:
    """Load and run one generation on this process (and, under torchrun, with the other ranks)."""
    return run_once(open_session(config, timeout_s), progress=progress)


def run_once(
    session: Session, config: RunConfig | None = None, progress: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> Generation:
    """One generation with a loaded session; `config` may change sampling settings (e.g. steps)."""
    config = config or session.config
    ctx = session.ctx
    result = RunResult(config=config.to_dict(), env=session.env, notes=list(session.notes))
    generation = Generation(result)
    timer = PhaseTimer(ctx.device)
    timer.seconds["load"] = session.load_s
    timer.seconds["compile"] = session.compile_s
    if session.load_peak_gb is not None:
        timer.peak_allocated_gb["load"] = session.load_peak_gb
    synchronize(ctx.device)
    start = time.perf_counter()
    start_mj = session.energy.read_mj() if session.energy else None
    try:
        if session.load_failure is not None:
            result.status, result.error = session.load_failure
            generation.exception = session.load_exception
        else:
            _run_phases(config, session, timer, generation, progress, on_step)
    except Exception as exc:
        result.status, result.error = classify_failure(exc, timer.current)
        generation.exception = exc
    finally:
        synchronize(ctx.device)
        generation_s = time.perf_counter() - start
        end_mj = session.energy.read_mj() if session.energy else None
        total_s = session.load_s + session.compile_s + generation_s
        result.energy = combine_energy([energy_window(start_mj, end_mj, generation_s)])
        result.phases = phase_summary(timer.seconds, result.phases.get("step_s", []), total_s)
        result.memory = _memory_block(ctx, timer)
        # Replicas (dp > 1) run different numbers of videos, so no world-wide gather: each keeps its own.
        if ctx.world_size > 1 and session.dims.dp == 1 and generation.exception is None:
            _gather_ranks(result)
        _add_flops(config, result, ctx.world_size)
    return generation


def _load(config: RunConfig, ctx: DistContext, dims: ParallelDims, notes: list[str]) -> Any:
    """The engine's loaded pipeline: wanbench's components, or another engine's (wanbench/engines)."""
    if config.engine != "wanbench":
        return engine_module(config.engine).load(config, ctx, dims, notes)
    dtype, vae_dtype = torch_dtype(config.dtype), torch_dtype(config.vae_dtype)
    p = config.parallel
    if p.max_gpu_memory_gb:  # before loading: the card it emulates has to hold the load too
        cap_device_memory(ctx.device, p.max_gpu_memory_gb)
        notes.append(f"device memory capped at {p.max_gpu_memory_gb:g} GB")
    components = build_components(
        config.preset, config.weights, ctx.device, dtype, vae_dtype, config.shift, config.seed,
        defer=sharded_modules(dims, ctx.world_size), offloaded=p.offload != "none",
    )
    notes.extend(components.notes)
    prepare(config, components, ctx, dims, dtype, attention_shape(config), notes)
    return components


def warm_compile(config: RunConfig, session: Session) -> None:
    """One forward per expert at the run's shapes, so compilation is timed apart from generation."""
    components, device = session.components, session.ctx.device
    preset, dtype = config.preset, torch_dtype(config.dtype)
    latents = initial_latents(config, device).to(dtype)
    text = torch.zeros(1, preset.text_encoder.text_len, preset.transformer.text_dim, device=device, dtype=dtype)
    timestep = torch.full((1,), 999, device=device, dtype=torch.int64)
    with torch.no_grad():
        for expert in components.experts:
            expert(hidden_states=latents, timestep=timestep, encoder_hidden_states=text, return_dict=False)


def engine_version(config: RunConfig) -> str:
    """Which version of the engine ran: wanbench's, the official code's (package or checkout), or diffusers'."""
    if config.engine == "official":
        from wanbench.engines.official_import import official_version

        return official_version(config.official_code)
    if config.engine == "diffusers":
        import diffusers

        return f"diffusers {diffusers.__version__}"
    from wanbench import __version__

    return f"wanbench {__version__}"


def engine_module(name: str) -> Any:
    """The module of an engine other than wanbench's: its load() and run_phases()."""
    if name == "official":
        from wanbench.engines import official

        return official
    from wanbench.engines import stock

    return stock


def _run_phases(
    config: RunConfig, session: Session, timer: PhaseTimer, generation: Generation, progress: bool,
    on_step: Callable[[int], None] | None,
) -> None:
    if config.engine != "wanbench":
        engine_module(config.engine).run_phases(config, session, timer, generation, progress, on_step)
        return
    preset, result, ctx, dims = config.preset, generation.result, session.ctx, session.dims
    device, components = ctx.device, session.components
    dtype = torch_dtype(config.dtype)
    use_cfg = config.uses_guidance
    with timer.phase("text_encode"):
        prompts = [config.prompt, config.negative_prompt] if use_cfg else [config.prompt]
        embeds = encode_prompts(
            components.tokenizer, components.text_encoder, prompts, preset.text_encoder.text_len, device, dtype
        )
    if dims.cfg == 2:
        predict = ParallelCFG(embeds[:1], embeds[1:2], components.mesh)  # type: ignore[attr-defined]
    else:
        predict = SequentialCFG(embeds[:1], embeds[1:2] if use_cfg else None)

    scheduler = components.scheduler
    scheduler.set_timesteps(config.steps, device=device)
    scheduler.set_begin_index(0)
    plan = plan_steps(
        scheduler.timesteps.tolist(), config.boundary, preset.two_experts, config.guidance_high,
        config.guidance_low,
    )
    result.steps = [{"index": s.index, "timestep": s.timestep, "expert": s.expert, "guidance": s.guidance,
                     "guided": s.guided} for s in plan]
    latents = initial_latents(config, device)
    step_timer = StepTimer(device)
    inject_fault(ctx.rank, config.tag)
    with timer.phase("denoise"):
        latents = denoise(
            components.experts, scheduler, latents, plan, predict, dtype, step_timer,
            progress=progress and ctx.is_main, on_step=on_step,
        )
    result.phases["step_s"] = step_timer.step_seconds()
    generation.latents = latents
    require_finite(latents, "final latents")
    _replica, lead = replica_coordinates(getattr(components, "mesh", None))
    stages = pipeline_stages(components.vae, ctx.world_size) if config.vae_pipeline and dims.dp == 1 else 1
    if not lead and ctx.rank >= stages:
        return
    with timer.phase("vae_decode"):
        video = decode_pipelined(components.vae, latents, ctx.rank, stages) if stages > 1 else decode_latents(
            components.vae, latents)
        if not lead:
            return
        require_finite(video, "decoded frames")
        frames = video_to_frames(video, preset.vae.stride_hw)
    generation.frames = frames
    with timer.phase("save"):
        inject_fault(ctx.rank, config.tag, "save")
        result.output = save_frames(frames, config.output, config.fps)


class InvalidOutput(Exception):
    """The generation produced values that are not numbers: the run is 'invalid', never 'ok'."""


def require_finite(tensor: torch.Tensor, what: str) -> None:
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise InvalidOutput(f"the {what} hold {bad} NaN or Inf value(s) of {tensor.numel()}: the run produced no "
                            "valid video (check --dtype, the guidance and the weights)")


def inject_fault(rank: int, tag: str, where: str = "denoise") -> None:
    """Fault injection for tests of failure handling: WANBENCH_FAULT=die:RANK or hang:RANK[:TAG] before the
    denoising loop, fail-save:RANK[:TAG] (an OSError) while saving."""
    fault = os.environ.get("WANBENCH_FAULT", "")
    kind, _, rest = fault.partition(":")
    target, _, only_tag = rest.partition(":")
    if not fault or target != str(rank) or (only_tag and only_tag != tag):
        return
    if kind == "fail-save" and where == "save":
        raise OSError(f"injected failure while saving on rank {rank}")
    if where != "denoise":
        return
    if kind == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "hang":
        while True:
            time.sleep(1.0)


def _memory_block(ctx: DistContext, timer: PhaseTimer) -> dict[str, Any]:
    memory: dict[str, Any] = {"host_rss_gb": rss_gb(), "host_peak_rss_gb": peak_rss_gb()}
    rank: dict[str, Any] = {"rank": ctx.rank, "host_rss_gb": memory["host_rss_gb"],
                            "host_peak_rss_gb": memory["host_peak_rss_gb"]}
    device = ctx.device
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        rank.update({
            "device": index,
            # Generation peak; the load peak is kept apart (loading holds what FSDP or offload later frees).
            "max_allocated_gb": max((v for k, v in timer.peak_allocated_gb.items() if k != "load"), default=0.0),
            "load_max_allocated_gb": timer.peak_allocated_gb.get("load"),
            "max_reserved_gb": torch.cuda.max_memory_reserved(device) / 1e9,
            "phase_peak_allocated_gb": dict(timer.peak_allocated_gb),
            "capacity_gb": torch.cuda.get_device_properties(index).total_memory / 1e9,
        })
    memory["ranks"] = [rank]
    return memory


def _gather_ranks(result: RunResult) -> None:
    """Every rank's phases and memory, into rank 0's record (ranks combined by listing, not averaging)."""
    mine = {"rank": dist.get_rank(), "phases": result.phases, "memory": result.memory["ranks"][0],
            "energy": result.energy}
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    result.memory["ranks"] = [g["memory"] for g in gathered]
    result.energy = combine_energy([g["energy"] for g in gathered])
    result.per_rank_phases = [{"rank": g["rank"], **g["phases"]} for g in gathered]


def _add_flops(config: RunConfig, result: RunResult, world: int) -> None:
    guided_steps = sum(s["guided"] for s in result.steps) if result.steps else None
    flops = run_flops(config.preset, config.width, config.height, config.frames, config.steps,
                      config.uses_guidance, guided_steps)
    result.flops = flops.to_dict()
    gpus = result.env.get("gpus") or []
    denoise_s = result.phases.get("denoise_s", 0.0)
    if not gpus or result.status != "ok" or denoise_s <= 0:
        return
    peak = peak_tflops(gpus[0]["name"])
    verdict = judge(flops.denoise, denoise_s, world, peak)
    result.mfu = {
        "denoise": verdict.mfu,
        "implied_tflops_per_gpu": verdict.implied_tflops_per_gpu,
        "peak_tflops": peak,
        "peak_source": "datasheet",
    }
    if verdict.verdict in ("impossible", "suspicious"):
        result.flags.append({
            "kind": verdict.verdict,
            "message": f"denoise time implies {verdict.implied_tflops_per_gpu:.0f} TFLOP/s per GPU "
            f"({verdict.mfu:.0%} of the {peak:.0f} TFLOP/s peak)",
        })
