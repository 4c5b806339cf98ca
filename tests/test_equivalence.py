"""wanbench's engine against stock diffusers WanPipeline: same weights, seed and settings."""

from __future__ import annotations

import numpy as np
import torch

from wanbench.config import config_for_preset
from wanbench.engine.generate import generate
from wanbench.models import build_components
from wanbench.models.components import stock_pipeline


def test_latents_and_frames_match_stock_wan_pipeline(monkeypatch):
    config = config_for_preset("tiny", steps=5, device="cpu", seed=7, prompt="a cat <b>boxing</b>")
    from wanbench.presets import get_preset

    preset = get_preset("tiny")
    components = build_components(preset, "random", torch.device("cpu"), torch.float32, torch.float32, 12.0, 0)
    # generate() must use exactly these weights.
    monkeypatch.setattr("wanbench.engine.generate.build_components", lambda *a, **k: components)
    ours = generate(config)
    assert ours.result.status == "ok", ours.result.error
    # Both experts must have been used: the boundary splits 5 steps at t >= 875.
    assert {s["expert"] for s in ours.result.steps} == {0, 1}

    pipe = stock_pipeline(components, 12.0, 0.875)
    common = dict(
        prompt=config.prompt, negative_prompt=config.negative_prompt, height=config.height, width=config.width,
        num_frames=config.frames, num_inference_steps=config.steps, guidance_scale=config.guidance_high,
        guidance_scale_2=config.guidance_low, max_sequence_length=preset.text_encoder.text_len,
    )
    stock_latents = pipe(**common, generator=torch.Generator("cpu").manual_seed(7), output_type="latent").frames
    rel = (ours.latents - stock_latents).norm() / stock_latents.norm()
    assert rel < 1e-5, f"relative latent error {rel:.2e}"

    stock_frames = pipe(**common, generator=torch.Generator("cpu").manual_seed(7), output_type="np").frames[0]
    assert ours.frames.shape == stock_frames.shape == (config.frames, config.height, config.width, 3)
    np.testing.assert_allclose(ours.frames, stock_frames, atol=1e-4)


def test_different_seed_gives_different_latents(tiny_components, monkeypatch):
    monkeypatch.setattr("wanbench.engine.generate.build_components", lambda *a, **k: tiny_components)
    a = generate(config_for_preset("tiny", steps=2, device="cpu", seed=1)).latents
    b = generate(config_for_preset("tiny", steps=2, device="cpu", seed=2)).latents
    assert (a - b).abs().max() > 1e-3


def test_single_expert_per_token_timestep_path_matches_stock(monkeypatch):
    """TI2V-5B's path (one expert, expand_timesteps, Wan2.2 VAE) on its tiny twin."""
    from wanbench.presets import get_preset

    config = config_for_preset("tiny-ti2v", steps=3, device="cpu", seed=3)
    preset = get_preset("tiny-ti2v")
    components = build_components(preset, "random", torch.device("cpu"), torch.float32, torch.float32, 5.0, 0)
    monkeypatch.setattr("wanbench.engine.generate.build_components", lambda *a, **k: components)
    ours = generate(config)
    assert ours.result.status == "ok", ours.result.error
    pipe = stock_pipeline(components, 5.0, None, expand_timesteps=preset.expand_timesteps)
    stock = pipe(prompt=config.prompt, negative_prompt=config.negative_prompt, height=config.height,
                 width=config.width, num_frames=config.frames, num_inference_steps=config.steps,
                 guidance_scale=config.guidance_high, max_sequence_length=preset.text_encoder.text_len,
                 generator=torch.Generator("cpu").manual_seed(3), output_type="latent").frames
    rel = (ours.latents - stock).norm() / stock.norm()
    assert rel < 1e-5, f"relative latent error {rel:.2e}"


def _storage_bytes(module: torch.nn.Module) -> int:
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in module.parameters()}
    return sum(storages.values())


def test_fused_projections_keep_the_function_and_hold_the_weights_once(tiny_components, expert_forward):
    """--compile's fused QKV must not change the forward, nor keep a second copy of the projections."""
    import copy

    from wanbench.engine.fusion import fuse_projections

    stock = tiny_components.transformer
    ours = copy.deepcopy(stock)
    before = _storage_bytes(ours)
    assert fuse_projections(ours) == 5 * len(stock.blocks)  # q, k, v of attn1; k, v of attn2
    assert _storage_bytes(ours) == before
    attn = ours.blocks[0].attn1
    assert attn.to_k.weight.untyped_storage().data_ptr() == attn.to_qkv.weight.untyped_storage().data_ptr()
    stock_state, our_state = stock.state_dict(), ours.state_dict()
    for name in ("blocks.0.attn1.to_k.weight", "blocks.0.attn2.to_v.bias", "blocks.1.attn2.to_q.weight"):
        assert torch.equal(our_state[name], stock_state[name]), name
    expected, got = expert_forward(stock), expert_forward(ours)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert got.abs().max() > 0
