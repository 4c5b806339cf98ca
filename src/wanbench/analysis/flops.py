"""Analytic FLOP model of a Wan 2.2 generation (multiply-add = 2 FLOPs).

Per DiT forward of one expert at batch 1, with L video tokens, T text tokens, width d, FFN width f,
n blocks (formula also in README "FLOP model"):
  self-attention projections  8 L d^2      (Q, K, V, O)
  cross-attention projections 4 L d^2 + 4 T d^2   (Q, O on video; K, V on text)
  feed-forward                4 L d f
  self-attention              4 L^2 d      (QK^T and AV)
  cross-attention             4 L T d
summed over n blocks, plus patch embedding 2 L (c p_t p_h p_w) d, output projection of the same
size, and the text projection 2 T (t_dim d + d^2). Classifier-free guidance doubles the forwards.
UMT5 encoder per layer and sequence of T tokens: 8 T d_m (h d_kv) + 6 T d_m d_ff + 4 T^2 (h d_kv).
"""

from __future__ import annotations

from dataclasses import dataclass

from wanbench.presets import ModelPreset


def video_tokens(preset: ModelPreset, width: int, height: int, frames: int) -> int:
    p_t, p_h, p_w = preset.transformer.patch_size
    latent_frames = (frames - 1) // preset.vae.stride_t + 1
    latent_h, latent_w = height // preset.vae.stride_hw, width // preset.vae.stride_hw
    return (latent_frames // p_t) * (latent_h // p_h) * (latent_w // p_w)


@dataclass(frozen=True)
class ForwardFlops:
    linear: float
    attention: float

    @property
    def total(self) -> float:
        return self.linear + self.attention


def dit_forward_flops(preset: ModelPreset, tokens: int, text_tokens: int | None = None) -> ForwardFlops:
    spec = preset.transformer
    length, d, f, n = tokens, spec.dim, spec.ffn_dim, spec.num_layers
    text = preset.text_encoder.text_len if text_tokens is None else text_tokens
    per_block_linear = 8 * length * d * d + 4 * length * d * d + 4 * text * d * d + 4 * length * d * f
    per_block_attention = 4 * length * length * d + 4 * length * text * d
    patch = 2 * length * spec.in_channels * spec.patch_size[0] * spec.patch_size[1] * spec.patch_size[2] * d
    out = 2 * length * d * spec.out_channels * spec.patch_size[0] * spec.patch_size[1] * spec.patch_size[2]
    text_proj = 2 * text * (spec.text_dim * d + d * d)
    return ForwardFlops(
        linear=float(n * per_block_linear + patch + out + text_proj),
        attention=float(n * per_block_attention),
    )


def text_encoder_flops(preset: ModelPreset, sequences: int) -> float:
    t5 = preset.text_encoder
    length, inner = t5.text_len, t5.num_heads * t5.d_kv
    per_layer = 8 * length * t5.d_model * inner + 6 * length * t5.d_model * t5.d_ff + 4 * length * length * inner
    return float(sequences * t5.num_layers * per_layer)


@dataclass(frozen=True)
class RunFlops:
    tokens: int
    forward: float
    forward_linear: float
    forward_attention: float
    forwards_per_step: float  # 2 where every step is guided, 1 where none is
    per_step: float
    denoise: float
    text_encode: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def run_flops(preset: ModelPreset, width: int, height: int, frames: int, steps: int, cfg: bool,
              guided_steps: int | None = None) -> RunFlops:
    """FLOPs of a generation; `guided_steps` (steps that run both branches) defaults to all steps if `cfg`."""
    tokens = video_tokens(preset, width, height, frames)
    forward = dit_forward_flops(preset, tokens)
    guided_steps = (steps if cfg else 0) if guided_steps is None else guided_steps
    forwards = steps + guided_steps
    return RunFlops(
        tokens=tokens,
        forward=forward.total,
        forward_linear=forward.linear,
        forward_attention=forward.attention,
        forwards_per_step=forwards / steps if steps else 0.0,
        per_step=forwards / steps * forward.total if steps else 0.0,
        denoise=forwards * forward.total,
        text_encode=text_encoder_flops(preset, 2 if guided_steps else 1),
    )
