"""Load a diffusers-layout Wan2.2 folder (model_index.json, transformer/, transformer_2/, ...)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import AutoTokenizer, UMT5EncoderModel

from wanbench.errors import UserError
from wanbench.models.checkpoint_files import require_file, shard_files
from wanbench.models.components import WanComponents, make_scheduler
from wanbench.presets import ModelPreset


def _check_folder(path: Path, subfolder: str) -> Path:
    folder = path / subfolder
    require_file(folder / "config.json", f"{subfolder} config")
    shard_files(folder)  # a missing, truncated or corrupt shard fails here with a clear line
    return folder


def _load(cls, path: Path, subfolder: str, device: torch.device, dtype: torch.dtype):
    _check_folder(path, subfolder)
    try:
        model = cls.from_pretrained(str(path), subfolder=subfolder, torch_dtype=dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot load {path / subfolder} ({exc}): check that the folder is complete") from None
    return model.to(device).eval().requires_grad_(False)


def load_diffusers(
    preset: ModelPreset, path: Path, device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype,
    shift: float, expert_device: torch.device | None = None,
) -> WanComponents:
    index = json.loads(require_file(path / "model_index.json", "pipeline index").read_text())
    has_second = bool(index.get("transformer_2")) and index["transformer_2"][0] is not None
    if preset.two_experts != has_second:
        raise UserError(
            f"--weights {path} holds {'two experts' if has_second else 'one expert'} but --model "
            f"{preset.name} expects {'two' if preset.two_experts else 'one'}: pick the matching --model"
        )
    require_file(path / "tokenizer" / "tokenizer_config.json", "tokenizer")
    expert_device = expert_device or device
    transformer = _load(WanTransformer3DModel, path, "transformer", expert_device, dtype)
    transformer_2 = _load(WanTransformer3DModel, path, "transformer_2", expert_device, dtype) if has_second else None
    text_encoder = _load(UMT5EncoderModel, path, "text_encoder", device, dtype)
    return WanComponents(
        tokenizer=AutoTokenizer.from_pretrained(str(path / "tokenizer")),
        text_encoder=text_encoder,
        transformer=transformer,
        transformer_2=transformer_2,
        vae=_load(AutoencoderKLWan, path, "vae", device, vae_dtype),
        scheduler=make_scheduler(shift),
        weights=f"diffusers:{path}",
    )
