"""Noise prediction with classifier-free guidance for one expert and one step.

The single-process predictor runs the conditional and unconditional forwards one after the other
(or, with --cfg-batch, as one batch of two); parallel strategies (engine/parallel.py) substitute their
own predictor with the same call.
"""

from __future__ import annotations

import torch

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


class BatchedCFG:
    """cond and uncond as one batch of two: one forward per step (and, under Ulysses, one set of
    all-to-alls) instead of two. Same math; matmul kernels may round differently at twice the rows."""

    def __init__(self, cond: torch.Tensor, uncond: torch.Tensor) -> None:
        self.embeds = torch.cat([cond, uncond])

    def __call__(
        self, model: torch.nn.Module, latent_input: torch.Tensor, timestep: torch.Tensor, guidance: float
    ) -> torch.Tensor:
        both = model(hidden_states=torch.cat([latent_input, latent_input]), timestep=timestep.repeat(2),
                     encoder_hidden_states=self.embeds, return_dict=False)[0]
        noise, noise_uncond = both.chunk(2)
        return combine(noise, noise_uncond, guidance) if guided(guidance) else noise


def combine(noise: torch.Tensor, noise_uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance as WanPipeline combines the branches (in the model's dtype)."""
    return noise_uncond + guidance * (noise - noise_uncond)


def branch(model: torch.nn.Module, name: str, latent_input: torch.Tensor, timestep: torch.Tensor,
           embeds: torch.Tensor) -> torch.Tensor:
    """One guidance branch; the named cache context keeps step-cache state per branch (as WanPipeline)."""
    with model.cache_context(name):
        return model(hidden_states=latent_input, timestep=timestep, encoder_hidden_states=embeds,
                     return_dict=False)[0]
