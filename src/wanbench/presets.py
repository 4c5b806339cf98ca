"""Model presets: frozen dataclasses of the official Wan2.2 architectures and sampling defaults.

a14b and ti2v-5b are the published models; tiny and tiny-ti2v are the same classes with tiny dimensions, for tests
and CPUs. Every other module reads a preset through `get_preset`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from wanbench.errors import UserError


@dataclass(frozen=True)
class TransformerSpec:
    """Keyword arguments of diffusers' WanTransformer3DModel."""

    num_attention_heads: int
    attention_head_dim: int
    ffn_dim: int
    num_layers: int
    in_channels: int = 16
    out_channels: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    cross_attn_norm: bool = True
    qk_norm: str = "rms_norm_across_heads"
    eps: float = 1e-6
    rope_max_seq_len: int = 1024

    @property
    def dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TextEncoderSpec:
    """Keyword arguments of transformers' UMT5Config (encoder only)."""

    vocab_size: int = 256384
    d_model: int = 4096
    d_kv: int = 64
    d_ff: int = 10240
    num_layers: int = 24
    num_heads: int = 64
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    feed_forward_proj: str = "gated-gelu"
    dense_act_fn: str = "gelu_new"
    text_len: int = 512

    def config_kwargs(self) -> dict[str, Any]:
        kwargs = dataclasses.asdict(self)
        kwargs.pop("text_len")
        return kwargs


@dataclass(frozen=True)
class VaeSpec:
    """Keyword arguments of diffusers' AutoencoderKLWan (unset fields keep the class defaults)."""

    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    extra: tuple[tuple[str, Any], ...] = ()
    stride_t: int = 4
    stride_hw: int = 8

    def kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "base_dim": self.base_dim,
            "z_dim": self.z_dim,
            "dim_mult": list(self.dim_mult),
            "num_res_blocks": self.num_res_blocks,
            "temperal_downsample": list(self.temperal_downsample),
        }
        kwargs.update(dict(self.extra))
        if self.z_dim != 16 and "latents_mean" not in kwargs:
            # Random-weight builds of a z_dim != 16 VAE use unit statistics; a checkpoint brings its own.
            kwargs["latents_mean"] = [0.0] * self.z_dim
            kwargs["latents_std"] = [1.0] * self.z_dim
        return kwargs


@dataclass(frozen=True)
class SamplingDefaults:
    steps: int
    shift: float
    guidance_high: float
    guidance_low: float
    boundary: float | None  # fraction of 1000 train steps; None = one expert
    frames: int
    fps: int
    size: str  # "W*H" as in the official generate.py
    sizes: tuple[str, ...]  # the official sizes; others run with a warning


@dataclass(frozen=True)
class ModelPreset:
    name: str
    description: str
    transformer: TransformerSpec
    two_experts: bool
    text_encoder: TextEncoderSpec
    vae: VaeSpec
    sampling: SamplingDefaults
    # TI2V-5B's native per-token timesteps (WanPipeline expand_timesteps); in text-to-video all tokens share
    # one timestep, so the engine embeds it once per video (same result, tested against the stock path).
    expand_timesteps: bool = False

    @property
    def size_multiple(self) -> int:
        return self.vae.stride_hw * self.transformer.patch_size[1]


A14B = ModelPreset(
    name="a14b",
    description="Wan2.2 T2V-A14B: two 14B DiT experts (high/low noise), UMT5-XXL, Wan2.1 VAE",
    transformer=TransformerSpec(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40),
    two_experts=True,
    text_encoder=TextEncoderSpec(),
    vae=VaeSpec(),
    sampling=SamplingDefaults(
        steps=40, shift=12.0, guidance_high=4.0, guidance_low=3.0, boundary=0.875, frames=81, fps=16,
        size="1280*720", sizes=("480*832", "832*480", "720*1280", "1280*720"),
    ),
)

TI2V_5B = ModelPreset(
    name="ti2v-5b",
    description="Wan2.2 TI2V-5B: one 5B DiT, UMT5-XXL, Wan2.2 VAE (4x16x16), text-to-video mode",
    transformer=TransformerSpec(
        num_attention_heads=24, attention_head_dim=128, ffn_dim=14336, num_layers=30, in_channels=48,
        out_channels=48,
    ),
    two_experts=False,
    text_encoder=TextEncoderSpec(),
    vae=VaeSpec(
        base_dim=160, z_dim=48, stride_hw=16,
        extra=(
            ("decoder_base_dim", 256), ("is_residual", True), ("in_channels", 12), ("out_channels", 12),
            ("patch_size", 2), ("scale_factor_spatial", 16), ("scale_factor_temporal", 4),
        ),
    ),
    sampling=SamplingDefaults(
        steps=50, shift=5.0, guidance_high=5.0, guidance_low=5.0, boundary=None, frames=121, fps=24,
        size="1280*704", sizes=("1280*704", "704*1280"),
    ),
    expand_timesteps=True,
)

TINY = ModelPreset(
    name="tiny",
    description="the A14B pipeline and classes with tiny dimensions and random weights, for tests and CPU",
    transformer=TransformerSpec(
        num_attention_heads=4, attention_head_dim=16, ffn_dim=128, num_layers=2, text_dim=32, freq_dim=32,
    ),
    two_experts=True,
    text_encoder=TextEncoderSpec(
        vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, text_len=32,
    ),
    vae=VaeSpec(base_dim=4),
    sampling=SamplingDefaults(
        steps=4, shift=12.0, guidance_high=4.0, guidance_low=3.0, boundary=0.875, frames=9, fps=16,
        size="96*64", sizes=("96*64", "64*96"),
    ),
)

TINY_TI2V = ModelPreset(
    name="tiny-ti2v",
    description="the TI2V-5B pipeline (one expert, per-token timesteps, Wan2.2 VAE) with tiny dimensions",
    transformer=TransformerSpec(
        num_attention_heads=4, attention_head_dim=16, ffn_dim=128, num_layers=2, text_dim=32, freq_dim=32,
        in_channels=48, out_channels=48,
    ),
    two_experts=False,
    text_encoder=TINY.text_encoder,
    vae=VaeSpec(base_dim=8, z_dim=48, stride_hw=16, extra=(
        ("decoder_base_dim", 8), ("is_residual", True), ("in_channels", 12), ("out_channels", 12),
        ("patch_size", 2), ("scale_factor_spatial", 16), ("scale_factor_temporal", 4))),
    sampling=SamplingDefaults(
        steps=4, shift=5.0, guidance_high=5.0, guidance_low=5.0, boundary=None, frames=9, fps=24,
        size="64*64", sizes=("64*64",),
    ),
    expand_timesteps=True,
)

PRESETS: dict[str, ModelPreset] = {p.name: p for p in (A14B, TI2V_5B, TINY, TINY_TI2V)}


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(f"unknown model preset {name!r}: choose one of {', '.join(PRESETS)}") from None
