"""VAE decode and post-processing to frames, as WanPipeline does."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKLWan
from diffusers.video_processor import VideoProcessor


def normalised_to_vae_input(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """Undo the latents' normalisation (as WanPipeline), on the VAE's device and in its dtype."""
    latents = latents.to(next(vae.parameters()).device, dtype=vae.dtype)
    z_dim = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z_dim, 1, 1, 1).to(latents.device, latents.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z_dim, 1, 1, 1).to(latents.device, latents.dtype)
    return latents / inv_std + mean


@torch.no_grad()
def decode_latents(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """Latents (fp32, normalised) -> video tensor [B, C, F, H, W] in [-1, 1]."""
    return vae.decode(normalised_to_vae_input(vae, latents), return_dict=False)[0]


def video_to_frames(video: torch.Tensor, vae_scale_factor: int) -> np.ndarray:
    """[F, H, W, 3] float32 in [0, 1] of the first video: the array every output file is made from."""
    frames = VideoProcessor(vae_scale_factor=vae_scale_factor).postprocess_video(video, output_type="np")
    return np.asarray(frames[0], dtype=np.float32)
