"""Stock diffusers against wanbench on the same random weights and settings, in one process.

  --part forward: one expert's DiT forward (batch 1) for: stock eager, stock compiled
      (compile_repeated_blocks, fullgraph), wanbench eager (fused QKV), wanbench compiled
      (fused QKV + regional compile), and, where FlashAttention 4 is installed, wanbench compiled with
      its self-attention kernel (--attention fa4, which --attention auto picks where it times faster),
      each with its relative error against stock eager on the same input.
  --part e2e: stock WanPipeline.__call__ against wanbench (open_session + run_once, --compile)
      end to end, `--steps` steps, after a warm-up; load and compile reported apart.
Writes benchmarks/results/speed-<gpu>-<n>gpu[-part].json (or --out). Times: CUDA-synchronised,
warm-up first, median of --repeats with min/max. Example (one H200):
  PYTHONPATH=src python benchmarks/speed.py --part forward --out $OUT/speed-forward.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from wanbench.analysis.flops import dit_forward_flops, run_flops, video_tokens
from wanbench.analysis.peaks import peak_tflops
from wanbench.analysis.stats import summarize
from wanbench.config import config_for_preset, parse_size
from wanbench.engine import flash_cute
from wanbench.engine.fusion import fuse_projections
from wanbench.engine.generate import latent_shape
from wanbench.engine.wan_attention import KernelAttentionProcessor, install
from wanbench.measure.env import capture_environment
from wanbench.models import build_components
from wanbench.models.components import stock_pipeline


def spread(values: list[float]) -> dict[str, float]:
    return summarize(values).to_dict()


def timed(fn, repeats: int) -> tuple[list[float], object]:
    out = None
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times, out


def forward_part(config, repeats: int, save) -> dict:
    device = torch.device("cuda")
    c = build_components(config.preset, "random", device, torch.bfloat16, torch.float32, config.shift, config.seed)
    spec = config.preset.transformer
    gen = torch.Generator(device).manual_seed(0)
    latents = torch.randn(latent_shape(config), generator=gen, device=device, dtype=torch.bfloat16)
    text = torch.randn(1, 512, spec.text_dim, generator=gen, device=device, dtype=torch.bfloat16)
    t = torch.tensor([900], device=device)
    out: dict = {}

    def forward(model):
        with torch.no_grad():
            return model(hidden_states=latents, timestep=t, encoder_hidden_states=text, return_dict=False)[0]

    def measure(name: str, model, reference=None):
        start = time.perf_counter()
        forward(model)
        torch.cuda.synchronize()
        first_s = time.perf_counter() - start
        times, result = timed(lambda: forward(model), repeats)
        entry = {"forward_s": spread(times), "first_call_s": first_s}
        if reference is not None:
            entry["rel_error_vs_stock_eager"] = ((result.float() - reference).norm() / reference.norm()).item()
        out[name] = entry
        save(out)
        print(name, json.dumps(entry), flush=True)
        return result.float()

    # Same weights for both experts' variants: expert 2 gets expert 1's state.
    c.transformer_2.load_state_dict(c.transformer.state_dict())
    ref = measure("stock_eager", c.transformer)
    c.transformer_2.compile_repeated_blocks(fullgraph=True)
    measure("stock_compiled", c.transformer_2, ref)
    fuse_projections(c.transformer)
    measure("wanbench_eager_fused", c.transformer, ref)
    c.transformer.compile_repeated_blocks(fullgraph=True)
    measure("wanbench_compiled", c.transformer, ref)
    if flash_cute.unavailable_reason(device) is None:
        torch._dynamo.reset()
        install(c.transformer, lambda: KernelAttentionProcessor("fa4"))
        c.transformer.compile_repeated_blocks(fullgraph=True)
        measure("wanbench_compiled_fa4", c.transformer, ref)
    else:
        out["wanbench_compiled_fa4"] = {"skipped": flash_cute.unavailable_reason(device)}
    return out


def time_stock(config, repeats: int, steps: int) -> list[float]:
    """Stock WanPipeline.__call__ end to end (its modules are freed when this returns)."""
    c = build_components(config.preset, "random", torch.device("cuda"), torch.bfloat16, torch.float32,
                         config.shift, config.seed)
    pipe = stock_pipeline(c, config.shift, config.boundary)
    pipe.set_progress_bar_config(disable=True)

    def call(n: int):
        return pipe(prompt=config.prompt, negative_prompt=config.negative_prompt, height=config.height,
                    width=config.width, num_frames=config.frames, num_inference_steps=n,
                    guidance_scale=config.guidance_high, guidance_scale_2=config.guidance_low,
                    max_sequence_length=512, generator=torch.Generator("cpu").manual_seed(config.seed),
                    output_type="np")

    call(1)
    times, _ = timed(lambda: call(steps), repeats)
    return times


def e2e_part(config, repeats: int, steps: int, save) -> dict:
    """Stock first, then wanbench, each after a 1-step warm-up; saved after each half."""
    from wanbench.engine.generate import open_session, run_once

    out: dict = {"stock": {"generation_s": spread(time_stock(config, repeats, steps))}}
    save(out)
    torch.cuda.empty_cache()

    session = open_session(dataclasses.replace(config, compile=True))
    if session.load_failure:
        raise SystemExit(session.load_failure[1])
    warm = run_once(session, dataclasses.replace(config, compile=True, steps=1))
    assert warm.result.status == "ok", warm.result.error
    runs = [run_once(session).result for _ in range(repeats)]
    assert all(r.status == "ok" for r in runs), [r.error for r in runs]
    gen_s = [r.phases["text_encode_s"] + r.phases["denoise_s"] + r.phases["vae_decode_s"] for r in runs]
    out["wanbench"] = {
        "load_s": session.load_s, "compile_s": session.compile_s, "generation_s": spread(gen_s),
        "step_s": spread([s for r in runs for s in r.phases["step_s"]]),
        "peak_allocated_gb": max(r.memory["ranks"][0]["max_allocated_gb"] for r in runs), "notes": runs[0].notes,
    }
    out["ratio_e2e"] = out["stock"]["generation_s"]["median"] / out["wanbench"]["generation_s"]["median"]
    save(out)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["forward", "e2e"], required=True)
    parser.add_argument("--size", default="480*832")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    width, height = parse_size(args.size)
    config = config_for_preset("a14b", width=width, height=height, frames=args.frames, steps=args.steps,
                               device="cuda")
    env = capture_environment()
    gpu = env["gpus"][0]["name"].replace("NVIDIA ", "").replace(" ", "-").lower()
    out_path = Path(args.out or f"benchmarks/results/speed-{gpu}-1gpu-{args.part}.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tokens = video_tokens(config.preset, width, height, args.frames)
    forward_flops = dit_forward_flops(config.preset, tokens).total
    record = {"command": " ".join(sys.argv), "gpu": env["gpus"][0]["name"], "n_gpus": 1, "env": env,
              "settings": {"model": "a14b", "weights": "random", "size": args.size, "frames": args.frames,
                           "steps": args.steps, "dtype": "bfloat16", "vae_dtype": "float32",
                           "repeats": args.repeats, "tokens": tokens},
              "forward_flops": forward_flops, "peak_tflops_datasheet": peak_tflops(env["gpus"][0]["name"])}

    def save(part: dict) -> None:
        record[args.part] = part
        out_path.write_text(json.dumps(record, indent=2, ensure_ascii=False))

    if args.part == "forward":
        part = forward_part(config, args.repeats, save)
        record["stock_forward_s"] = part["stock_eager"]["forward_s"]["median"]
        # what wanbench runs by default: --attention auto takes FA4 where installed and faster
        variant = "wanbench_compiled_fa4" if "forward_s" in part["wanbench_compiled_fa4"] else "wanbench_compiled"
        record["wanbench_forward_variant"] = variant
        record["wanbench_forward_s"] = part[variant]["forward_s"]["median"]
        record["mfu"] = forward_flops / record["wanbench_forward_s"] / 1e12 / record["peak_tflops_datasheet"]
    else:
        part = e2e_part(config, args.repeats, args.steps, save)
        record["stock_e2e_s"] = part["stock"]["generation_s"]["median"]
        record["wanbench_e2e_s"] = part["wanbench"]["generation_s"]["median"]
        record["ratio_e2e"] = part["ratio_e2e"]
        flops = run_flops(config.preset, width, height, args.frames, args.steps, cfg=True).denoise
        denoise_s = part["wanbench"]["step_s"]["median"] * args.steps
        record["mfu"] = flops / denoise_s / 1e12 / record["peak_tflops_datasheet"]
    save(part)
    print(json.dumps({k: v for k, v in record.items() if k not in ("env", "forward", "e2e")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
