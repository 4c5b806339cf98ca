"""What a model's weights take in memory, counted on the meta device, and the refusal of a run the host cannot hold.

A14B on a CPU-only machine would otherwise start building 69 GB of weights and grow towards the machine's memory
with no word; the count uses the real classes, so it is exact for the weights (activations come on top).
"""

from __future__ import annotations

import functools

import torch

from wanbench.config import RunConfig
from wanbench.errors import UserError
from wanbench.models.dtypes import torch_dtype
from wanbench.presets import ModelPreset


@functools.cache
def parameter_counts(preset: ModelPreset) -> dict[str, int]:
    """Parameters of each module of `preset` (experts, text encoder, VAE), built on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    from wanbench.models.random_init import umt5_config

    with init_empty_weights(include_buffers=True):
        expert = WanTransformer3DModel(**preset.transformer.kwargs())
        encoder = UMT5EncoderModel(umt5_config(preset.text_encoder))
        vae = AutoencoderKLWan(**preset.vae.kwargs())

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    return {"experts": count(expert) * (2 if preset.two_experts else 1), "text_encoder": count(encoder),
            "vae": count(vae)}


def weights_gb(config: RunConfig) -> float:
    """GB (10^9 bytes) that one copy of the run's weights takes in its dtypes."""
    counts = parameter_counts(config.preset)
    size = torch.tensor([], dtype=torch_dtype(config.dtype)).element_size()
    vae_size = torch.tensor([], dtype=torch_dtype(config.vae_dtype)).element_size()
    return ((counts["experts"] + counts["text_encoder"]) * size + counts["vae"] * vae_size) / 1e9


def runs_on_cpu(config: RunConfig) -> bool:
    return config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())


def check_host_fits(config: RunConfig) -> None:
    """On a CPU run, refuse up front a model whose weights alone exceed the machine's memory."""
    if not runs_on_cpu(config) or config.model.startswith("tiny"):
        return
    import psutil

    copies = 1 if config.parallel.fsdp else config.parallel.gpus  # every CPU process holds its own copy
    need = weights_gb(config) * copies
    have = psutil.virtual_memory().total / 1e9
    if need > have:
        where = "the run is on the CPU (--device cpu)" if config.device == "cpu" else "no CUDA GPU"
        raise UserError(
            f"{config.model} needs at least {need:.0f} GB of memory for its weights"
            + (f" ({copies} processes with a copy each)" if copies > 1 else "")
            + f", but this machine has {have:.0f} GB and {where}: run the tiny preset here (--model tiny, or "
            "model = \"tiny\" in a suite: the same pipeline with tiny dimensions), or run on a GPU machine"
        )
