"""Prompt encoding exactly as diffusers' WanPipeline does it, both prompts in one batch."""

from __future__ import annotations

import torch
from diffusers.pipelines.wan.pipeline_wan import prompt_clean


@torch.no_grad()
def encode_prompts(
    tokenizer, text_encoder: torch.nn.Module, prompts: list[str], max_length: int, device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """[len(prompts), max_length, d] embeddings, zero past each prompt's length (as WanPipeline)."""
    inputs = tokenizer(
        [prompt_clean(p) for p in prompts], padding="max_length", max_length=max_length, truncation=True,
        add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
    )
    encoder_device = next(text_encoder.parameters()).device
    mask = inputs.attention_mask
    hidden = text_encoder(inputs.input_ids.to(encoder_device), mask.to(encoder_device)).last_hidden_state
    hidden = hidden.to(device=device, dtype=dtype)
    return hidden * mask.to(device=device, dtype=hidden.dtype).unsqueeze(-1)
