"""The real architecture with random weights, filled directly on the target device.

Timings with these weights are those of trained weights; the video is noise. Experts and the text
encoder are built on the meta device and filled with seeded values (models/seeded_init.py), so they
never exist in fp32; under --fsdp dit the experts are never whole on one GPU, and under --offload no
module is ever whole on it (values are drawn there one parameter at a time and kept in host memory).
"""

from __future__ import annotations

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from wanbench.models.components import WanComponents, make_scheduler
from wanbench.models.dtypes import cast_keeping_fp32_modules
from wanbench.models.seeded_init import fill_
from wanbench.models.tokenizer import byte_tokenizer
from wanbench.presets import ModelPreset, TextEncoderSpec


def build_transformer(preset: ModelPreset, device: torch.device, dtype: torch.dtype, seed: int = 0,
                      name: str = "transformer", materialise: bool = True,
                      home: torch.device | None = None) -> WanTransformer3DModel:
    """One expert with seeded weights drawn on `device` and kept on `home` (default `device`);
    `materialise=False` leaves it on the meta device for FSDP to fill."""
    with init_empty_weights():
        model = WanTransformer3DModel(**preset.transformer.kwargs())
    model = cast_keeping_fp32_modules(model, dtype).eval().requires_grad_(False)
    return fill_(model, home or device, seed, name, draw_device=device) if materialise else model


def umt5_config(spec: TextEncoderSpec) -> UMT5Config:
    return UMT5Config(**spec.config_kwargs(), is_encoder_decoder=False, use_cache=False)


def build_text_encoder(spec: TextEncoderSpec, device: torch.device, dtype: torch.dtype,
                       seed: int = 0, home: torch.device | None = None) -> UMT5EncoderModel:
    with init_empty_weights():
        model = UMT5EncoderModel(umt5_config(spec))
    model.tie_weights()  # the embedding tie is lost on the meta device; fill_ keeps tied parameters tied
    model = model.to(dtype).eval().requires_grad_(False)
    return fill_(model, home or device, seed, "text_encoder", draw_device=device)


def build_vae(preset: ModelPreset, device: torch.device, dtype: torch.dtype) -> AutoencoderKLWan:
    with torch.device(device):
        model = AutoencoderKLWan(**preset.vae.kwargs())
    return cast_keeping_fp32_modules(model, dtype).eval().requires_grad_(False)


def build_random(
    preset: ModelPreset, device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype, shift: float,
    seed: int, defer: frozenset[str] = frozenset(), home: torch.device | None = None,
) -> WanComponents:
    """All components, their random values drawn on `device` and kept on `home` (default `device`; the
    CPU when offloading). Experts named in `defer` ("transformer", "transformer_2") stay on the meta device
    and are listed in `components.unfilled`, for FSDP to shard before they are filled. The text encoder
    is always built whole: its tied embedding does not survive to_empty, and at 11 GB it fits while the
    experts are still empty."""
    home = home or device
    torch.manual_seed(seed)
    transformer = build_transformer(preset, device, dtype, seed, "transformer", "transformer" not in defer, home)
    transformer_2 = build_transformer(preset, device, dtype, seed, "transformer_2",
                                      "transformer_2" not in defer, home) if preset.two_experts else None
    components = WanComponents(
        tokenizer=byte_tokenizer(),
        text_encoder=build_text_encoder(preset.text_encoder, device, dtype, seed, home),
        transformer=transformer,
        transformer_2=transformer_2,
        vae=build_vae(preset, device, vae_dtype).to(home),  # 0.5 GB, drawn where a resident build draws it
        scheduler=make_scheduler(shift),
        weights="random",
        notes=["random weights: timings are those of trained weights, the video is noise"],
    )
    components.unfilled = tuple(n for n in ("transformer", "transformer_2")
                                if n in defer and getattr(components, n) is not None)
    return components
