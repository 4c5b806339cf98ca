"""Stock diffusers against wanbench on the same random weights and settings, in one process.

  --part forward: one expert's DiT forward (batch 1) for: stock eager, stock compiled
      (compile_repeated_blocks, fullgraph), wanbench eager (fused QKV), wanbench compiled
      (fused QKV + regional compile), and, where FlashAttention 4 is installed, wanbench compiled with
      its self-attention kernel (--attention fa4, which --attention auto picks where it times faster),
      each with its relative error against stock eager on the same input.
  --part e2e: stock WanPipeline.__call__ against wanbench (open_session + run_once, --compile)
      end to end, `--steps` steps, after a warm-up; load and compile reported apart.
  --part all (default): both, in that order, into benchmarks/results/speed-<gpu>-1gpu.json with every key of
      the comparison (stock_forward_s, wanbench_forward_s, stock_e2e_s, wanbench_e2e_s, ratio_e2e, mfu, ...).
  --merge FORWARD_JSON E2E_JSON: one such record from a forward run and an e2e run made apart (e.g. side by
      side on two GPUs of one machine); no timing, the figures are copied with both commands.
Writes benchmarks/results/speed-<gpu>-1gpu[-part].json (or --out). Times: CUDA-synchronised,
warm-up first, median of --repeats with min/max. Example (one H200):
  PYTHONPATH=src python benchmarks/speed.py --part forward --out $OUT/speed-forward.json
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
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


def forward_summary(part: dict, forward_flops: float, peak: float) -> dict:
    # what wanbench runs by default: --attention auto takes FA4 where installed and faster
    fa4 = part.get("wanbench_compiled_fa4", {})
    variant = "wanbench_compiled_fa4" if "forward_s" in fa4 else "wanbench_compiled"
    forward_s = part[variant]["forward_s"]["median"]
    return {"stock_forward_s": part["stock_eager"]["forward_s"]["median"], "wanbench_forward_variant": variant,
            "wanbench_forward_s": forward_s, "mfu_forward": forward_flops / forward_s / 1e12 / peak}


def e2e_summary(part: dict, denoise_flops: float, steps: int, peak: float) -> dict:
    denoise_s = part["wanbench"]["step_s"]["median"] * steps
    return {"stock_e2e_s": part["stock"]["generation_s"]["median"],
            "wanbench_e2e_s": part["wanbench"]["generation_s"]["median"], "ratio_e2e": part["ratio_e2e"],
            "wanbench_step_s": part["wanbench"]["step_s"]["median"],
            "mfu_denoise": denoise_flops / denoise_s / 1e12 / peak}


def merge(paths: list[str], out_path: Path) -> dict:
    """One record from a forward run and an e2e run of this script (e.g. made side by side on two GPUs)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    by_part = {name: r for r in parts for name in ("forward", "e2e") if name in r}
    if set(by_part) != {"forward", "e2e"} or len(parts) != 2:
        raise SystemExit("--merge takes one forward JSON and one e2e JSON written by this script")
    fwd, e2e = by_part["forward"], by_part["e2e"]
    for key in ("size", "frames", "model", "weights", "dtype"):
        if fwd["settings"][key] != e2e["settings"][key]:
            raise SystemExit(f"--merge: the two runs differ in {key}: {fwd['settings'][key]} / {e2e['settings'][key]}")
    if fwd["gpu"] != e2e["gpu"]:
        raise SystemExit(f"--merge: the two runs ran on different GPUs: {fwd['gpu']} / {e2e['gpu']}")
    keys = ("stock_forward_s", "wanbench_forward_variant", "wanbench_forward_s", "mfu_forward", "stock_e2e_s",
            "wanbench_e2e_s", "ratio_e2e", "wanbench_step_s", "mfu_denoise")
    record = {"command": " ".join(sys.argv), "merged_from": {"forward": fwd["command"], "e2e": e2e["command"]},
              "gpu": fwd["gpu"], "n_gpus": 1, "settings": e2e["settings"],
              **{k: r[k] for r in (fwd, e2e) for k in keys if k in r},
              "mfu": e2e.get("mfu_denoise", e2e.get("mfu")), "env": {"forward": fwd["env"], "e2e": e2e["env"]},
              "forward": fwd["forward"], "e2e": e2e["e2e"]}
    record.setdefault("mfu_forward", fwd.get("mfu"))  # records written before mfu_forward existed
    out_path.write_text(json.dumps(record, indent=2, ensure_ascii=False))
    return record


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["forward", "e2e", "all"], default="all")
    parser.add_argument("--size", default="480*832")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    parser.add_argument("--merge", nargs=2, metavar=("FORWARD_JSON", "E2E_JSON"),
                        help="combine a forward run and an e2e run of this script into one record (no timing)")
    args = parser.parse_args()
    if args.merge:
        record = merge(args.merge, Path(args.out or "speed.json"))
        print(json.dumps({k: v for k, v in record.items() if k not in ("env", "forward", "e2e")}, indent=1))
        return 0
    width, height = parse_size(args.size)
    config = config_for_preset("a14b", width=width, height=height, frames=args.frames, steps=args.steps,
                               device="cuda")
    env = capture_environment()
    gpu = env["gpus"][0]["name"].replace("NVIDIA ", "").replace(" ", "-").lower()
    suffix = "" if args.part == "all" else f"-{args.part}"
    out_path = Path(args.out or f"benchmarks/results/speed-{gpu}-1gpu{suffix}.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tokens = video_tokens(config.preset, width, height, args.frames)
    forward_flops = dit_forward_flops(config.preset, tokens).total
    peak = peak_tflops(env["gpus"][0]["name"])
    record = {"command": " ".join(sys.argv), "gpu": env["gpus"][0]["name"], "n_gpus": 1, "env": env,
              "settings": {"model": "a14b", "weights": "random", "size": args.size, "frames": args.frames,
                           "steps": args.steps, "dtype": "bfloat16", "vae_dtype": "float32",
                           "repeats": args.repeats, "tokens": tokens},
              "forward_flops": forward_flops, "peak_tflops_datasheet": peak}

    def saver(name: str):
        def save(part: dict) -> None:
            record[name] = part
            out_path.write_text(json.dumps(record, indent=2, ensure_ascii=False))
        return save

    if args.part in ("forward", "all"):
        record.update(forward_summary(forward_part(config, args.repeats, saver("forward")), forward_flops, peak))
        record["mfu"] = record["mfu_forward"]
        torch._dynamo.reset()  # compiled code holds the forward part's experts; the e2e part needs the memory
        gc.collect()
        torch.cuda.empty_cache()
    if args.part in ("e2e", "all"):
        denoise_flops = run_flops(config.preset, width, height, args.frames, args.steps, cfg=True).denoise
        part = e2e_part(config, args.repeats, args.steps, saver("e2e"))
        record.update(e2e_summary(part, denoise_flops, args.steps, peak))
        record["mfu"] = record["mfu_denoise"]
    out_path.write_text(json.dumps(record, indent=2, ensure_ascii=False))
    print(json.dumps({k: v for k, v in record.items() if k not in ("env", "forward", "e2e")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
