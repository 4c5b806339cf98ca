"""Writers of tiny checkpoints in the diffusers and the official Wan2.2 layouts (test fixtures).

The official key names are produced by inverting diffusers' converters; `official_*` functions are
checked by round-tripping through those converters, so a wrong inverse fails its own test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from wanbench.models.components import WanComponents, stock_pipeline

_TRANSFORMER_INVERSE = (
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn2", "cross_attn"),
    ("attn1", "self_attn"),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    ("proj_out", "head.head"),
)


def official_transformer_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        new = key
        for ours, theirs in _TRANSFORMER_INVERSE:
            new = new.replace(ours, theirs)
        new = re.sub(r"\.norm([23])\.", lambda m: ".norm" + {"2": "3", "3": "2"}[m.group(1)] + ".", new)
        new = "head.modulation" if new == "scale_shift_table" else new.replace("scale_shift_table", "modulation")
        out[new] = value.clone()
    return out


_RESNET = {"norm1.gamma": "residual.0.gamma", "conv1": "residual.2", "norm2.gamma": "residual.3.gamma",
           "conv2": "residual.6", "conv_shortcut": "shortcut"}


def _resnet_part(rest: str) -> str:
    for ours, theirs in _RESNET.items():
        if rest == ours or rest.startswith(ours + "."):
            return theirs + rest[len(ours):]
    return rest


def official_vae_key(key: str) -> str:
    fixed = {"quant_conv": "conv1", "post_quant_conv": "conv2", "encoder.conv_in": "encoder.conv1",
             "decoder.conv_in": "decoder.conv1", "encoder.norm_out": "encoder.head.0",
             "encoder.conv_out": "encoder.head.2", "decoder.norm_out": "decoder.head.0",
             "decoder.conv_out": "decoder.head.2"}
    for ours, theirs in fixed.items():
        if key.startswith(ours + "."):
            return theirs + key[len(ours):]
    m = re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.*)", key)
    if m:
        return f"{m[1]}.middle.{2 * int(m[2])}.{_resnet_part(m[3])}"
    m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key)
    if m:
        return f"{m[1]}.middle.1.{m[2]}"
    m = re.match(r"encoder\.down_blocks\.(\d+)\.(.*)", key)
    if m:
        return f"encoder.downsamples.{m[1]}.{_resnet_part(m[2])}"
    m = re.match(r"decoder\.up_blocks\.(\d)\.resnets\.(\d)\.(.*)", key)
    if m:
        return f"decoder.upsamples.{4 * int(m[1]) + int(m[2])}.{_resnet_part(m[3])}"
    m = re.match(r"decoder\.up_blocks\.(\d)\.upsamplers\.0\.(.*)", key)
    if m:
        return f"decoder.upsamples.{4 * int(m[1]) + 3}.{m[2]}"
    return key


def official_vae_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {official_vae_key(k): v.clone() for k, v in state.items()}


_T5_INVERSE = (
    (r"^shared\.weight$", "token_embedding.weight"),
    (r"^encoder\.final_layer_norm\.weight$", "norm.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.0\.layer_norm\.weight$", r"blocks.\1.norm1.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.([qkvo])\.weight$", r"blocks.\1.attn.\2.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.weight$",
     r"blocks.\1.pos_embedding.embedding.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.1\.layer_norm\.weight$", r"blocks.\1.norm2.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.weight$", r"blocks.\1.ffn.gate.0.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_1\.weight$", r"blocks.\1.ffn.fc1.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.weight$", r"blocks.\1.ffn.fc2.weight"),
)


def official_t5_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key == "encoder.embed_tokens.weight":
            continue  # tied to shared.weight; the official file holds it once
        for pattern, replacement in _T5_INVERSE:
            new, count = re.subn(pattern, replacement, key)
            if count:
                out[new] = value.clone()
                break
        else:
            raise AssertionError(f"no official name for {key}")
    return out


def write_diffusers_folder(components: WanComponents, path: Path) -> Path:
    pipe = stock_pipeline(components, 12.0, 0.875)
    pipe.save_pretrained(str(path), safe_serialization=True)
    return path


def write_official_folder(components: WanComponents, path: Path, shards: int = 2, text_len: int = 32) -> Path:
    """The official layout; config.json's text_len is the tiny preset's, as WanModel pads the text to it."""
    for name, model in (("high_noise_model", components.transformer), ("low_noise_model", components.transformer_2)):
        folder = path / name
        folder.mkdir(parents=True)
        cfg = model.config
        (folder / "config.json").write_text(json.dumps({
            "_class_name": "WanModel", "model_type": "t2v", "dim": cfg.num_attention_heads * cfg.attention_head_dim,
            "num_heads": cfg.num_attention_heads, "ffn_dim": cfg.ffn_dim, "num_layers": cfg.num_layers,
            "in_dim": cfg.in_channels, "out_dim": cfg.out_channels, "freq_dim": cfg.freq_dim,
            "text_dim": cfg.text_dim, "eps": cfg.eps, "text_len": text_len,
        }))
        state = official_transformer_state(model.state_dict())
        keys = sorted(state)
        weight_map = {}
        for i in range(shards):
            part = keys[i::shards]
            fname = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
            save_file({k: state[k].contiguous() for k in part}, str(folder / fname))
            weight_map.update(dict.fromkeys(part, fname))
        (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map})
        )
    torch.save(official_t5_state(components.text_encoder.state_dict()), path / "models_t5_umt5-xxl-enc-bf16.pth")
    torch.save(official_vae_state(components.vae.state_dict()), path / "Wan2.1_VAE.pth")
    components.tokenizer.save_pretrained(str(path / "google" / "umt5-xxl"))
    return path
