"""--attention fa4: the processors and custom op around FlashAttention 4's kernel, with a reference attention
standing in for the GPU kernel on CPU, and the refusals a user can meet."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from wanbench.cli import main
from wanbench.config import ParallelConfig
from wanbench.engine import flash_cute
from wanbench.engine.attention import resolve_backend
from wanbench.engine.parallel import ParallelDims, kernel_applies
from wanbench.engine.wan_attention import KernelAttentionProcessor, install
from wanbench.errors import UserError


@pytest.fixture
def stand_in_kernel(monkeypatch):
    """flash_cute.kernel replaced by softmax attention of [B, S, H, D] tensors; returns the call log."""
    calls = []

    def reference(q, k, v):
        calls.append(tuple(q.shape))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2).contiguous()

    monkeypatch.setattr(flash_cute, "kernel", reference)
    return calls


@pytest.mark.parametrize("compiled", [False, True])
def test_kernel_processor_computes_wans_self_attention(tiny_components, expert_forward, stand_in_kernel, compiled):
    stock = tiny_components.transformer
    ours = copy.deepcopy(stock)
    assert install(ours, lambda: KernelAttentionProcessor("fa4")) == len(stock.blocks)
    if compiled:  # fullgraph: the custom op must trace as one opaque call, with the right output shape
        torch._dynamo.reset()
        ours.compile_repeated_blocks(fullgraph=True)
    expected, got = expert_forward(stock), expert_forward(ours)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    heads = stock.config.num_attention_heads
    assert len(stand_in_kernel) == len(stock.blocks)  # self-attention only; cross-attention keeps the backend
    assert stand_in_kernel[0] == (1, 3 * 4 * 6, heads, stock.config.attention_head_dim)  # conftest's 3x8x12 latents


def test_the_kernel_follows_when_a_ulysses_processor_replaces_it(tiny_components):
    from wanbench.engine.ulysses_heads import HeadBlockUlyssesProcessor

    expert = copy.deepcopy(tiny_components.transformer)
    install(expert, lambda: KernelAttentionProcessor("fa4"))
    install(expert, HeadBlockUlyssesProcessor)
    assert {block.attn1.processor.kernel for block in expert.blocks} == {"fa4"}
    assert all(isinstance(block.attn1.processor, HeadBlockUlyssesProcessor) for block in expert.blocks)


def test_fa4_is_refused_where_it_cannot_run():
    with pytest.raises(UserError, match="needs a CUDA GPU, not cpu"):
        resolve_backend("fa4", torch.device("cpu"))
    assert resolve_backend("auto", torch.device("cpu")).kernel is None


@pytest.mark.parametrize(("ring", "ulysses", "exchange", "applies"), [
    (1, 1, "all-to-all", True),  # one GPU or CFG parallel: wanbench's processor runs self-attention
    (1, 2, "all-to-all", False),  # diffusers' Ulysses attends through its dispatcher
    (1, 2, "head-blocks", True),
    (2, 1, "all-to-all", False),  # ring merges partial results through diffusers' forward ops
])
def test_where_a_self_attention_kernel_applies(ring, ulysses, exchange, applies):
    p = ParallelConfig(gpus=ring * ulysses, ulysses=ulysses, ring=ring, ulysses_exchange=exchange)
    dims = ParallelDims(ring * ulysses, 1, ring, ulysses, False, False, 1)
    assert kernel_applies(p, dims) == applies


@pytest.mark.parametrize(("flags", "message"), [
    ("--device cpu", "--attention fa4 is a GPU kernel"),
    ("--gpus 2 --ring 2 --dtype bfloat16", "ring attention runs diffusers' own kernel: use Ulysses alone"),
    ("--gpus 2 --ulysses 2 --dtype bfloat16", "ulysses 2: add --ulysses-exchange head-blocks"),
])
def test_fa4_refusals_are_one_line_and_exit_2(capsys, monkeypatch, flags, message):
    if "--gpus" in flags:  # the parallel rules, as on a GPU that runs FA4 (the device is checked first)
        monkeypatch.setattr("wanbench.engine.parallel.check_device_needs", lambda config: None)
    assert main(["generate", "--model", "tiny", "--steps", "2", "--attention", "fa4", *flags.split()]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_a_broken_install_is_named_in_one_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name.startswith("flash_attn"):
            raise ImportError("libcute_dsl_runtime.so: cannot open shared object file\nsecond line")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing_import)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    reason = flash_cute.unavailable_reason(torch.device("cuda"))
    assert "\n" not in reason and "libcute_dsl_runtime.so" in reason and "pip install flash-attn-4" in reason


@pytest.mark.parametrize(("ring", "ulysses", "expected"), [
    (1, 1, (1, 32760, 40, 128)),
    (1, 2, (1, 32760, 20, 128)),  # a Ulysses rank attends every token with its share of the heads
    (1, 8, (1, 32760, 5, 128)),
    (2, 1, None),  # ring keeps its LSE-returning backend: nothing to time
])
def test_auto_times_the_attention_one_rank_computes(ring, ulysses, expected):
    from wanbench.engine.prepare import rank_attention_shape

    dims = ParallelDims(ring * ulysses, 1, ring, ulysses, False, False, 1)
    assert rank_attention_shape((1, 32760, 40, 128), dims) == expected
