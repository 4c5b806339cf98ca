"""Load an official Wan2.2 folder and convert its state dicts to the diffusers classes on load.

Layout (T2V-A14B): high_noise_model/ and low_noise_model/ (safetensors shards + config.json),
models_t5_umt5-xxl-enc-bf16.pth, Wan2.1_VAE.pth, google/umt5-xxl/ (tokenizer).
The .pth files are read with torch.load(weights_only=True) only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from diffusers.loaders.single_file_utils import (
    convert_wan_transformer_to_diffusers,
    convert_wan_vae_to_diffusers,
)
from transformers import AutoTokenizer, UMT5EncoderModel

from wanbench.errors import UserError
from wanbench.models.checkpoint_files import load_pth, load_sharded_safetensors, require_file
from wanbench.models.components import WanComponents, make_scheduler
from wanbench.models.dtypes import cast_keeping_fp32_modules
from wanbench.models.random_init import umt5_config
from wanbench.presets import ModelPreset, TextEncoderSpec, TransformerSpec

T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
VAE_FILE = "Wan2.1_VAE.pth"
TOKENIZER_DIR = "google/umt5-xxl"

# Official T5 encoder key -> transformers UMT5EncoderModel key (per block N).
_T5_RENAMES = (
    (r"^token_embedding\.weight$", "shared.weight"),
    (r"^norm\.weight$", "encoder.final_layer_norm.weight"),
    (r"^blocks\.(\d+)\.norm1\.weight$", r"encoder.block.\1.layer.0.layer_norm.weight"),
    (r"^blocks\.(\d+)\.attn\.([qkvo])\.weight$", r"encoder.block.\1.layer.0.SelfAttention.\2.weight"),
    (
        r"^blocks\.(\d+)\.pos_embedding\.embedding\.weight$",
        r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias.weight",
    ),
    (r"^blocks\.(\d+)\.norm2\.weight$", r"encoder.block.\1.layer.1.layer_norm.weight"),
    (r"^blocks\.(\d+)\.ffn\.gate\.0\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wi_0.weight"),
    (r"^blocks\.(\d+)\.ffn\.fc1\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wi_1.weight"),
    (r"^blocks\.(\d+)\.ffn\.fc2\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wo.weight"),
)


def convert_t5_state_dict(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    converted: dict[str, torch.Tensor] = {}
    for key, value in official.items():
        for pattern, replacement in _T5_RENAMES:
            new_key, count = re.subn(pattern, replacement, key)
            if count:
                converted[new_key] = value
                break
        else:
            raise UserError(f"{T5_FILE}: unexpected tensor {key!r}; is this the official UMT5-XXL encoder file?")
    if "shared.weight" in converted:
        converted["encoder.embed_tokens.weight"] = converted["shared.weight"]
    return converted


def transformer_spec_from_official(config: dict, fallback: TransformerSpec) -> TransformerSpec:
    """The official config.json (dim, num_heads, ...) as diffusers keyword arguments."""
    try:
        heads = int(config["num_heads"])
        return TransformerSpec(
            num_attention_heads=heads,
            attention_head_dim=int(config["dim"]) // heads,
            ffn_dim=int(config["ffn_dim"]),
            num_layers=int(config["num_layers"]),
            in_channels=int(config.get("in_dim", fallback.in_channels)),
            out_channels=int(config.get("out_dim", fallback.out_channels)),
            text_dim=int(config.get("text_dim", fallback.text_dim)),
            freq_dim=int(config.get("freq_dim", fallback.freq_dim)),
            eps=float(config.get("eps", fallback.eps)),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"official config.json lacks or mangles {exc}: download it again") from None


def _load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{where}: weights do not fit the model ({first}); is --model right?") from None


def load_expert(folder: Path, fallback: TransformerSpec, device: torch.device, dtype: torch.dtype):
    config = json.loads(require_file(folder / "config.json", "expert config").read_text())
    spec = transformer_spec_from_official(config, fallback)
    state = convert_wan_transformer_to_diffusers(load_sharded_safetensors(folder))
    with init_empty_weights(include_buffers=False):
        model = WanTransformer3DModel(**spec.kwargs())
    _load_into(model, state, folder)
    return cast_keeping_fp32_modules(model, dtype).to(device).eval().requires_grad_(False)


def load_text_encoder(path: Path, spec: TextEncoderSpec, device: torch.device, dtype: torch.dtype):
    state = convert_t5_state_dict(load_pth(path / T5_FILE))
    with init_empty_weights(include_buffers=False):
        model = UMT5EncoderModel(umt5_config(spec))
    _load_into(model, state, path / T5_FILE)
    model.tie_weights()
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_vae(path: Path, preset: ModelPreset, device: torch.device, dtype: torch.dtype) -> AutoencoderKLWan:
    if preset.vae.z_dim != 16:
        raise UserError(
            f"the official Wan2.2_VAE.pth ({preset.name}) has no diffusers converter: use a diffusers folder"
        )
    state = convert_wan_vae_to_diffusers(load_pth(path / VAE_FILE))
    with init_empty_weights(include_buffers=False):
        model = AutoencoderKLWan(**preset.vae.kwargs())
    _load_into(model, state, path / VAE_FILE)
    return cast_keeping_fp32_modules(model, dtype).to(device).eval().requires_grad_(False)


def load_official(
    preset: ModelPreset, path: Path, device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype,
    shift: float, expert_device: torch.device | None = None,
) -> WanComponents:
    if not preset.two_experts:
        raise UserError(f"official-layout loading covers T2V-A14B; for {preset.name} use a diffusers folder")
    for name in ("high_noise_model", "low_noise_model"):
        if not (path / name).is_dir():
            raise UserError(f"missing folder {path / name}: copy the complete official checkpoint")
    require_file(path / TOKENIZER_DIR / "tokenizer_config.json", "UMT5 tokenizer")
    expert_device = expert_device or device
    return WanComponents(
        tokenizer=AutoTokenizer.from_pretrained(str(path / TOKENIZER_DIR)),
        text_encoder=load_text_encoder(path, preset.text_encoder, device, dtype),
        transformer=load_expert(path / "high_noise_model", preset.transformer, expert_device, dtype),
        transformer_2=load_expert(path / "low_noise_model", preset.transformer, expert_device, dtype),
        vae=load_vae(path, preset, device, vae_dtype),
        scheduler=make_scheduler(shift),
        weights=f"official:{path}",
    )
