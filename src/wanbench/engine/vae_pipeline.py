"""The VAE decode split across two ranks as a layer pipeline over time chunks (--vae-pipeline).

The Wan decoder runs one latent frame (chunk) at a time and every causal convolution keeps a cache of
its own previous chunk, so splitting the frames or the image across GPUs changes the result. Splitting
the layers does not: rank 0 runs conv_in, the mid block and the first half of the up blocks on chunk t
while rank 1 runs the rest on chunk t-1, each with its own caches. The same function as one-rank
decode, about twice as fast once the pipeline is full. Rank 1 returns the video to rank 0.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

from wanbench.engine.decode import normalised_to_vae_input


class _PassThrough(torch.nn.Module):
    """Stands in for a decoder part another rank runs (ignores cache arguments)."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return x


def stage_decoder(decoder: torch.nn.Module, stage: int) -> torch.nn.Module:
    """A view of the decoder (shared weights) that runs only this stage's layers."""
    view = copy.copy(decoder)
    view._modules = dict(decoder._modules)
    half = len(decoder.up_blocks) // 2
    if stage == 0:
        view.up_blocks = torch.nn.ModuleList(decoder.up_blocks[:half])
        view.norm_out, view.nonlinearity, view.conv_out = _PassThrough(), _PassThrough(), _PassThrough()
    else:
        view.conv_in, view.mid_block = _PassThrough(), _PassThrough()
        view.up_blocks = torch.nn.ModuleList(decoder.up_blocks[half:])
    return view


def _send(tensor: torch.Tensor, dst: int) -> None:
    dist.send(torch.tensor(tensor.shape, dtype=torch.int64, device=tensor.device), dst)
    dist.send(tensor.contiguous(), dst)


def _recv(src: int, ndim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    shape = torch.empty(ndim, dtype=torch.int64, device=device)
    dist.recv(shape, src)
    tensor = torch.empty(tuple(shape.tolist()), dtype=dtype, device=device)
    dist.recv(tensor, src)
    return tensor


@torch.no_grad()
def decode_pipelined(vae: AutoencoderKLWan, latents: torch.Tensor, rank: int) -> torch.Tensor | None:
    """Ranks 0 and 1 call this; rank 0 gets the video [B, C, F, H, W] in [-1, 1], rank 1 None."""
    device, dtype = next(vae.parameters()).device, vae.dtype
    decoder = stage_decoder(vae.decoder, rank)
    caches: list = [None] * vae._cached_conv_counts["decoder"]
    frames = latents.shape[2]
    if rank == 0:
        x = vae.post_quant_conv(normalised_to_vae_input(vae, latents))
        for i in range(frames):
            _send(decoder(x[:, :, i:i + 1], feat_cache=caches, feat_idx=[0], first_chunk=i == 0), 1)
        return _recv(1, 5, dtype, device)
    chunks = [decoder(_recv(0, 5, dtype, device), feat_cache=caches, feat_idx=[0], first_chunk=i == 0)
              for i in range(frames)]
    out = torch.cat(chunks, 2)
    if vae.config.patch_size is not None:
        out = unpatchify(out, patch_size=vae.config.patch_size)
    _send(torch.clamp(out, min=-1.0, max=1.0), 0)
    return None
