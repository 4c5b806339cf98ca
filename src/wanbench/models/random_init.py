"""The real architecture with random weights, built directly on the target device.

Timings with these weights are those of trained weights; the video is noise.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from wanbench.config import ModelPreset, TextEncoderSpec
from wanbench.models.components import WanComponents, make_scheduler
from wanbench.models.dtypes import cast_keeping_fp32_modules
from wanbench.models.tokenizer import byte_tokenizer


def build_transformer(preset: ModelPreset, device: torch.device, dtype: torch.dtype) -> WanTransformer3DModel:
    # Built in fp32 on the device (as from_pretrained's math sees it), then cast like from_pretrained.
    with torch.device(device):
        model = WanTransformer3DModel(**preset.transformer.kwargs())
    return cast_keeping_fp32_modules(model, dtype).eval().requires_grad_(False)


def umt5_config(spec: TextEncoderSpec) -> UMT5Config:
    return UMT5Config(**spec.config_kwargs(), is_encoder_decoder=False, use_cache=False)


def build_text_encoder(spec: TextEncoderSpec, device: torch.device, dtype: torch.dtype) -> UMT5EncoderModel:
    with torch.device(device):
        model = UMT5EncoderModel(umt5_config(spec))
    return model.to(dtype).eval().requires_grad_(False)


def build_vae(preset: ModelPreset, device: torch.device, dtype: torch.dtype) -> AutoencoderKLWan:
    with torch.device(device):
        model = AutoencoderKLWan(**preset.vae.kwargs())
    return cast_keeping_fp32_modules(model, dtype).eval().requires_grad_(False)


def build_random(
    preset: ModelPreset, device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype, shift: float,
    seed: int,
) -> WanComponents:
    torch.manual_seed(seed)
    transformer = build_transformer(preset, device, dtype)
    transformer_2 = build_transformer(preset, device, dtype) if preset.two_experts else None
    return WanComponents(
        tokenizer=byte_tokenizer(),
        text_encoder=build_text_encoder(preset.text_encoder, device, dtype),
        transformer=transformer,
        transformer_2=transformer_2,
        vae=build_vae(preset, device, vae_dtype),
        scheduler=make_scheduler(shift),
        weights="random",
        notes=["random weights: timings are those of trained weights, the video is noise"],
    )
