"""--fp8 attention|all: the quantisation, custom op and processors around cuDNN's FP8 SDPA, with a reference
FP8 attention standing in for the GPU kernel on CPU; every FP8 mode under CFG parallel and Ulysses on two
processes; and the refusals a user can meet."""

from __future__ import annotations

import copy
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fp8_stand_in import reference_fp8_sdpa, subprocess_env
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
    """fp8_attention.kernel replaced by what cuDNN computes (tests/fp8_stand_in.py). Returns the call log."""
    calls = []
    monkeypatch.setattr(fp8_attention, "kernel", functools.partial(reference_fp8_sdpa, calls=calls))
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


@pytest.mark.parametrize(("flags", "message"), [
    # on a CPU the device is what no other change fixes, so it is named first
    ("--gpus 2 --ring 2 --fp8 all", "needs an NVIDIA GPU"),
    ("--gpus 2 --fsdp dit --fp8 all", "--fp8 all with --fsdp dit is not supported"),
])
def test_fp8_refusals_name_the_mode_given_and_the_fix(capsys, flags, message):
    assert main(["generate", "--model", "tiny", "--dtype", "bfloat16", *flags.split()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and ("drop" in err[0] or "use" in err[0])


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


def fp8_run(tmp_path: Path, name: str, flags: str, stand_in: bool = True) -> tuple[torch.Tensor, dict]:
    """One tiny generation through the CLI, every process of it running --fp8 on the CPU through the stand-ins."""
    latents, record = tmp_path / f"{name}.safetensors", tmp_path / f"{name}.json"
    proc = subprocess.run(
        [sys.executable, "-m", "wanbench.cli", "generate", "--model", "tiny", "--steps", "3", "--dtype", "bfloat16",
         *flags.split(), "--save-latents", str(latents), "--json", str(record)],
        capture_output=True, text=True, timeout=300, env=subprocess_env() if stand_in else None)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return load_file(latents)["latents"], json.loads(record.read_text())


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """Exact, --fp8 linear and --fp8 all latents of one process."""
    tmp = tmp_path_factory.mktemp("fp8-one-process")
    return {mode: fp8_run(tmp, mode, f"--fp8 {mode}", stand_in=mode != "none")[0]
            for mode in ("none", "linear", "all")}


@pytest.mark.parametrize(("mode", "flags", "same_as_one_process"), [
    ("all", "--gpus 2 --cfg-parallel", True),  # each rank one guidance branch: the same tensors, the same scales
    ("linear", "--gpus 2 --ulysses 2", False),
    ("all", "--gpus 2 --ulysses 2 --ulysses-exchange head-blocks", False),  # a rank's heads get their own scale
])
def test_fp8_modes_run_under_cfg_parallel_and_ulysses(one_process, tmp_path, mode, flags, same_as_one_process):
    latents, record = fp8_run(tmp_path, "run", f"--fp8 {mode} {flags}")
    exact, alone = one_process["none"], one_process[mode]
    assert record["config"]["fp8"] == mode and len(record["memory"]["ranks"]) == 2
    assert any(n.startswith("APPROXIMATE: ") and "linear layers in FP8" in n for n in record["notes"])
    assert any("cudnn-fp8" in n for n in record["notes"]) == (mode == "all")
    error = relative_error(latents, exact)
    assert 1e-4 < error < 0.05, error  # approximate, and about as far from exact as one process is
    assert error < 2 * relative_error(alone, exact) + 1e-3
    assert relative_error(latents, alone) < (1e-5 if same_as_one_process else 0.05)
