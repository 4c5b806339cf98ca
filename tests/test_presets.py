"""Every preset builds its real diffusers / transformers classes (on the meta device: no memory)."""

from __future__ import annotations

import pytest
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import UMT5EncoderModel

from wanbench.config import config_for_preset
from wanbench.models.random_init import umt5_config
from wanbench.presets import PRESETS, get_preset


def billions(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e9


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_classes_build(name):
    preset = get_preset(name)
    with init_empty_weights():
        expert = WanTransformer3DModel(**preset.transformer.kwargs())
        vae = AutoencoderKLWan(**preset.vae.kwargs())
        encoder = UMT5EncoderModel(umt5_config(preset.text_encoder))
    assert expert.config.num_layers == preset.transformer.num_layers
    assert vae.config.z_dim == preset.transformer.in_channels
    if name == "a14b":
        assert billions(expert) == pytest.approx(14.29, abs=0.01)  # per expert, as the official model card
        embedding = encoder.shared.weight.numel() / 1e9
        assert embedding == pytest.approx(256384 * 4096 / 1e9)
        assert billions(encoder) - embedding == pytest.approx(5.68, abs=0.02)  # UMT5-XXL encoder layers
    if name == "ti2v-5b":
        assert billions(expert) == pytest.approx(5.0, abs=0.1)


def test_official_sampling_defaults():
    a14b = config_for_preset("a14b")
    assert (a14b.steps, a14b.shift, a14b.guidance_high, a14b.guidance_low, a14b.boundary) == (40, 12.0, 4.0, 3.0, 0.875)
    assert (a14b.frames, a14b.fps, a14b.size) == (81, 16, "1280*720")
    ti2v = config_for_preset("ti2v-5b")
    assert (ti2v.steps, ti2v.frames, ti2v.fps, ti2v.boundary, ti2v.size) == (50, 121, 24, None, "1280*704")
