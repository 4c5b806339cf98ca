"""The VAE decode split across ranks as a layer pipeline over time chunks (--vae-pipeline).

The Wan decoder runs one latent frame (chunk) at a time and every causal convolution keeps a cache of
its own previous chunk, so splitting the frames or the image across GPUs changes the result. Splitting
the layers does not: stage 0 runs conv_in, the mid block and the first up blocks on chunk t while
stage 1 runs the next up block on chunk t-1, and so on, each stage with its own caches; the last stage
returns the video to rank 0. The same function as one-rank decode.

Where to cut: an up block's cost grows with its resolution. For the a14b VAE at 480*832 (channels x
pixels x frames per chunk) the mid block with up block 0 is ~0.3 units, up block 1 ~1.2, up blocks 2 and
3 ~2.4 each. Cutting in the middle would leave stage 1 with ~4.8 of 6.1 units. So the later stages take one
up block each and the first stage the rest: 2 stages ~3.7 | 2.4, 3 stages ~1.4 | 2.4 | 2.4 units; more stages
would not shorten the longest. Sends are non-blocking with at most two in flight, so a stage is not held by the
next one's receive.
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


MAX_STAGES = 3
IN_FLIGHT = 2  # sends a stage may have outstanding: bounds the chunks held for a slower next stage


def pipeline_stages(vae: AutoencoderKLWan, ranks: int) -> int:
    return max(1, min(ranks, MAX_STAGES, len(vae.decoder.up_blocks)))


def stage_bounds(n_blocks: int, n_stages: int) -> list[tuple[int, int]]:
    """Up-block range [start, end) of each stage: one block for each later stage, the rest on the first."""
    cut = n_blocks - (n_stages - 1)
    return [(0, cut)] + [(i, i + 1) for i in range(cut, n_blocks)]


def stage_decoder(decoder: torch.nn.Module, stage: int, n_stages: int) -> torch.nn.Module:
    """A view of the decoder (shared weights) that runs only this stage's layers."""
    view = copy.copy(decoder)
    view._modules = dict(decoder._modules)
    start, end = stage_bounds(len(decoder.up_blocks), n_stages)[stage]
    view.up_blocks = torch.nn.ModuleList(decoder.up_blocks[start:end])
    if stage > 0:
        view.conv_in, view.mid_block = _PassThrough(), _PassThrough()
    if stage < n_stages - 1:
        view.norm_out, view.nonlinearity, view.conv_out = _PassThrough(), _PassThrough(), _PassThrough()
    return view


class _Sender:
    """Non-blocking sends of (shape, tensor) to one rank, at most IN_FLIGHT outstanding."""

    def __init__(self, dst: int) -> None:
        self.dst, self.pending = dst, []

    def send(self, tensor: torch.Tensor) -> None:
        tensor = tensor.contiguous()
        shape = torch.tensor(tensor.shape, dtype=torch.int64, device=tensor.device)
        self.pending.append((shape, tensor, [dist.isend(shape, self.dst), dist.isend(tensor, self.dst)]))
        if len(self.pending) > IN_FLIGHT:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        for work in self.pending.pop(0)[2]:
            work.wait()

    def flush(self) -> None:
        while self.pending:
            self._wait_oldest()


def _recv(src: int, ndim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    shape = torch.empty(ndim, dtype=torch.int64, device=device)
    dist.recv(shape, src)
    tensor = torch.empty(tuple(shape.tolist()), dtype=dtype, device=device)
    dist.recv(tensor, src)
    return tensor


@torch.no_grad()
def decode_pipelined(vae: AutoencoderKLWan, latents: torch.Tensor, rank: int, n_stages: int) -> torch.Tensor | None:
    """Ranks 0 .. n_stages-1 call this; rank 0 gets the video [B, C, F, H, W] in [-1, 1], the others None."""
    device, dtype = next(vae.parameters()).device, vae.dtype
    decoder = stage_decoder(vae.decoder, rank, n_stages)
    caches: list = [None] * vae._cached_conv_counts["decoder"]
    frames, last = latents.shape[2], n_stages - 1
    if rank == 0:
        x = vae.post_quant_conv(normalised_to_vae_input(vae, latents))
        inputs = (x[:, :, i:i + 1] for i in range(frames))
    else:
        inputs = (_recv(rank - 1, 5, dtype, device) for _ in range(frames))
    sender, outputs = (_Sender(rank + 1) if rank < last else None), []
    for i, chunk in enumerate(inputs):
        out = decoder(chunk, feat_cache=caches, feat_idx=[0], first_chunk=i == 0)
        if sender is not None:
            sender.send(out)
        else:
            outputs.append(out)
    if sender is not None:
        sender.flush()
    if rank == last:
        video = torch.cat(outputs, 2)
        if vae.config.patch_size is not None:
            video = unpatchify(video, patch_size=vae.config.patch_size)
        video = torch.clamp(video, min=-1.0, max=1.0)
        if last == 0:
            return video
        final = _Sender(0)
        final.send(video)
        final.flush()
    return _recv(last, 5, dtype, device) if rank == 0 else None
