"""--fp8 attention|all: the quantisation, custom op and processors around cuDNN's FP8 SDPA, with a reference
FP8 attention standing in for the GPU kernel on CPU, and the refusals a user can meet."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
import torch.nn.functional as F

from wanbench.cli import main
from wanbench.config import ParallelConfig, config_for_preset
from wanbench.engine import fp8_attention
from wanbench.engine.attention import FP8_KERNEL
from wanbench.engine.fp8 import require_fp8
from wanbench.engine.parallel import ParallelDims, check_dims
from wanbench.engine.wan_attention import KernelAttentionProcessor, install
from wanbench.errors import UserError


@pytest.fixture
def stand_in_kernel(monkeypatch):
    """fp8_attention.kernel replaced by what cuDNN computes: attention of the dequantised FP8 inputs, O scaled
    by scale_o and rounded to FP8. Returns the call log."""
    calls = []

    def reference(q8, k8, v8, descale_q, descale_k, descale_v, scale_o):
        calls.append((tuple(q8.shape), q8.dtype, q8.is_contiguous(), v8.is_contiguous()))
        q, k, v = ((x.float() * d.flatten()).transpose(1, 2) for x, d in ((q8, descale_q), (k8, descale_k),
                                                                         (v8, descale_v)))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        return (out * scale_o.flatten()).to(torch.float8_e4m3fn).contiguous()

    monkeypatch.setattr(fp8_attention, "kernel", reference)
    return calls


def relative_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.float() - ref.float()).norm() / ref.float().norm())


def test_per_tensor_quantisation_keeps_the_largest_value_and_a_zero_tensor_finite():
    x = torch.randn(1, 64, 4, 16) * 3
    x8, scale, descale = fp8_attention.quantise(x)
    assert x8.dtype == torch.float8_e4m3fn and scale.shape == descale.shape == (1, 1, 1, 1)
    assert float(x8.float().abs().max()) == fp8_attention.FP8_MAX  # the largest |x| maps to e4m3's maximum
    assert relative_error(x8.float() * descale, x) < 0.05
    zeros8, zero_scale, _ = fp8_attention.quantise(torch.zeros(2, 3))
    assert torch.isfinite(zero_scale).all() and not zeros8.float().any()


@pytest.mark.parametrize("compiled", [False, True])
def test_fp8_processor_computes_wans_self_attention_within_fp8_error(
        tiny_components, expert_forward, stand_in_kernel, compiled):
    stock = tiny_components.transformer
    ours = copy.deepcopy(stock)
    assert install(ours, lambda: KernelAttentionProcessor(FP8_KERNEL)) == len(stock.blocks)
    if compiled:  # fullgraph: the casts compile with the block, the kernel stays one opaque call
        torch._dynamo.reset()
        ours.compile_repeated_blocks(fullgraph=True)
    expected, got = expert_forward(stock), expert_forward(ours)
    assert torch.isfinite(got).all()
    error = relative_error(got, expected)
    assert 0 < error < 0.05, error  # approximate: not the exact result, but close to it
    heads, head_dim = stock.config.num_attention_heads, stock.config.attention_head_dim
    assert len(stand_in_kernel) == len(stock.blocks)  # self-attention only; cross-attention stays exact
    assert stand_in_kernel[0] == ((1, 3 * 4 * 6, heads, head_dim), torch.float8_e4m3fn, True, True)


@pytest.mark.parametrize("mode", ["attention", "all"])
def test_fp8_attention_is_refused_on_a_cpu_in_one_line(capsys, mode):
    assert main(["generate", "--model", "tiny", "--fp8", mode, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs an NVIDIA GPU (Hopper or newer" in err[0] and "drop --fp8" in err[0]


def test_fp8_attention_is_refused_before_hopper_without_cudnn_and_in_float32(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA L40S")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 9))
    with pytest.raises(UserError, match="Hopper or newer GPU; NVIDIA L40S is not: use --fp8 linear"):
        require_fp8(cuda, "attention")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setitem(sys.modules, "cudnn", None)
    with pytest.raises(UserError, match=r"pip install 'wanbench\[fp8-attention\]'"):
        require_fp8(cuda, "all")
    with pytest.raises(UserError, match="add --dtype bfloat16"):
        require_fp8(cuda, "attention", "float32")


@pytest.mark.parametrize(("ring", "ulysses", "exchange", "refused"), [
    (2, 1, "all-to-all", True), (1, 2, "all-to-all", True), (1, 2, "head-blocks", False)])
def test_fp8_attention_needs_wanbenchs_self_attention_processors(ring, ulysses, exchange, refused):
    p = ParallelConfig(gpus=ring * ulysses, ulysses=ulysses, ring=ring, ulysses_exchange=exchange)
    config = config_for_preset("tiny", fp8="attention", device="cuda", dtype="bfloat16", parallel=p)
    dims = ParallelDims(ring * ulysses, 1, ring, ulysses, False, False, 1)
    if refused:
        with pytest.raises(UserError, match="--fp8 attention runs self-attention in wanbench's processors"):
            check_dims(dims, config)
    else:
        check_dims(dims, config)


def test_unknown_fp8_mode_names_the_choices(capsys):
    assert main(["generate", "--model", "tiny", "--fp8", "attn", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad --fp8 'attn': use one of none, linear, attention, all" in err


def test_a_multi_gpu_run_is_refused_before_any_worker_starts(monkeypatch, capsys):
    """The device's FP8 support is checked by the launcher (engine/parallel.py check_runnable), not by each worker."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    monkeypatch.setattr("wanbench.cli.launch_generate", lambda *a: pytest.fail("workers were started"))
    flags = "--device cuda --gpus 2 --ulysses 2 --ulysses-exchange head-blocks --dtype bfloat16 --fp8 all"
    assert main(["generate", "--model", "tiny", *flags.split()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "compute capability 8.9 or newer" in err[0] and "NVIDIA A100 has 8.0" in err[0]
