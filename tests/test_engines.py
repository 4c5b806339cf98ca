"""The official and diffusers engines on CPU at tiny dimensions: end to end through their own code, held to each
other and to wanbench's engine, in a suite with an engine axis, and refused cleanly where they cannot run."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from checkpoints import write_official_folder
from wanbench.cli import main
from wanbench.config import config_for_preset

# Not importorskip: `import wan` runs its __init__, which imports every pipeline; wanbench imports it bare.
if importlib.util.find_spec("wan") is None:
    pytest.skip("the official code: pip install --no-deps wan22==2.2.11", allow_module_level=True)


def tiny(**overrides):
    return config_for_preset("tiny", device="cpu", **overrides)


@pytest.fixture(scope="module")
def official_folder(tmp_path_factory):
    from wanbench.models import build_components

    components = build_components(tiny().preset, "random", torch.device("cpu"), torch.float32, torch.float32,
                                  12.0, seed=3)
    return write_official_folder(components, tmp_path_factory.mktemp("ckpt") / "official")


def test_the_official_engine_runs_its_own_generate_with_random_weights(tmp_path):
    out = tmp_path / "run.json"
    assert main(["generate", "--model", "tiny", "--engine", "official", "--device", "cpu", "--steps", "4",
                 "--output", str(tmp_path / "v.npy"), "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["status"] == "ok" and record["config"]["engine"] == "official"
    assert record["env"]["engine"] == {"name": "official", "version": "wan22 2.2.11"}
    phases = record["phases"]
    assert len(phases["step_s"]) == 4 and all(s > 0 for s in phases["step_s"])
    for name in ("load_s", "text_encode_s", "denoise_s", "vae_decode_s"):
        assert phases[name] > 0, name
    assert phases["other_s"] >= 0 and abs(sum(phases["step_s"]) - phases["denoise_s"]) < 0.05
    # 4 steps at shift 12: three above the boundary (high-noise expert), one below; both branches every step
    assert [s["expert"] for s in record["steps"]] == [0, 0, 0, 1]
    assert all(s["guided"] for s in record["steps"])
    assert any("lightning=False" in n for n in record["notes"])
    assert any("official modules' own constructors" in n for n in record["notes"])
    frames = np.load(tmp_path / "v.npy")
    assert frames.shape == (9, 64, 96, 3) and frames.min() >= 0.0 and frames.max() <= 1.0


def _official_schedule(scheduler):
    """wanbench's scheduler on the official FlowUniPC schedule: its sigmas (from 0.99992, not 1.0) and integer
    timesteps; the solver itself is diffusers' UniPC as before."""
    from wan.utils.fm_solvers_unipc import FlowUniPCMultistepScheduler

    reference = FlowUniPCMultistepScheduler(num_train_timesteps=1000, shift=1, use_dynamic_shifting=False)

    class OfficialSchedule(type(scheduler)):
        def set_timesteps(self, num_inference_steps=None, device=None, **_):
            super().set_timesteps(device=device, sigmas=np.linspace(
                reference.sigma_max, reference.sigma_min, num_inference_steps + 1)[:-1])
            self.timesteps = (self.sigmas[:-1] * 1000).to(torch.int64).to(device)

    return OfficialSchedule.from_config(scheduler.config)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_official_and_wanbench_engines_agree_on_an_official_checkpoint(official_folder):
    """The cross-check: one tiny official folder, loaded by the official code and by wanbench's converters. Text
    encoder and each expert agree to float32 rounding; so does the whole generation on the same schedule. On their
    own schedules (diffusers' UniPC starts at sigma 1.0, the official FlowUniPC at 0.99992) the final latents
    differ by a few percent after 6 steps, which is that schedule difference alone."""
    from wanbench.engine.generate import open_session, run_once
    from wanbench.engine.text import encode_prompts

    official = open_session(tiny(engine="official", weights=str(official_folder), steps=6))
    ours = open_session(tiny(weights=str(official_folder), steps=6))
    assert official.load_failure is None and ours.load_failure is None
    t2v, components = official.components.t2v, ours.components
    prompt = ours.config.prompt
    context = t2v.text_encoder([prompt], torch.device("cpu"))[0]
    embeds = encode_prompts(components.tokenizer, components.text_encoder, [prompt], 32, torch.device("cpu"),
                            torch.float32)[0]
    assert (embeds[: context.shape[0]] - context).abs().max() < 1e-5
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(16, 3, 8, 12, generator=gen)
    with torch.no_grad():
        for theirs, mine in ((t2v.high_noise_model, components.transformer),
                             (t2v.low_noise_model, components.transformer_2)):
            a = theirs([latents], t=torch.tensor([900]), context=[context], seq_len=72)[0]
            b = mine(hidden_states=latents[None], timestep=torch.tensor([900]), encoder_hidden_states=embeds[None],
                     return_dict=False)[0][0]
            assert _relative(a, b) < 1e-5

    reference = run_once(official)
    own_schedule = run_once(ours)
    ours.components.scheduler = _official_schedule(ours.components.scheduler)
    same_schedule = run_once(ours)
    for generation in (reference, own_schedule, same_schedule):
        assert generation.result.status == "ok", generation.result.error
    assert _relative(same_schedule.latents, reference.latents) < 1e-4
    assert 1e-3 < _relative(own_schedule.latents, reference.latents) < 0.1
    assert [s["timestep"] for s in same_schedule.result.steps] == [s["timestep"] for s in reference.result.steps]


