"""Approximate modes are opt-in, labelled, and measured against the exact path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wanbench.analysis.fidelity import psnr, relative_error
from wanbench.config import config_for_preset
from wanbench.engine.generate import generate
from wanbench.errors import UserError


def test_fidelity_measures_by_hand():
    exact = np.zeros((2, 4, 4, 3))
    approx = exact + 0.1
    assert psnr(approx, exact) == pytest.approx(10 * math.log10(1 / 0.01))
    assert psnr(exact, exact) == math.inf
    assert relative_error(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 0.0])) == pytest.approx(4 / 3)


def test_first_block_cache_is_approximate_and_says_so(tiny_components, monkeypatch):
    monkeypatch.setattr("wanbench.engine.generate.build_components", lambda *a, **k: tiny_components)
    exact = generate(config_for_preset("tiny", steps=6, device="cpu"))
    cached = generate(config_for_preset("tiny", steps=6, device="cpu", cache="fbc:0.5"))
    for expert in tiny_components.experts:
        expert.disable_cache()
    assert any(n.startswith("APPROXIMATE") for n in cached.result.notes)
    assert not any(n.startswith("APPROXIMATE") for n in exact.result.notes)
    err = relative_error(cached.latents, exact.latents)
    assert 0 < err < 0.5
    assert psnr(cached.frames, exact.frames) > 10


@pytest.mark.parametrize("spec", ["fbc", "fbc:-1", "mag:0.1"])
def test_bad_cache_spec_is_refused(spec):
    from wanbench.config import validate

    with pytest.raises(UserError, match="--cache"):
        validate(config_for_preset("tiny", cache=spec))


def test_fp8_linear_is_close_but_not_exact(tmp_path):
    from safetensors.torch import load_file

    from wanbench.cli import main

    exact, fp8 = tmp_path / "exact.safetensors", tmp_path / "fp8.safetensors"
    base = ["generate", "--model", "tiny", "--steps", "3", "--device", "cpu", "--dtype", "bfloat16"]
    assert main([*base, "--save-latents", str(exact)]) == 0
    assert main([*base, "--fp8", "linear", "--save-latents", str(fp8), "--json", str(tmp_path / "r.json")]) == 0
    err = relative_error(load_file(fp8)["latents"], load_file(exact)["latents"])
    assert 0 < err < 0.2
    import json

    assert any("FP8" in n for n in json.loads((tmp_path / "r.json").read_text())["notes"])
