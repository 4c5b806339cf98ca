"""Noise prediction with classifier-free guidance for one expert and one step.

The single-process predictor runs the conditional and unconditional forwards one after the other;
parallel strategies (engine/parallel.py) substitute their own predictor with the same call.
"""

from __future__ import annotations

import torch


class SequentialCFG:
    """cond then uncond on this rank, combined as WanPipeline does (in the model's dtype)."""

    def __init__(self, cond: torch.Tensor, uncond: torch.Tensor | None) -> None:
        self.cond = cond
        self.uncond = uncond

    def __call__(
        self, model: torch.nn.Module, latent_input: torch.Tensor, timestep: torch.Tensor, guidance: float
    ) -> torch.Tensor:
        noise = branch(model, "cond", latent_input, timestep, self.cond)
        if self.uncond is None:
            return noise
        noise_uncond = branch(model, "uncond", latent_input, timestep, self.uncond)
        return noise_uncond + guidance * (noise - noise_uncond)


def branch(model: torch.nn.Module, name: str, latent_input: torch.Tensor, timestep: torch.Tensor,
           embeds: torch.Tensor) -> torch.Tensor:
    """One guidance branch; the named cache context keeps step-cache state per branch (as WanPipeline)."""
    with model.cache_context(name):
        return model(hidden_states=latent_input, timestep=timestep, encoder_hidden_states=embeds,
                     return_dict=False)[0]
