"""The generate and env verbs as a user meets them."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from wanbench.cli import build_parser, main
from wanbench.result import PHASES


def test_generate_writes_a_playable_video_and_phases_that_add_up(tmp_path):
    video, record = tmp_path / "out.mp4", tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "wanbench.cli", "generate", "--model", "tiny", "--steps", "4",
         "--output", str(video), "--json", str(record)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok (wanbench engine: wanbench ")  # which engine ran, said where the user looks
    frames = iio.imread(video)
    assert frames.shape == (9, 64, 96, 3)
    result = json.loads(record.read_text())
    assert result["schema_version"] == 1 and result["status"] == "ok"
    p = result["phases"]
    assert len(p["step_s"]) == 4 and all(s > 0 for s in p["step_s"])
    assert sum(p["step_s"]) <= p["denoise_s"] * 1.05
    assert p["total_s"] == pytest.approx(sum(p[k] for k in PHASES) + p["other_s"], abs=1e-9)
    assert 0 <= p["other_s"] < 0.1 * p["total_s"] + 0.5
    assert any("random weights" in n for n in result["notes"])
    assert {"torch", "diffusers", "hostname", "git", "gpu_count"} <= result["env"].keys()


def test_npy_and_gif_outputs_hold_the_same_frames(tmp_path):
    args = ["generate", "--model", "tiny", "--steps", "2", "--device", "cpu"]
    assert main([*args, "--output", str(tmp_path / "f.npy")]) == 0
    assert main([*args, "--output", str(tmp_path / "f.gif")]) == 0
    frames = np.load(tmp_path / "f.npy")
    assert frames.dtype == np.float32 and frames.shape == (9, 64, 96, 3)
    assert frames.min() >= 0.0 and frames.max() <= 1.0
    gif = np.asarray(iio.imread(tmp_path / "f.gif"))[..., :3]
    assert gif.shape == (9, 64, 96, 3)
    # GIF quantises colours to a palette; the frames must still be the same pictures.
    assert np.abs(gif / 255.0 - frames).mean() < 0.08


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "100*64"], "multiples of 16"),
        (["--size", "big"], "WIDTH\\*HEIGHT"),
        (["--frames", "10"], "4n\\+1"),
        (["--steps", "0"], "use 1 to 10000 denoising steps"),
        (["--model", "nope"], "unknown model preset 'nope'"),
        (["--device", "cuda"], "no CUDA GPU: use --device cpu"),
        (["--weights", "/no/such/folder"], "no such folder"),
        (["--guidance", "a,b"], "HIGH,LOW"),
        (["--output", "x.avi"], ".mp4, .gif or .npy"),
        (["--attention", "magic"], "--attention"),
        (["--boundary", "2"], "between 0 and 1"),
        (["--guidance", "nan"], "bad --guidance nan: use a finite number"),
        (["--guidance", "4,inf"], "bad --guidance inf: use a finite number"),
        (["--threads", "-1"], "bad --threads -1"),
        (["--guidance", "-1"], "a scale below 0 steers away from the prompt"),
        (["--json", "/proc/run.json"], "--json /proc/run.json: cannot write there"),
        (["--save-latents", "/proc/x.safetensors"], "cannot write there"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    assert main(["generate", "--model", "tiny", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("wanbench: error:")
    assert "Traceback" not in err
    import re

    assert re.search(message, err), err


def test_unofficial_size_runs_with_a_recorded_warning(tmp_path):
    assert main(["generate", "--model", "tiny", "--steps", "1", "--size", "64*64", "--json",
                 str(tmp_path / "r.json")]) == 0
    notes = json.loads((tmp_path / "r.json").read_text())["notes"]
    assert any("not an official tiny size" in n for n in notes)


def test_sampling_flags_reach_the_config(tmp_path):
    assert main(["generate", "--model", "tiny", "--steps", "3", "--guidance", "5", "--shift", "3",
                 "--negative-prompt", "", "--boundary", "0.9", "--json", str(tmp_path / "r.json")]) == 0
    cfg = json.loads((tmp_path / "r.json").read_text())["config"]
    assert (cfg["guidance_high"], cfg["guidance_low"], cfg["shift"], cfg["negative_prompt"], cfg["boundary"]) == (
        5.0, 5.0, 3.0, "", 0.9)


@pytest.mark.parametrize(("flags", "device", "compiled"), [
    ([], "cuda", True),  # measured faster on H200: on by default
    ([], "cpu", False),
    (["--no-compile"], "cuda", False),
    (["--offload", "group"], "cuda", False),  # not measured: eager unless asked
    (["--gpus", "2", "--fsdp", "dit"], "cuda", False),
    (["--gpus", "2", "--ulysses", "2"], "cuda", True),
    (["--fp8", "linear"], "cuda", True),  # torchao's activation casts fuse only compiled
    (["--fp8", "linear", "--no-compile"], "cuda", False),
    (["--gpus", "2", "--ring", "2"], "cuda:0", False),
])
def test_compile_is_on_by_default_only_where_measured_faster(flags, device, compiled):
    from wanbench.cli import config_from_args

    args = build_parser().parse_args(["generate", "--device", device, *flags])
    assert config_from_args(args).compile is compiled


def test_vae_pipeline_is_the_default_and_old_results_keep_what_they_ran():
    from wanbench.cli import config_from_args
    from wanbench.config import RunConfig

    parse = build_parser().parse_args
    assert config_from_args(parse(["generate", "--gpus", "2"])).vae_pipeline
    assert not config_from_args(parse(["generate", "--gpus", "2", "--no-vae-pipeline"])).vae_pipeline
    recorded = RunConfig().to_dict()
    del recorded["vae_pipeline"]  # written before the field existed: those runs decoded on one rank
    assert RunConfig.from_dict(recorded).vae_pipeline is False


def test_cli_flags_are_frozen():
    """Changing the interface must be a visible decision: update this list with it."""
    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    generate_flags = sorted(o for a in verbs["generate"]._actions for o in a.option_strings)
    assert generate_flags == sorted([
        "-h", "--help", "--model", "--weights", "--size", "--frames", "--steps", "--seed", "--prompt",
        "--negative-prompt", "--guidance", "--shift", "--boundary", "--dtype", "--vae-dtype", "--device", "--threads",
        "--attention", "--compile", "--no-compile", "--vae-pipeline", "--no-vae-pipeline", "--cache",
        "--fp8", "--output", "--json",
        "--save-latents", "--tag", "--engine", "--convert-model-dtype", "--init-on-cpu", "--no-init-on-cpu",
        "--official-code",
        "--gpus", "--strategy", "--cfg-parallel", "--ulysses", "--ulysses-exchange", "--ring",
        "--fsdp", "--t5-cpu",
        "--offload", "--max-gpu-memory", "--nnodes", "--node-rank", "--master-addr",
        "--master-port", "--timeout",
    ])


def test_mp4_output_without_a_writer_is_refused_before_generating(capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "imageio_ffmpeg" else real(
        name, *a))
    assert main(["generate", "--model", "tiny", "--steps", "1", "--output", "x.mp4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install imageio-ffmpeg" in err


def test_env_prints_the_capture(capsys, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_MAX_AUTOTUNE", "1")
    monkeypatch.setenv("NCCL_MAX_NCHANNELS", "32")
    monkeypatch.setenv("WANBENCH_UNRELATED", "x")
    monkeypatch.setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # torchrun sets it in every worker
    assert main(["env"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["gpu_count"] == 0 and env["torch"]
    # A process-wide tuning variable changes the numbers, so the record names it; GPU communication's only on a GPU.
    assert env["tuning_env"]["TORCHINDUCTOR_MAX_AUTOTUNE"] == "1" and "WANBENCH_UNRELATED" not in env["tuning_env"]
    assert "NCCL_MAX_NCHANNELS" not in env["tuning_env"]
    assert "TORCH_NCCL_ASYNC_ERROR_HANDLING" not in env["tuning_env"]


def test_oom_is_recorded_and_exits_2_with_the_fix(tmp_path, capsys, monkeypatch):
    import torch

    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr("wanbench.engine.generate.denoise", boom)
    assert main(["generate", "--model", "tiny", "--steps", "2", "--json", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wanbench: error: out of device memory during denoise") and "--offload" in err
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["status"] == "oom"
    # What was measured before the failure is kept.
    assert result["phases"]["load_s"] > 0 and result["phases"]["text_encode_s"] > 0


def test_revision_stamp_wins_over_a_stale_checkout(monkeypatch):
    from wanbench.measure.env import git_revision

    monkeypatch.setenv("WANBENCH_GIT_COMMIT", "c0ffee")
    monkeypatch.setenv("WANBENCH_GIT_DIRTY", "0")
    assert git_revision() == {"commit": "c0ffee", "dirty": False}
    monkeypatch.delenv("WANBENCH_GIT_COMMIT")
    assert git_revision()["commit"] != "c0ffee"


def _no_loading(monkeypatch):
    """Make any attempt to load a model fail the test: a refusal must come before loading."""
    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the mistake was refused")

    monkeypatch.setattr("wanbench.engine.generate.build_components", loaded)


def test_json_naming_a_folder_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    _no_loading(monkeypatch)
    assert main(["generate", "--model", "tiny", "--json", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--json {tmp_path} is a folder: give a file name" in err[0]
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["generate", "--model", "tiny", "--output", str(blocker / "v.npy")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    for flag, name, suffix in (("--json", "suite.toml", ".json"), ("--save-latents", "v.mp4", ".safetensors")):
        assert main(["generate", "--model", "tiny", flag, str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"give a path ending in {suffix}" in err[0], err


def test_a14b_on_a_cpu_that_cannot_hold_it_is_refused_up_front(tmp_path, capsys, monkeypatch):
    import psutil

    _no_loading(monkeypatch)
    small = psutil.virtual_memory()._replace(total=24 * 10**9)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: small)
    assert main(["generate", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a14b needs at least 69 GB of memory for its weights, but this machine has 24 GB" in err[0]
    assert "--model tiny" in err[0]
    monkeypatch.setattr("wanbench.bench.suite.gpu_count", lambda: 0)
    monkeypatch.setattr("wanbench.models.footprint.runs_on_cpu", lambda config: True)
    assert main(["bench", "--preset", "seed", "--out", str(tmp_path / "seed")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # the seed preset's 4 configurations (3 more after the first) when the official code is installed, else 2
    more = 3 if importlib.util.find_spec("wan") else 1
    assert len(err) == 1 and "needs at least 69 GB" in err[0] and f"(and {more} more configuration(s)" in err[0]
    assert not (tmp_path / "seed").exists()


def test_mlperf_without_loadgen_is_refused_before_loading(capsys, monkeypatch):
    import importlib.util

    _no_loading(monkeypatch)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlperf_loadgen" else real(
        name, *a))
    assert main(["mlperf", "--model", "tiny", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install mlcommons-loadgen" in err[0]


def test_nan_output_is_invalid_not_ok(tmp_path, capsys, monkeypatch):
    import torch

    from wanbench.engine import generate as engine

    real = engine.denoise
    monkeypatch.setattr(engine, "denoise", lambda *a, **k: real(*a, **k) * torch.nan)
    assert main(["generate", "--model", "tiny", "--steps", "2", "--json", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the final latents hold" in err[0] and "NaN or Inf" in err[0]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["status"] == "invalid" and result["phases"]["denoise_s"] > 0


def test_guidance_is_decided_per_expert_and_recorded(tmp_path):
    from safetensors.torch import load_file

    def run(guidance: str) -> tuple[dict, object]:
        record, latents = tmp_path / f"{guidance}.json", tmp_path / f"{guidance}.safetensors"
        assert main(["generate", "--model", "tiny", "--steps", "4", "--guidance", guidance, "--json", str(record),
                     "--save-latents", str(latents)]) == 0
        return json.loads(record.read_text()), load_file(latents)["latents"]

    # A high-noise scale of 1 must not drop guidance from the low-noise steps (diffusers' WanPipeline does).
    mixed, mixed_latents = run("1,4")
    steps = mixed["steps"]
    assert {s["expert"] for s in steps} == {0, 1}
    assert all(s["guided"] == (s["expert"] == 1) for s in steps)
    assert all(s["guidance"] == (4.0 if s["expert"] == 1 else 1.0) for s in steps)
    unguided, unguided_latents = run("1,1")
    assert not any(s["guided"] for s in unguided["steps"])
    assert (mixed_latents - unguided_latents).abs().max() > 1e-4
    guided = sum(s["guided"] for s in steps)
    assert mixed["flops"]["denoise"] == pytest.approx((len(steps) + guided) * mixed["flops"]["forward"])


def test_a_refusal_worded_for_flags_is_reworded_for_a_suite():
    from wanbench.settings import in_suite_terms

    assert in_suite_terms("drop --no-compile or --max-gpu-memory; with --ulysses-exchange") == (
        "drop compile = false or max_gpu_memory_gb; with ulysses_exchange")
    assert in_suite_terms("give a larger --timeout or --warmup") == "give a larger --timeout or --warmup"
