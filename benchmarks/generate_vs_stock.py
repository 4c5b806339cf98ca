"""wanbench generate vs stock diffusers WanPipeline, same random weights and settings, one process.

Usage (one H200):
  PYTHONPATH=src python benchmarks/generate_vs_stock.py --model a14b --size 480*832 --frames 81 \
      --steps 10 --repeats 2 --out benchmarks/results/generate-h200
Each system gets a 1-step warm-up call first (not counted), then --repeats counted runs. Stock is
timed around WanPipeline.__call__ (text encode + denoise + decode + postprocess) with device syncs;
its steps with CUDA events from callback_on_step_end. wanbench's figures are its own RunResult phases.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from wanbench.analysis.stats import summarize
from wanbench.engine.generate import generate
from wanbench.measure.env import capture_environment
from wanbench.models import build_components
from wanbench.models.components import stock_pipeline
from wanbench.models.dtypes import torch_dtype
from wanbench.settings import config_from_settings


def spread(values: list[float]) -> dict[str, float]:
    return summarize(values).to_dict()


def run_wanbench(config, repeats: int, out: Path) -> list[dict]:
    warm = generate(dataclasses.replace(config, steps=1))
    if warm.result.status != "ok":
        raise SystemExit(f"wanbench warm-up failed: {warm.result.error}")
    results = []
    for i in range(repeats):
        gen = generate(config)
        if gen.result.status != "ok":
            raise SystemExit(f"wanbench run failed: {gen.result.error}")
        gen.result.write_json(out / f"wanbench-run{i}.json")
        results.append(gen.result.to_dict())
        del gen
        torch.cuda.empty_cache()
    return results


def run_stock(config, repeats: int) -> dict:
    device = torch.device("cuda")
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    components = build_components(
        config.preset, "random", device, torch_dtype(config.dtype), torch_dtype(config.vae_dtype),
        config.shift, config.seed,
    )
    torch.cuda.synchronize()
    load_s = time.perf_counter() - start
    pipe = stock_pipeline(components, config.shift, config.boundary)
    pipe.set_progress_bar_config(disable=True)
    events: list[torch.cuda.Event] = []

    def on_step_end(pipeline, step, timestep, kwargs):
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        events.append(event)
        return kwargs

    def call(steps: int):
        return pipe(
            prompt=config.prompt, negative_prompt=config.negative_prompt, height=config.height,
            width=config.width, num_frames=config.frames, num_inference_steps=steps,
            guidance_scale=config.guidance_high, guidance_scale_2=config.guidance_low,
            max_sequence_length=config.preset.text_encoder.text_len,
            generator=torch.Generator("cpu").manual_seed(config.seed), output_type="np",
            callback_on_step_end=on_step_end,
        )

    call(1)
    e2e, step_s = [], []
    for _ in range(repeats):
        events.clear()
        first = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        first.record()
        call(config.steps)
        torch.cuda.synchronize()
        e2e.append(time.perf_counter() - t0)
        marks = [first, *events]
        step_s.append([a.elapsed_time(b) / 1e3 for a, b in itertools.pairwise(marks)])
    peak = torch.cuda.max_memory_allocated() / 1e9
    return {"load_s": load_s, "e2e_s": e2e, "step_s": step_s, "peak_allocated_gb": peak}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="a14b")
    parser.add_argument("--size", default="480*832")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/generate-h200")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = config_from_settings({"model": args.model, "size": args.size, "frames": args.frames,
                                   "steps": args.steps, "device": "cuda"})
    ours = run_wanbench(config, args.repeats, out)
    stock = run_stock(config, args.repeats)
    gen_s = [r["phases"]["text_encode_s"] + r["phases"]["denoise_s"] + r["phases"]["vae_decode_s"] for r in ours]
    our_steps = [s for r in ours for s in r["phases"]["step_s"]]
    stock_steps = [s for run in stock["step_s"] for s in run]
    summary = {
        "command": " ".join(sys.argv),
        "env": capture_environment(),
        "settings": {"model": args.model, "size": args.size, "frames": args.frames, "steps": args.steps,
                     "repeats": args.repeats, "weights": "random", "dtype": config.dtype,
                     "vae_dtype": config.vae_dtype},
        "wanbench": {
            "phases_median": {k: statistics.median(r["phases"][k] for r in ours) for k in
                              ("load_s", "text_encode_s", "denoise_s", "vae_decode_s", "save_s", "total_s",
                               "other_s")},
            "generation_s": spread(gen_s),
            "step_s": spread(our_steps),
            "peak_allocated_gb": max(r["memory"]["ranks"][0]["max_allocated_gb"] for r in ours),
            "notes": ours[0]["notes"],
        },
        "stock_wan_pipeline": {
            "load_s": stock["load_s"], "generation_s": spread(stock["e2e_s"]), "step_s": spread(stock_steps),
            "peak_allocated_gb": stock["peak_allocated_gb"],
        },
    }
    summary["ratio_generation"] = summary["stock_wan_pipeline"]["generation_s"]["median"] / spread(gen_s)["median"]
    summary["ratio_step"] = spread(stock_steps)["median"] / spread(our_steps)["median"]
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    print(json.dumps({k: summary[k] for k in ("wanbench", "stock_wan_pipeline", "ratio_generation",
                                             "ratio_step")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
