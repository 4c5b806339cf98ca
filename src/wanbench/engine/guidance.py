"""Noise prediction with classifier-free guidance for one expert and one step: the predictors side by side.

SequentialCFG runs the conditional and unconditional forwards one after the other on this rank; ParallelCFG (CFG
parallel) runs one branch on each of two ranks and exchanges the prediction once per step. Both skip the
unconditional branch's effect at a guidance scale of 1 (config.guided) and combine the branches as WanPipeline does.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh

from wanbench.config import guided


class SequentialCFG:
    """cond then uncond on this rank, combined as WanPipeline does (in the model's dtype)."""

    def __init__(self, cond: torch.Tensor, uncond: torch.Tensor | None) -> None:
        self.cond = cond
        self.uncond = uncond

    def __call__(
        self, model: torch.nn.Module, latent_input: torch.Tensor, timestep: torch.Tensor, guidance: float
    ) -> torch.Tensor:
        noise = branch(model, "cond", latent_input, timestep, self.cond)
        if self.uncond is None or not guided(guidance):
            return noise
        noise_uncond = branch(model, "uncond", latent_input, timestep, self.uncond)
        return combine(noise, noise_uncond, guidance)


class ParallelCFG:
    """CFG across two ranks: each runs one branch, then one all-gather of the prediction per step."""

    def __init__(self, cond: torch.Tensor, uncond: torch.Tensor, mesh: DeviceMesh) -> None:
        self.group = mesh.get_group("cfg")
        self.cfg_rank = mesh.get_local_rank("cfg")
        self.embeds = cond if self.cfg_rank == 0 else uncond

    def __call__(
        self, model: torch.nn.Module, latent_input: torch.Tensor, timestep: torch.Tensor, guidance: float
    ) -> torch.Tensor:
        name = "cond" if self.cfg_rank == 0 else "uncond"
        local = branch(model, name, latent_input, timestep, self.embeds).contiguous()
        both = torch.empty((2, *local.shape), dtype=local.dtype, device=local.device)
        dist.all_gather_into_tensor(both, local.unsqueeze(0), group=self.group)
        # Unguided steps (scale 1) still run both ranks; both keep cfg rank 0's conditional prediction.
        return combine(both[0], both[1], guidance) if guided(guidance) else both[0]


def combine(noise: torch.Tensor, noise_uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance as WanPipeline combines the branches (in the model's dtype)."""
    return noise_uncond + guidance * (noise - noise_uncond)


def branch(model: torch.nn.Module, name: str, latent_input: torch.Tensor, timestep: torch.Tensor,
           embeds: torch.Tensor) -> torch.Tensor:
    """One guidance branch; the named cache context keeps step-cache state per branch (as WanPipeline)."""
    with model.cache_context(name):
        return model(hidden_states=latent_input, timestep=timestep, encoder_hidden_states=embeds,
                     return_dict=False)[0]