def test_the_diffusers_engine_is_stock_wanpipeline_and_matches_wanbench():
    from wanbench.engine.generate import generate

    base = generate(tiny(steps=4))
    for offload in ("none", "model", "group"):
        config = tiny(engine="diffusers", steps=4)
        config = dataclasses.replace(config, parallel=dataclasses.replace(config.parallel, offload=offload))
        run = generate(config)
        assert run.result.status == "ok", run.result.error
        assert run.result.env["engine"]["version"].startswith("diffusers ")
        assert len(run.result.phases["step_s"]) == 4 and run.result.phases["denoise_s"] > 0
        assert run.result.phases["text_encode_s"] > 0 and run.result.phases["vae_decode_s"] > 0
        assert _relative(run.latents, base.latents) < 1e-5, offload
        assert np.abs(run.frames - base.frames).max() < 1e-4


def test_a_suite_with_an_engine_axis_reports_the_engine_and_the_speedup_over_official(tmp_path):
    suite = tmp_path / "engines.toml"
    suite.write_text('name = "engines"\nwarmup = 1\nrepeats = 2\n[fixed]\nmodel = "tiny"\ndevice = "cpu"\n'
                     'threads = 1\nsteps = 4\n[axes]\nengine = ["wanbench", "official", "diffusers"]\n')
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "wanbench.cli", "bench", str(suite), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (out / "report" / "report.md").read_text()
    summary = md.split("## Executive summary")[1].split("\n## ")[0]
    header = next(line for line in summary.splitlines() if line.startswith("| Configuration"))
    assert "| Engine |" in header and "Speedup over official" in header
    rows = {line.split(" | ")[1]: line for line in summary.splitlines()
            if line.startswith("| ") and not line.startswith(("| Configuration", "|---"))}
    assert set(rows) == {"wanbench", "official", "diffusers"}
    assert re.search(r"\| \d+\.\d\dx", rows["wanbench"]) and re.search(r"\| \d+\.\d\dx", rows["diffusers"])
    assert "Engines that ran:" in md and "wan22 2.2.11" in md
    summary_rows = json.loads((out / "report" / "summary.json").read_text())["rows"]
    speedups = {r["settings"]["engine"]: r["official_speedup"] for r in summary_rows}
    assert speedups["official"] is None and speedups["wanbench"] > 0 and speedups["diffusers"] > 0
    official = next(r for r in summary_rows if r["settings"]["engine"] == "official")
    wanbench = next(r for r in summary_rows if r["settings"]["engine"] == "wanbench")
    assert speedups["wanbench"] == pytest.approx(official["generation"]["median"] / wanbench["generation"]["median"])
    assert official["official_label"] == official["label"] == wanbench["official_label"]  # the baseline names itself
    # the verbs after bench work on what it wrote: compare the folder with itself
    same = subprocess.run([sys.executable, "-m", "wanbench.cli", "compare", str(out), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert same.returncode == 0, same.stdout + same.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--engine", "official", "--compile"], "--compile is a wanbench engine option"),
    (["--engine", "official", "--fp8", "linear", "--device", "cpu"], "--fp8 is a wanbench engine option"),
    (["--engine", "official", "--vae-dtype", "bfloat16"], "VAE in float32"),
    (["--engine", "diffusers", "--gpus", "2", "--ring", "2"], "use --ulysses N with --engine diffusers"),
    (["--engine", "diffusers", "--gpus", "2", "--ulysses", "2", "--offload", "model"], "drop it (--ulysses N"),
    (["--no-init-on-cpu"], "--no-init-on-cpu is an option of the official engine"),
    (["--engine", "official", "--offload", "group"], "use --offload model"),
    (["--engine", "official", "--gpus", "2", "--ring", "2"], "no ring attention"),
    (["--engine", "official", "--gpus", "2", "--device", "cpu"], "need CUDA"),
    (["--engine", "official", "--dtype", "bfloat16", "--device", "cpu"], "--dtype float32 on a CPU"),
    (["--engine", "diffusers", "--t5-cpu"], "not an option of stock diffusers"),
    (["--engine", "diffusers", "--cfg-parallel", "--gpus", "2"], "--cfg-parallel is a wanbench engine option"),
    (["--convert-model-dtype"], "an option of the official engine"),
    (["--engine", "official", "--official-code", "/nonexistent"], "no wan/text2video.py there"),
    (["--engine", "vllm"], "invalid choice"),
])
def test_what_an_engine_cannot_run_is_one_line_and_exit_2(capsys, args, message):
    assert main(["generate", "--model", "tiny", "--steps", "1", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("wanbench: error:") and "Traceback" not in err
    assert message in err, err


def test_the_official_engine_refuses_other_models_and_diffusers_folders(capsys, tmp_path):
    assert main(["generate", "--model", "ti2v-5b", "--engine", "official"]) == 2
    assert "runs the official WanT2V (T2V-A14B)" in capsys.readouterr().err
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    assert main(["generate", "--model", "tiny", "--engine", "official", "--device", "cpu", "--weights",
                 str(folder)]) == 2
    assert "is a diffusers folder" in capsys.readouterr().err


def test_the_official_engine_without_the_official_code_names_the_install(monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wan" else find_spec(name, *a))
    assert main(["generate", "--model", "tiny", "--engine", "official"]) == 2
    assert "pip install --no-deps wan22==2.2.11" in capsys.readouterr().err


def test_a_checkout_given_with_official_code_is_used_and_recorded(tmp_path):
    """A copy of the installed package laid out as a Wan2.2 checkout: imported from there (in a fresh process,
    since this one already holds the package) and named in the record."""
    import shutil

    from wanbench.engines.official_import import import_official

    checkout = tmp_path / "Wan2.2"
    shutil.copytree(Path(import_official().__file__).parent, checkout / "wan")
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "wanbench.cli", "generate", "--model", "tiny", "--engine", "official",
                           "--device", "cpu", "--steps", "2", "--official-code", str(checkout), "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["env"]["engine"]["version"] == f"checkout {checkout}"
    assert record["config"]["official_code"] == str(checkout)


def test_the_diffusers_engine_runs_diffusers_context_parallelism_over_two_processes(tmp_path):
    """`--engine diffusers --gpus 2 --ulysses 2`: stock WanPipeline under diffusers' own Ulysses on two gloo
    processes gives the single-process latents, and the record holds both ranks."""
    from safetensors.torch import load_file

    from wanbench.engine.generate import generate

    base = generate(tiny(steps=3)).latents
    latents, record = tmp_path / "l.safetensors", tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "wanbench.cli", "generate", "--model", "tiny", "--steps", "3",
                           "--device", "cpu", "--engine", "diffusers", "--gpus", "2", "--ulysses", "2",
                           "--save-latents", str(latents), "--json", str(record)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _relative(load_file(latents)["latents"], base) < 1e-5
    result = json.loads(record.read_text())
    assert len(result["memory"]["ranks"]) == 2 and result["config"]["engine"] == "diffusers"
    assert "diffusers: context parallelism (ulysses 2, ring 1)" in result["notes"]
