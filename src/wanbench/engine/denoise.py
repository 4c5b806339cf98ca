"""The denoising loop: expert switch at the boundary, guidance per expert, per-step device timing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from wanbench.config import guided
from wanbench.measure.timers import StepTimer

Predictor = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class StepPlan:
    index: int
    timestep: int
    expert: int  # 0 = high-noise (transformer), 1 = low-noise (transformer_2)
    guidance: float
    guided: bool  # whether the unconditional branch runs (config.guided)


def plan_steps(
    timesteps: list[int], boundary: float | None, two_experts: bool, guidance_high: float, guidance_low: float,
    num_train_timesteps: int = 1000,
) -> list[StepPlan]:
    """Which expert and guidance each step uses: high-noise while t >= boundary * 1000 (as WanPipeline); each
    expert's own scale decides whether its steps are guided (as the official code)."""
    plan = []
    boundary_t = None if boundary is None or not two_experts else boundary * num_train_timesteps
    for index, t in enumerate(timesteps):
        high = boundary_t is None or t >= boundary_t
        scale = guidance_high if high else guidance_low
        plan.append(StepPlan(index, int(t), 0 if high else 1, scale, guided(scale)))
    return plan


@torch.no_grad()
def denoise(
    experts: list[torch.nn.Module], scheduler, latents: torch.Tensor, plan: list[StepPlan], predict: Predictor,
    model_dtype: torch.dtype, timer: StepTimer, progress: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Run every step of `plan`; latents stay fp32 between steps as in WanPipeline."""
    device_timesteps = scheduler.timesteps
    timer.mark()
    for step in tqdm(plan, desc="denoise", unit="step", disable=not progress, leave=False):
        t = device_timesteps[step.index]
        # One timestep per video, also for TI2V-5B: in text-to-video every token's timestep is t, so
        # WanPipeline's per-token path (expand_timesteps) computes the same embedding once per token.
        timestep = t.expand(latents.shape[0])
        noise = predict(experts[step.expert], latents.to(model_dtype), timestep, step.guidance)
        latents = scheduler.step(noise, t, latents, return_dict=False)[0]
        timer.mark()
        if on_step is not None:
            on_step(step.index)
    return latents
