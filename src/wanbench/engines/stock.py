"""The diffusers engine: stock `WanPipeline.__call__` as it ships, with the options a diffusers user has.

The modules are the diffusers classes from the same loaders as wanbench's engine (random weights, a diffusers
or an official folder), without any of wanbench's transforms. Options: `--offload model`
(`enable_model_cpu_offload`), `--offload group` (`enable_group_offload`, block level, one block per group,
on a side stream), and `--ulysses` (diffusers' own context parallelism, `enable_parallelism`; its ring needs an
attention backend that returns the log-sum-exp, which the default does not, so `--ring` is refused).
Phases are taken from outside: `encode_prompt` wrapped, a forward pre-hook on the experts for the start of
denoising, `callback_on_step_end` for each step, and the VAE's `decode` wrapped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from wanbench.config import RunConfig
from wanbench.launch.distributed import DistContext
from wanbench.measure.timers import HostSteps, PhaseTimer
from wanbench.models.dtypes import torch_dtype


def load(config: RunConfig, ctx: DistContext, dims: Any, notes: list[str]) -> Any:
    import diffusers

    from wanbench.models import build_components
    from wanbench.models.components import stock_pipeline

    p = config.parallel
    offloaded = p.offload != "none"
    components = build_components(
        config.preset, config.weights, ctx.device, torch_dtype(config.dtype), torch_dtype(config.vae_dtype),
        config.shift, config.seed, offloaded=offloaded,
    )
    notes.extend(components.notes)
    pipe = stock_pipeline(components, config.shift, config.boundary, config.preset.expand_timesteps)
    notes.append(f"engine: diffusers {diffusers.__version__} (stock WanPipeline)")
    if p.offload == "model":
        pipe.enable_model_cpu_offload(device=ctx.device)
        notes.append("diffusers: enable_model_cpu_offload")
    elif p.offload == "group":
        pipe.enable_group_offload(onload_device=ctx.device, offload_device=torch.device("cpu"),
                                  offload_type="block_level", num_blocks_per_group=1,
                                  use_stream=ctx.device.type == "cuda")
        notes.append("diffusers: enable_group_offload (block level, 1 block per group)")
    if dims.sp > 1:
        from diffusers import ContextParallelConfig

        for expert in components.experts:
            expert.enable_parallelism(config=ContextParallelConfig(ring_degree=dims.ring, ulysses_degree=dims.ulysses))
        notes.append(f"diffusers: context parallelism (ulysses {dims.ulysses}, ring {dims.ring})")
    return pipe


def run_phases(config: RunConfig, session: Any, timer: PhaseTimer, generation: Any, progress: bool,
               on_step: Callable[[int], None] | None) -> None:
    """One stock WanPipeline call with its phases timed from outside (see the module docstring)."""
    from wanbench.engine.denoise import plan_steps
    from wanbench.engine.generate import initial_latents, require_finite
    from wanbench.engine.output import save_frames

    pipe, ctx, result = session.components, session.ctx, generation.result
    device = ctx.device
    clock = HostSteps(timer)  # marked when denoising starts and at each step's end
    state: dict[str, Any] = {}
    encode, decode = pipe.encode_prompt, pipe.vae.decode

    def timed_encode(*args: Any, **kwargs: Any) -> Any:
        with timer.phase("text_encode"):
            return encode(*args, **kwargs)

    def denoise_starts(*_: Any) -> None:
        if not clock.started:
            clock.mark()

    def step_ends(_pipe: Any, index: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        clock.mark()
        state["latents"] = kwargs["latents"]
        if on_step is not None:
            on_step(index)
        return {}

    def timed_decode(*args: Any, **kwargs: Any) -> Any:
        clock.finish()
        with timer.phase("vae_decode"):
            return decode(*args, **kwargs)

    hooks = [e.register_forward_pre_hook(denoise_starts) for e in (pipe.transformer, pipe.transformer_2) if e]
    pipe.encode_prompt, pipe.vae.decode = timed_encode, timed_decode
    pipe.set_progress_bar_config(disable=not progress)
    try:
        video = pipe(
            prompt=config.prompt, negative_prompt=config.negative_prompt, height=config.height, width=config.width,
            num_frames=config.frames, num_inference_steps=config.steps, guidance_scale=config.guidance_high,
            guidance_scale_2=config.guidance_low if pipe.transformer_2 is not None else None,
            latents=initial_latents(config, device), max_sequence_length=config.preset.text_encoder.text_len,
            output_type="np", return_dict=False, callback_on_step_end=step_ends,
        )[0]
    finally:
        for hook in hooks:
            hook.remove()
        del pipe.encode_prompt, pipe.vae.decode
    # diffusers runs the unconditional branch at every step when the high-noise scale is above 1.
    guided = config.guidance_high > 1.0
    plan = plan_steps(pipe.scheduler.timesteps.tolist(), config.boundary, pipe.transformer_2 is not None,
                      config.guidance_high, config.guidance_low)
    result.steps = [{"index": s.index, "timestep": s.timestep, "expert": s.expert, "guidance": s.guidance,
                     "guided": guided} for s in plan]
    result.phases["step_s"] = clock.step_seconds()
    generation.latents = state.get("latents")
    if generation.latents is not None:
        require_finite(generation.latents, "final latents")
    if not ctx.is_main:
        return
    frames = np.asarray(video[0], dtype=np.float32)  # [F, H, W, 3] in [0, 1]
    require_finite(torch.from_numpy(frames), "decoded frames")
    generation.frames = frames
    with timer.phase("save"):
        result.output = save_frames(frames, config.output, config.fps)
