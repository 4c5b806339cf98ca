"""The set of modules one generation needs, and the single entry point that builds it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel

from wanbench.errors import UserError
from wanbench.presets import ModelPreset


@dataclass
class WanComponents:
    tokenizer: Any
    text_encoder: torch.nn.Module
    transformer: WanTransformer3DModel  # high-noise expert (the only one for single-expert models)
    transformer_2: WanTransformer3DModel | None  # low-noise expert
    vae: AutoencoderKLWan
    scheduler: UniPCMultistepScheduler
    weights: str  # "random", "diffusers:<path>" or "official:<path>"
    notes: list[str] = field(default_factory=list)
    # Modules left on the meta device (random weights under FSDP), filled once sharded: see engine/prepare.py.
    unfilled: tuple[str, ...] = ()

    @property
    def experts(self) -> list[WanTransformer3DModel]:
        return [m for m in (self.transformer, self.transformer_2) if m is not None]


def make_scheduler(shift: float) -> UniPCMultistepScheduler:
    """Flow-matching UniPC as in the Wan2.2 diffusers checkpoints, with the run's shift."""
    return UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=shift,
        solver_order=2, solver_type="bh2", lower_order_final=True, final_sigmas_type="zero",
        timestep_spacing="linspace", predict_x0=True,
    )


def detect_layout(path: Path) -> str:
    """'diffusers' or 'official', from the files the folder holds."""
    if not path.is_dir():
        raise UserError(f"--weights {path}: no such folder; give 'random' or a Wan2.2 checkpoint folder")
    if (path / "model_index.json").is_file():
        return "diffusers"
    if (path / "high_noise_model").is_dir() or (path / "low_noise_model").is_dir():
        return "official"
    if list(path.glob("diffusion_pytorch_model*.safetensors")) and (path / "Wan2.2_VAE.pth").exists():
        return "official"
    raise UserError(
        f"--weights {path}: neither a diffusers folder (model_index.json) nor an official Wan2.2 folder "
        "(high_noise_model/, low_noise_model/); point it at the checkpoint's top folder"
    )


def build_components(
    preset: ModelPreset, weights: str, device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype,
    shift: float, seed: int = 0, defer: frozenset[str] = frozenset(), offloaded: bool = False,
) -> WanComponents:
    """Build every module on `device`: the one place that knows about weight sources.

    `defer` names the experts FSDP will shard, so that no GPU holds one whole: random weights leave them
    on the meta device until then; checkpoint weights are loaded into host memory, and FSDP2's
    fully_shard moves them to the GPU block by block as it shards them. `offloaded`: every module is
    built in host memory, where --offload keeps it (a GPU smaller than the model could not load it first).
    """
    host = torch.device("cpu")
    if weights == "random":
        from wanbench.models.random_init import build_random

        return build_random(preset, device, dtype, vae_dtype, shift, seed, defer, host if offloaded else None)
    path = Path(weights).expanduser()
    layout = detect_layout(path)
    expert_device = host if defer or offloaded else device
    device = host if offloaded else device
    if layout == "diffusers":
        from wanbench.models.diffusers_dir import load_diffusers

        return load_diffusers(preset, path, device, dtype, vae_dtype, shift, expert_device)
    from wanbench.models.official import load_official

    return load_official(preset, path, device, dtype, vae_dtype, shift, expert_device)


def stock_pipeline(components: WanComponents, shift: float, boundary: float | None, expand_timesteps: bool = False):
    """Stock diffusers WanPipeline around the same modules: the baseline that tests and benchmarks compare to."""
    from diffusers import WanPipeline

    return WanPipeline(
        tokenizer=components.tokenizer, text_encoder=components.text_encoder, vae=components.vae,
        scheduler=make_scheduler(shift), transformer=components.transformer,
        transformer_2=components.transformer_2, boundary_ratio=boundary if components.transformer_2 else None,
        expand_timesteps=expand_timesteps,
    )
