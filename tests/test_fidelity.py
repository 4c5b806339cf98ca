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


def test_fp8_is_refused_on_a_cpu_in_one_line_before_loading(capsys):
    from wanbench.cli import main

    for device in (["--device", "cpu"], []):  # asked for, and the CPU an auto device resolves to here
        assert main(["generate", "--model", "tiny", "--fp8", "linear", *device]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--fp8 linear needs an NVIDIA GPU (FP8 tensor cores" in err[0]
        assert "drop --fp8" in err[0]


def test_fp8_is_refused_before_hopper_and_without_torchao(monkeypatch):
    import sys

    from wanbench.engine.fp8 import require_fp8

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    with pytest.raises(UserError, match=r"compute capability 8\.9 or newer.*A100 has 8\.0"):
        require_fp8(torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    with pytest.raises(UserError, match=r"pip install 'wanbench\[fp8\]'"):
        require_fp8(torch.device("cuda", 0))


def test_fp8_keeps_the_state_dict_names_so_checkpoints_still_load(tiny_components, monkeypatch):
    pytest.importorskip("torchao")
    import copy

    from wanbench.engine.fp8 import quantize_blocks

    # torchao refuses to quantise without an FP8 GPU; the conversion itself is what is tested here
    monkeypatch.setattr("torchao.quantization.quant_api._check_hardware_support", lambda *a, **k: None)
    expert = copy.deepcopy(tiny_components.experts[0]).to(torch.bfloat16)
    before = {k: v.shape for k, v in expert.state_dict().items()}
    count = quantize_blocks(expert)
    after = expert.state_dict()
    assert count > 0 and list(after) == list(before)
    assert all(after[k].shape == shape for k, shape in before.items())
    quantized = [n for n, m in expert.named_modules()
                 if isinstance(m, torch.nn.Linear) and type(m.weight).__name__ == "Float8Tensor"]
    assert len(quantized) == count and all(n.startswith("blocks.") for n in quantized)
