"""The FLOP model and plausibility verdicts against hand calculations."""

from __future__ import annotations

import pytest

from wanbench.analysis.flops import dit_forward_flops, run_flops, video_tokens
from wanbench.analysis.peaks import peak_tflops
from wanbench.analysis.plausibility import judge
from wanbench.presets import get_preset

A14B = get_preset("a14b")


def test_a14b_480p_token_count():
    # 81 frames -> 21 latent frames; 480x832 -> 60x104 latents -> 30x52 patches.
    assert video_tokens(A14B, 832, 480, 81) == 21 * 30 * 52 == 32760
    assert video_tokens(A14B, 480, 832, 81) == 32760


def test_a14b_forward_flops_by_hand():
    L, T, d, f, n = 32760, 512, 5120, 13824, 40
    linear_blocks = n * (12 * L * d * d + 4 * T * d * d + 4 * L * d * f)
    attention = n * (4 * L * L * d + 4 * L * T * d)
    extra = 2 * L * 64 * d * 2 + 2 * T * (4096 * d + d * d)  # patch in/out (16 ch x 1x2x2), text proj
    flops = dit_forward_flops(A14B, L)
    assert flops.linear == linear_blocks + extra
    assert flops.attention == attention
    # ~1.68e15 per forward, as the reference page's analytic count.
    assert flops.total == pytest.approx(1.68e15, rel=0.02)


def test_cfg_doubles_and_steps_multiply():
    with_cfg = run_flops(A14B, 832, 480, 81, steps=10, cfg=True)
    without = run_flops(A14B, 832, 480, 81, steps=10, cfg=False)
    assert with_cfg.per_step == 2 * with_cfg.forward
    assert with_cfg.denoise == 10 * with_cfg.per_step == 2 * without.denoise


def test_seed_report_single_gpu_10_steps_is_impossible():
    # The seed report: 9.57 s for 10 steps on one RTX 5090 (209.5 TFLOP/s dense bf16 datasheet).
    flops = run_flops(A14B, 480, 832, 81, steps=10, cfg=True).denoise
    verdict = judge(flops, 9.57, 1, peak_tflops("NVIDIA GeForce RTX 5090"))
    assert verdict.verdict == "impossible"
    assert verdict.implied_tflops_per_gpu == pytest.approx(flops / 9.57 / 1e12)
    assert verdict.mfu > 10


@pytest.mark.parametrize(("mfu", "expected"), [(0.5, "plausible"), (0.85, "plausible"), (0.86, "suspicious"),
                                               (1.0, "suspicious"), (1.01, "impossible")])
def test_verdict_thresholds(mfu, expected):
    peak = 1000.0
    assert judge(mfu * peak * 1e12, 1.0, 1, peak).verdict == expected


def test_peak_table_matches_specific_names_first():
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert peak_tflops("NVIDIA H200") == 989.4
    assert peak_tflops("Mystery GPU") is None
